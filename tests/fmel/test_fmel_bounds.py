"""Out-of-range offsets and dates on the FMEL queries are 400s, through a real server whose
keep-alive connection then serves the next request (issue 8: they were 500s from DuckDB and
from date arithmetic)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fmel_helpers import new_id, write_small

from farm.app import create_app
from farm.config import Settings
from farm.context import Context
from farm.storage.models import Agent
from farm.users.service import create_user
from support import KeepAlive, serving

BIG = 2**63


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[KeepAlive, str]]:
    """A served app holding one agent of alice's with a recorded session."""
    app = create_app(Settings(home=tmp_path_factory.mktemp("fmel") / "farm", backtest_workers=0))
    with serving(app) as url:
        context: Context = app.state.context
        agent_id = new_id()
        with context.db.transaction() as session:
            user, token = create_user(session, "alice")
            session.add(
                Agent(
                    id=agent_id,
                    user_id=user.id,
                    name="recorded",
                    strategy_class="Strategy",
                    code_sha256="0" * 64,
                    code_bytes=1,
                    artifact_key=f"agents/{user.id}/{agent_id}.py",
                )
            )
        write_small(context.settings.fmel_dir, agent_id, new_id(), user.id)
        with KeepAlive(url, {"Authorization": f"Bearer {token}"}) as conn:
            yield conn, agent_id


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        (f"/api/fmel/decisions?offset={BIG}", "offset: Input should be less than or equal"),
        (f"/api/fmel/search?q=buy&offset={BIG}", "offset: Input should be less than or equal"),
        ("/api/fmel/decisions?startDate=0001-01-01", "startDate must be between 1900-01-01"),
        ("/api/fmel/decisions?endDate=9999-12-31", "endDate must be between 1900-01-01"),
        ("/api/fmel/search?q=buy&endDate=9999-12-31", "endDate must be between"),
        ("/api/fmel/decisions?startDate=0001-01-01T00:00:00%2B01:00", "startDate must be"),
    ],
)
def test_out_of_range_parameters_are_400_and_the_connection_lives_on(
    served: tuple[KeepAlive, str], path: str, fragment: str
) -> None:
    conn, agent_id = served
    status, error = conn.request("GET", f"{path}&agentId={agent_id}")
    assert (status, error["error"]) == (400, "invalid_input"), error
    assert fragment in error["message"]
    status, listed = conn.request("GET", f"/api/fmel/decisions?agentId={agent_id}&limit=1")
    assert status == 200
    assert listed["total"] == 8


def test_the_bounds_are_in_the_openapi_contract(served: tuple[KeepAlive, str]) -> None:
    conn, _ = served
    _, contract = conn.request("GET", "/openapi.json")
    parameters = {
        p["name"]: p for p in contract["paths"]["/api/fmel/decisions"]["get"]["parameters"]
    }
    assert parameters["offset"]["schema"]["maximum"] == 1_000_000_000
    assert "1900-01-01 to 2100-12-31" in parameters["startDate"]["description"]
    agents = contract["paths"]["/api/agents/list"]["get"]["parameters"]
    assert next(p for p in agents if p["name"] == "page")["schema"]["maximum"] == 1_000_000
    request = contract["components"]["schemas"]["BacktestRequest"]["properties"]
    assert request["endDate"]["formatMaximum"] == "2100-12-31"
