"""Session summaries: analytics from summaries equal analytics from a scan of the records."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from farm.core.orders import ClosedTrade
from farm.fmel import queries
from farm.fmel.layout import part_files, session_dir
from farm.fmel.recorder import FmelRecorder
from farm.fmel.records import Bar, DataAccess, Order
from farm.fmel.store import FmelStore
from farm.fmel.summary import DECILES, SOURCE, SUMMARY_NAME

AGENT = "agent-1"
NOW = datetime.now(UTC)
BAR = [Bar(symbol="AAPL", open=1.0, high=2.0, low=0.5, close=1.5, volume=10.0)]


def record_session(
    root: Path, session: str, rng: random.Random, *, age_days: tuple[int, int], close: bool = True
) -> FmelRecorder:
    """A session of random decisions recorded between ``age_days`` days ago, and its trades."""
    rec = FmelRecorder(root, AGENT, session, "user-1", "BACKTEST", batch_size=37)
    n = rng.randint(50, 150)
    start = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(days=rng.randint(0, 30))
    coarse = rng.random() < 0.5  # rounded confidences: many ties across sessions
    for seq in range(n):
        side = rng.choice(["buy", "sell", None, None, "both"])
        sides = ["buy", "sell"] if side == "both" else [side] if side else []
        confidence = None if rng.random() < 0.1 else rng.random()
        if coarse and confidence is not None:
            confidence = round(confidence, 1)
        age = age_days[0] + (age_days[1] - age_days[0]) * seq / n
        rec.record_decision(
            seq=seq,
            bar_ts=start + timedelta(hours=7 * seq),
            bars=BAR,
            cash=1.0,
            value=1.0,
            orders=[
                Order(order_id=f"o{seq}{s}", symbol="AAPL", side=s, size=1, type="m", status="s")
                for s in sides
            ],
            confidence=confidence,
            data_accesses=[
                DataAccess(symbol=rng.choice("ABC"), field=rng.choice(["close", "open"]), index=0)
                for _ in range(rng.randint(0, 3))
            ],
            wall_ts=NOW - timedelta(days=age),
        )
    for t in range(rng.randint(0, 12)):
        opened = rng.randrange(n - 1)
        pnl = round(rng.uniform(-50, 50), 2)
        rec.record_trade(
            ClosedTrade(
                symbol="AAPL",
                size=1,
                entry_ts=start,
                exit_ts=start,
                entry_price=1.0,
                exit_price=1.0,
                pnl=pnl,
                pnl_net=pnl if t else 0.0,
                commission=0.0,
                bars_held=1,
                opened_by_seq=opened,
                closed_by_seq=opened + 1,
            ),
            wall_ts=NOW - timedelta(days=age_days[1]),
        )
    if close:
        rec.close()
    else:
        rec.flush()
    return rec


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """Eight summarized sessions (recorded recently, long ago, or across 30 days ago)."""
    rng = random.Random(11)
    for i, ages in enumerate(
        [(1, 2), (3, 5), (40, 45), (100, 120), (20, 40), (1, 80)] + [(0, 1)] * 2
    ):
        record_session(tmp_path, f"s{i}", rng, age_days=ages)
    return tmp_path


def analytics(root: Path, days: int | None) -> dict[str, Any]:
    store = FmelStore(root)
    try:
        since = NOW - timedelta(days=days) if days else None
        return queries.analytics(store, queries.DecisionQuery([AGENT], since=since))
    finally:
        store.close()


def drop_summaries(root: Path) -> None:
    for path in root.rglob(SUMMARY_NAME):
        path.unlink()


def assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    """Counts and order statistics equal; sums (added in another order) equal to rounding."""
    for key in ("total", "buy", "sell", "hold", "mixed", "deciles", "histogram", "daily"):
        assert got[key] == want[key], key
    assert got["most_read"] == want["most_read"]
    assert got["average_confidence"] == pytest.approx(want["average_confidence"], rel=1e-12)
    assert got["trades"] == pytest.approx(want["trades"], rel=1e-12)
    assert got["calibration"].keys() == want["calibration"].keys()
    for bucket, row in got["calibration"].items():
        assert row == pytest.approx(want["calibration"][bucket], rel=1e-12)


@pytest.mark.parametrize("days", [None, 7, 30, 90])
def test_summaries_and_a_scan_agree(root: Path, days: int | None) -> None:
    summarized = analytics(root, days)
    drop_summaries(root)
    scanned = analytics(root, days)
    assert summarized["total"] > 0
    assert_same(summarized, scanned)


def test_deciles_are_duckdbs_quantile_cont(root: Path) -> None:
    files = part_files(root, [AGENT], "decisions")
    store = FmelStore(root)
    with store.cursor() as cur:
        cur.execute(f"SELECT quantile_cont(confidence, ?) FROM {SOURCE}", [DECILES, files])
        (want,) = cur.fetchone() or ()
    store.close()
    assert analytics(root, None)["deciles"] == want


def test_sessions_without_a_valid_summary_are_scanned(root: Path, tmp_path_factory: Any) -> None:
    rng = random.Random(5)
    # Never closed (a crash, or a paper session still running): parts but no summary.
    open_session = record_session(root, "open", rng, age_days=(0, 1), close=False)
    # Reopened by a second recorder after its summary was written: the summary misses a part.
    record_session(root, "reopened", rng, age_days=(0, 1))
    record_session(root, "reopened", rng, age_days=(0, 1))
    # An unreadable summary.
    (session_dir(root, AGENT, "s0") / SUMMARY_NAME).write_text("{not json")
    mixed = analytics(root, None)
    drop_summaries(root)
    assert_same(mixed, analytics(root, None))
    open_session.close()


def test_a_summary_is_committed_atomically_and_only_on_close(tmp_path: Path) -> None:
    rec = record_session(tmp_path, "s", random.Random(1), age_days=(0, 1), close=False)
    folder = session_dir(tmp_path, AGENT, "s")
    assert not (folder / SUMMARY_NAME).exists()
    rec.close()
    assert (folder / SUMMARY_NAME).exists()
    assert not list(folder.glob(".*")), "no temporary file left"


def test_summarized_sessions_are_not_scanned(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scanned: list[list[str]] = []
    scan = queries.scan

    def spy(cur: Any, decisions: list[str], trades: list[str], *args: Any) -> Any:
        scanned.append(decisions)
        return scan(cur, decisions, trades, *args)

    monkeypatch.setattr(queries, "scan", spy)
    analytics(root, None)
    assert scanned == []
    analytics(root, 7)  # only s5 (recorded 1 to 80 days ago) is cut through
    assert {f.split("session=")[1].split("/")[0] for f in scanned[0]} == {"s5"}
