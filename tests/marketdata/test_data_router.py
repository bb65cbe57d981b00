"""``GET /api/data/symbols`` on a tiny app holding a bar store."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.testclient import TestClient
from marketdata_helpers import WriteCsv, good_rows

from farm.marketdata.dependencies import get_bar_store
from farm.marketdata.importer import import_path
from farm.marketdata.router import router
from farm.marketdata.store import BarStore
from farm.marketdata.synthetic import write_demo_universe


def client_for(store: BarStore) -> TestClient:
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_bar_store] = lambda: store
    return TestClient(app)


def test_symbols_are_listed_in_camel_case_and_new_imports_show_up(
    store: BarStore, write_csv: WriteCsv, tmp_path: Path
) -> None:
    write_demo_universe(store, ["SPY"])
    client = client_for(store)

    first = client.get("/api/data/symbols")
    import_path(BarStore(store.root), write_csv("NEW.csv", good_rows(3)))
    second = client.get("/api/data/symbols")

    assert first.status_code == 200
    assert first.json() == {
        "symbols": [
            {
                "symbol": "SPY",
                "firstDate": "2020-07-27",
                "lastDate": "2025-04-04",
                "bars": 1225,
                "source": "synthetic",
            }
        ],
        "total": 1,
    }
    body = second.json()
    assert body["total"] == 2
    assert body["symbols"][0] == {
        "symbol": "NEW",
        "firstDate": "2024-07-01",
        "lastDate": "2024-07-03",
        "bars": 3,
        "source": "real",
    }


def test_an_empty_store_lists_nothing(store: BarStore) -> None:
    assert client_for(store).get("/api/data/symbols").json() == {"symbols": [], "total": 0}
