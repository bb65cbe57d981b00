"""A replay feed that ended refuses new sessions with the reason, and its next pass (the feed's
process started again, as `farm feed` is while paper workers run on) serves the sessions
started then, in a runtime that saw the previous pass end; those that traded the previous pass
are stopped, saying why."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from paper_support import paper_rig

from farm.config import Settings
from farm.errors import ServiceUnavailable
from farm.papertrading.schemas import PaperStart
from farm.storage.models import MarketFeed
from support import wait_until


@pytest.mark.sandbox
@pytest.mark.timeout(180)
def test_a_new_pass_of_an_ended_replay_serves_the_sessions_started_then(
    settings: Settings, real_bars: Path
) -> None:
    settings = settings.model_copy(
        update={
            "feed": "replay",
            "feed_symbols": ["SPY"],
            "feed_replay_start": date(2024, 12, 2),  # about 85 steps, 13 s a pass
            "feed_interval_s": 0.15,
            "paper_step_timeout_s": 20.0,
            "paper_poll_s": 0.05,
        }
    )
    with paper_rig(settings, real_bars) as rig, rig.running() as runtime:
        service, user, (early, late) = rig.service, rig.user, rig.agents

        def feed() -> tuple[str | None, int]:
            """The replay's state and steps published."""
            with rig.db.transaction() as session:
                row = session.get(MarketFeed, "replay")
                return (row.state, row.steps_published) if row is not None else (None, 0)

        def bars_of(session_id: str) -> int:
            return rig.row(session_id).bars_processed

        first = service.start(user, PaperStart(agent_id=early, symbols=["SPY"])).session_id
        wait_until(lambda: feed()[0] == "ended", 60, "the end of the first pass")
        steps = feed()[1]
        assert bars_of(first) > 3

        with pytest.raises(ServiceUnavailable) as refused:  # no bar would ever come
            service.start(user, PaperStart(agent_id=late, symbols=["SPY"]))
        assert "the live feed (replay) has ended" in refused.value.message
        assert "replays them again" in refused.value.message

        runtime._feed.stop()  # type: ignore[union-attr]  # the feed's process restarts ...
        runtime._feed.start()  # type: ignore[union-attr]  # ... and replays the bars again
        wait_until(lambda: feed()[0] == "running", 30, "the second pass")
        second = service.start(user, PaperStart(agent_id=late, symbols=["SPY"])).session_id
        wait_until(lambda: bars_of(second) >= 3, 60, "bars of the second pass")
        assert feed()[1] > steps  # the step numbers go on
        # The session that traded the first pass would never get a bar again: it is stopped.
        wait_until(lambda: rig.row(first).status == "stopped", 30, "the first session's stop")
        ended = rig.row(first)
        assert ended.failure_reason == "replay_restarted"
        assert "started a new pass" in (ended.failure_message or "")
        assert rig.row(second).status == "running"
