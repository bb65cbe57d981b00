"""Make sure a starting server has bars: import FARM_DATA_DIR, or generate the synthetic demo."""

from __future__ import annotations

import logging
from datetime import date

from farm.config import Settings
from farm.marketdata.importer import ImportReport, import_path
from farm.marketdata.store import BarStore
from farm.marketdata.synthetic import DEMO_END, DEMO_START, DEMO_SYMBOLS, write_demo_universe


def ensure_data(settings: Settings, store: BarStore, log: logging.Logger) -> ImportReport | None:
    """Import ``settings.data_dir`` when set (files unchanged since their last import are
    skipped, so restarts are fast); otherwise fill an empty store with the synthetic demo."""
    if settings.data_dir is not None:
        report = import_path(
            store, settings.data_dir, skip_unchanged=True, max_gap_days=settings.import_gap_days
        )
        log.info(
            "market data from %s: %d symbols imported (%d bars), %d unchanged, %d failed, %.1fs",
            settings.data_dir,
            len(report.imported),
            report.bars_imported,
            len(report.unchanged),
            len(report.failed),
            report.seconds,
        )
        for symbol in report.imported:
            for warning in symbol.warnings:
                log.warning("%s %s: %s", symbol.path.name, symbol.symbol, warning)
        for failed in report.failed:
            first = str(failed.problems[0]) if failed.problems else "unknown problem"
            log.warning(
                "not imported: %s %s (%d problems; first: %s)",
                failed.path.name,
                failed.symbol or "",
                failed.problem_count,
                first,
            )
        return report
    if store.is_empty():
        start = min(DEMO_START, _parse(settings.standard_start, DEMO_START))
        end = max(DEMO_END, _parse(settings.standard_end, DEMO_END))
        symbols = list(
            dict.fromkeys([*DEMO_SYMBOLS, *(s.upper() for s in settings.standard_symbols)])
        )
        infos = write_demo_universe(store, symbols, start, end)
        log.warning(
            "no market data and FARM_DATA_DIR is not set: generated a SYNTHETIC demo universe "
            "(%d symbols, %s to %s). Results computed on it are labelled dataSource=synthetic "
            "and never ranked; import real bars with `farm data import PATH` or set FARM_DATA_DIR.",
            len(infos),
            start,
            end,
        )
    return None


def _parse(value: str | None, default: date) -> date:
    return date.fromisoformat(value[:10]) if value else default
