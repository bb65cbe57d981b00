"""Paper trading with everything on object storage: agent files, bars and FMEL on moto's S3
server; the real paper runtime process replays the bars to a real sandboxed agent, its running
session's decisions are queried and exported through HTTP, and it stops."""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from storage_support import Bucket, s3_server

from farm.storage.objects import S3Root

pytestmark = pytest.mark.sandbox

SYMBOLS = ["SPY", "AAPL"]
# Buys on its first live bar, then holds; reports its environment as reasoning.
AGENT = (
    b"import os\nimport backtrader as bt\n\nclass Once(bt.Strategy):\n"
    b"    def next(self):\n"
    b"        if not self.position:\n            self.buy(size=2)\n\n"
    b"    def get_decision_reasoning(self):\n"
    b"        return repr(sorted(os.environ.items()))\n"
)


@pytest.fixture
def s3_paper(
    bucket: Bucket, tmp_path: Path, real_bars: Path
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A paper server whose artifacts, bars and FMEL are all in the bucket, replaying the last
    weeks of stored bars."""
    with s3_server(
        bucket,
        tmp_path / "farm",
        real_bars,
        SYMBOLS,
        backtest_workers=0,
        feed="replay",
        feed_replay_start=date(2024, 11, 25),
        feed_interval_s=0.15,
        paper_poll_s=0.05,
        paper_step_timeout_s=10.0,
    ) as served:
        yield served


def poll(read: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while not done(value := read()):
        assert time.monotonic() < deadline, value
        time.sleep(0.1)
    return value


def test_a_paper_session_runs_is_queried_exported_and_stopped_on_s3(
    s3_paper: tuple[TestClient, dict[str, str]], bucket: Bucket, tmp_path: Path
) -> None:
    client, alice = s3_paper
    submitted = client.post(
        "/api/agents/submit",
        headers=alice,
        data={"agentName": "once"},
        files={"file": ("agent.py", AGENT)},
    )
    assert submitted.status_code == 201, submitted.text
    agent_id = submitted.json()["agentId"]
    started = client.post(
        "/api/paper-trading/start", headers=alice, json={"agentId": agent_id, "symbols": SYMBOLS}
    )
    assert started.status_code == 202, started.text
    session_id = started.json()["sessionId"]

    def status() -> Any:
        return client.get(f"/api/paper-trading/status/{agent_id}", headers=alice).json()

    running = poll(status, lambda s: s["status"] == "running" and s["barsProcessed"] >= 5)
    assert running["sessionId"] == session_id

    # The running session's decisions, flushed to the bucket, are found by its session id alone.
    def decisions() -> Any:
        url = f"/api/fmel/decisions?sessionId={session_id}&limit=1000"
        return client.get(url, headers=alice)

    page = poll(decisions, lambda r: r.status_code == 200 and r.json()["total"] >= 3).json()
    assert {d["mode"] for d in page["decisions"]} == {"PAPER"}
    assert {d["agentId"] for d in page["decisions"]} == {agent_id}
    seen = str(page["decisions"])
    assert "PYTHONPATH" in seen, "the agent's environment was recorded"
    for leak in ("AWS_", "farm-test-secret-s3", "FARM_", bucket.name, bucket.endpoint):
        assert leak not in seen, f"{leak} reached the sandbox"
    one = page["decisions"][-1]["decisionId"]
    detail = client.get(f"/api/fmel/decisions/{one}", headers=alice)
    assert detail.status_code == 200, detail.text
    assert detail.json()["sessionId"] == session_id

    exported = client.get(
        f"/api/fmel/export/{agent_id}?sessionId={session_id}&format=parquet", headers=alice
    )
    assert exported.status_code == 200, exported.text
    table = pq.read_table(io.BytesIO(exported.content))
    seqs = table.column("seq").to_pylist()
    assert table.num_rows >= page["total"]
    assert len(seqs) == len(set(seqs))

    stopped = client.post("/api/paper-trading/stop", headers=alice, json={"agentId": agent_id})
    assert stopped.status_code == 200, stopped.text
    final = poll(status, lambda s: s["status"] == "stopped")
    assert final["barsProcessed"] >= running["barsProcessed"]
    orders = client.get(f"/api/accounts/{final['accountId']}", headers=alice).json()
    assert orders["positions"], "the agent's buy filled"

    # Stopped: every live bar's decision is in the bucket (warm-up ones come first), none twice.
    after = decisions().json()
    live = [d for d in after["decisions"] if d["barTime"] >= final["firstBarTime"]]
    assert len(live) == final["barsProcessed"]
    s3 = S3Root(bucket.url(""), bucket.endpoint)
    parts = s3.names(s3.join("fmel", f"agent={agent_id}", f"session={session_id}"))
    assert any(p.startswith("decisions-") for p in parts)
    home = tmp_path / "farm"
    for folder in ("artifacts", "bars", "fmel"):
        assert not (home / folder).exists(), f"{folder} was written locally"
