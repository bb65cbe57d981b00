"""Everything on object storage: agent files, bars, results and FMEL on moto's S3 server; submit,
backtest in the sandbox, page the results, query and export FMEL, all through real HTTP."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from storage_support import Bucket, s3_server

from farm.storage.objects import S3Root

pytestmark = pytest.mark.sandbox

SNOOP = (
    b"import os\nimport backtrader as bt\n\nclass Snoop(bt.Strategy):\n"
    b"    def next(self):\n"
    b"        if not self.position:\n            self.buy(size=1)\n\n"
    b"    def get_decision_reasoning(self):\n"
    b"        return repr(sorted(os.environ.items()))\n"
)
SYMBOLS = ["SPY"]


@pytest.fixture
def s3_farm(
    bucket: Bucket, tmp_path: Path, real_bars: Path
) -> Iterator[tuple[TestClient, dict[str, str]]]:
    """A server whose artifacts, bars and FMEL are all in the bucket (SQLite stays local)."""
    with s3_server(
        bucket,
        tmp_path / "farm",
        real_bars,
        SYMBOLS,
        backtest_workers=1,
        sandbox_wall_s=60,
        standard_symbols=SYMBOLS,
        standard_start="2023-01-01",
        standard_end="2023-03-31",
    ) as served:
        yield served


def ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def test_submit_backtest_query_and_export_with_everything_on_s3(
    s3_farm: tuple[TestClient, dict[str, str]], bucket: Bucket, tmp_path: Path
) -> None:
    client, alice = s3_farm
    submitted = client.post(
        "/api/agents/submit",
        headers=alice,
        data={"agentName": "snoop"},
        files={"file": ("agent.py", SNOOP)},
    )
    assert submitted.status_code == 201, submitted.text
    agent_id = submitted.json()["agentId"]
    started = client.post(
        f"/api/backtest/{agent_id}/start",
        headers=alice,
        json={"symbols": SYMBOLS, "startDate": "2023-01-01", "endDate": "2023-02-28"},
    )
    assert started.status_code == 202, started.text
    session_id = started.json()["sessionId"]
    deadline = time.monotonic() + 120
    while (result := ok(client.get(f"/api/backtest/{session_id}/results", headers=alice)))[
        "status"
    ] not in {"completed", "failed", "cancelled"}:
        assert time.monotonic() < deadline, "the backtest did not finish"
        time.sleep(0.2)
    assert result["status"] == "completed", result

    equity = ok(client.get(f"/api/backtest/{session_id}/equity?limit=5&offset=3", headers=alice))
    steps = equity["total"]
    assert steps > 30
    assert len(equity["points"]) == 5
    fills = ok(client.get(f"/api/backtest/{session_id}/fills", headers=alice))
    assert fills["total"] == 1

    page = ok(client.get(f"/api/fmel/decisions?sessionId={session_id}&limit=1000", headers=alice))
    assert page["total"] == steps  # one FMEL record per step, read from S3 by DuckDB
    seen = str(page["decisions"])
    assert "PYTHONPATH" in seen, "the agent's environment was recorded"
    for leak in ("AWS_", "farm-test-secret-s3", "FARM_", bucket.name, bucket.endpoint):
        assert leak not in seen, f"{leak} reached the sandbox"
    analytics = ok(
        client.get(f"/api/fmel/analytics?agentId={agent_id}&sessionId={session_id}", headers=alice)
    )
    assert analytics["totalDecisions"] == steps

    exported = client.get(
        f"/api/fmel/export/{agent_id}?sessionId={session_id}&format=parquet", headers=alice
    )
    assert exported.status_code == 200, exported.text
    table = pq.read_table(io.BytesIO(exported.content))
    assert table.num_rows == steps
    assert sorted(table.column("seq").to_pylist()) == list(range(steps))
    jsonl = client.get(
        f"/api/fmel/export/{agent_id}?sessionId={session_id}&format=jsonl&records=executions",
        headers=alice,
    )
    assert jsonl.status_code == 200, jsonl.text
    assert len(jsonl.text.strip().splitlines()) == 1

    # The objects are in the bucket, and nothing of them stayed on the local disk.
    s3 = S3Root(bucket.url(""), bucket.endpoint)
    (owner,) = s3.names(s3.join("artifacts", "agents"))
    assert s3.read(s3.join("artifacts", "agents", owner, f"{agent_id}.py")) == SNOOP
    backtest = ("artifacts", "backtests", session_id)
    (attempt,) = (n for n in s3.names(s3.join(*backtest)) if "." not in n)  # its one run's
    assert {"equity.parquet", "fills.parquet", "trades.parquet"} <= set(
        s3.names(s3.join(*backtest, attempt))
    )
    parts = s3.names(s3.join("fmel", f"agent={agent_id}", f"session={session_id}"))
    assert "_summary.json" in parts
    assert any(p.startswith("decisions-") for p in parts)
    home = tmp_path / "farm"
    for folder in ("artifacts", "bars", "fmel"):
        assert not (home / folder).exists(), f"{folder} was written locally"
    assert not [p for p in (home / "cache" / "fmel").rglob("*") if p.is_file()], "FMEL staged"
