"""Bounded FMEL output: the per-session byte cap, exports whose memory does not grow."""

from __future__ import annotations

import random
import string
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from fmel_helpers import new_id

from farm.app import create_app
from farm.config import Settings
from farm.fmel.layout import CAPPED_NAME, session_dir
from farm.fmel.recorder import FmelRecorder
from farm.fmel.records import MAX_INDICATOR_LINES, Bar, DataAccess, Indicator
from farm.storage.models import Agent
from farm.users.service import create_user

T0 = datetime(2024, 1, 1, tzinfo=UTC)
MB = 1024 * 1024


def rss_mb() -> float:
    """This process's resident memory now (MiB)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


class PeakRss:
    """Samples the resident memory in a thread; ``growth`` is the peak above the start."""

    def __init__(self) -> None:
        self.start = rss_mb()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.005)

    @property
    def growth(self) -> float:
        return self.peak - self.start


def wide_decision(rec: FmelRecorder, seq: int, rnd: random.Random, names: list[str]) -> None:
    """A decision as wide as the caps allow: long reasoning, every indicator line, many reads."""
    rec.record_decision(
        seq=seq,
        bar_ts=T0 + timedelta(minutes=seq),
        bars=[Bar(symbol="SPY", open=1, high=1, low=1, close=1, volume=1)],
        cash=1.0,
        value=1.0,
        reasoning="".join(rnd.choices(string.ascii_letters, k=4000)),
        confidence=rnd.random(),
        indicators=[
            Indicator(name=names[i % len(names)], line=i % 16, value=rnd.random())
            for i in range(MAX_INDICATOR_LINES)
        ],
        data_accesses=[
            DataAccess(symbol="SPY", field="close", index=-rnd.randrange(10_000))
            for _ in range(1000)
        ],
    )


@pytest.fixture
def big_export(tmp_path: Path) -> Iterator[tuple[TestClient, str, dict[str, str]]]:
    """An app whose one agent holds ~600 wide decisions (~150 MB as JSON Lines)."""
    settings = Settings(home=tmp_path / "farm", backtest_workers=0, data_dir=None)
    rnd = random.Random(8)
    names = ["".join(rnd.choices(string.ascii_letters, k=60)) for _ in range(128)]
    agent_id = new_id()
    for session in range(3):
        with FmelRecorder(settings.fmel_dir, agent_id, f"s{session}", "u", "BACKTEST") as rec:
            for seq in range(200):
                wide_decision(rec, seq, rnd, names)
    with TestClient(create_app(settings)) as client:
        with client.app.state.context.db.transaction() as session:  # type: ignore[attr-defined]
            user, token = create_user(session, "alice")
            session.add(
                Agent(
                    id=agent_id,
                    user_id=user.id,
                    name="wide",
                    strategy_class="Wide",
                    code_sha256="0" * 64,
                    code_bytes=1,
                    artifact_key="agents/x.py",
                )
            )
        yield client, agent_id, {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_an_export_streams_with_bounded_memory(
    big_export: tuple[TestClient, str, dict[str, str]], fmt: str
) -> None:
    client, agent_id, headers = big_export
    client.get(f"/api/fmel/export/{agent_id}", headers=headers, params={"sessionId": "s0"})
    size = 0
    with (
        PeakRss() as memory,
        client.stream(
            "GET", f"/api/fmel/export/{agent_id}", headers=headers, params={"format": fmt}
        ) as response,
    ):
        assert response.status_code == 200
        for chunk in response.iter_bytes():
            size += len(chunk)
    assert size > (10 if fmt == "parquet" else 100) * MB
    # Before batches were bounded by bytes, a JSON Lines export took ~4x its own size.
    assert memory.growth < 250, f"{fmt}: {size / MB:.0f} MiB grew RSS by {memory.growth:.0f} MiB"


def test_a_session_stops_recording_at_its_byte_cap_and_says_so(tmp_path: Path) -> None:
    rnd = random.Random(3)
    names = ["".join(rnd.choices(string.ascii_letters, k=60)) for _ in range(128)]
    cap = 2 * MB
    with FmelRecorder(
        tmp_path, "agent-1", "session-1", "u", "BACKTEST", batch_size=50, max_bytes=cap
    ) as rec:
        for seq in range(300):  # ~60 KB each: ~18 MB uncapped
            wide_decision(rec, seq, rnd, names)
    folder = session_dir(tmp_path, "agent-1", "session-1")
    parts = [p for p in folder.iterdir() if p.suffix == ".parquet"]
    assert parts
    assert sum(p.stat().st_size for p in parts) <= cap
    stored = sum(pq.read_metadata(p).num_rows for p in parts)
    report = msgspec.json.decode((folder / CAPPED_NAME).read_bytes())
    assert report["capBytes"] == cap
    assert report["storedBytes"] == sum(p.stat().st_size for p in parts)
    assert report["dropped"]["decisions"] == 300 - stored > 0
    assert rec.report.capped


def test_an_uncapped_session_has_no_cap_marker(tmp_path: Path) -> None:
    rnd = random.Random(4)
    with FmelRecorder(tmp_path, "agent-1", "session-1", "u", "BACKTEST", max_bytes=MB) as rec:
        wide_decision(rec, 0, rnd, ["sma"])
    assert not rec.report.capped
    assert rec.report.stored_bytes > 0
    assert not (session_dir(tmp_path, "agent-1", "session-1") / CAPPED_NAME).exists()
