"""The agent contract at submission, over HTTP (issue 12): imports the sandbox runtime cannot
satisfy are refused by name, a base class of your own is fine, and ``GET /api/runtime`` lists
the packages an agent can use."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata

import pytest
from fastapi.testclient import TestClient

from farm.context import Context
from farm.storage.models import Agent

Headers = dict[str, str]
STRATEGY = "\nclass A(bt.Strategy):\n    def next(self):\n        pass\n"


def submit(client: TestClient, headers: Headers, code: str) -> object:
    return client.post(
        "/api/agents/submit",
        headers=headers,
        data={"agentName": "a"},
        files={"file": ("agent.py", code.encode(), "text/x-python")},
    )


@pytest.fixture
def alice(make_user: Callable[[str], Headers]) -> Headers:
    return make_user("alice")


@pytest.mark.parametrize(
    ("imports", "named"),
    [
        ("import talib_not_here", "talib_not_here"),
        ("from nonexistent import x", "nonexistent"),
        (
            "import numpy, zz_missing.sub as m\nfrom aa_missing.deep import y",
            "aa_missing, zz_missing",
        ),
        ("def later():\n    import lazy_missing", "lazy_missing"),
    ],
)
def test_imports_the_sandbox_cannot_satisfy_are_refused_by_name(
    client: TestClient, alice: Headers, imports: str, named: str
) -> None:
    response = submit(client, alice, f"import backtrader as bt\n{imports}\n{STRATEGY}")
    assert response.status_code == 400, response.text  # type: ignore[attr-defined]
    message = response.json()["message"]  # type: ignore[attr-defined]
    assert f"the agent imports {named}, which the sandbox runtime does not have" in message
    assert "GET /api/runtime" in message


def test_the_scientific_stack_the_stdlib_and_optional_imports_are_accepted(
    client: TestClient, context: Context, alice: Headers
) -> None:
    code = (
        "import backtrader as bt\nimport numpy as np, pandas as pd, scipy.stats, statsmodels.api\n"
        "from sklearn.linear_model import Ridge\nimport ta\nimport math, json, collections\n"
        "try:\n    import talib\nexcept ImportError:\n    talib = None\n"
        "class Base(bt.Strategy):\n    params = (('fast', 10),)\n"
        "class Agent(Base):\n    params = (('slow', 30.0),)\n"
    )
    response = submit(client, alice, code)
    assert response.status_code == 201, response.text  # type: ignore[attr-defined]
    agent_id = response.json()["agentId"]  # type: ignore[attr-defined]
    shown = client.get(f"/api/agents/{agent_id}", headers=alice).json()
    assert shown["strategyClass"] == "Agent"
    assert shown["declaredParams"] == {"fast": "int", "slow": "float"}
    with context.db.transaction() as session:
        agent = session.get(Agent, agent_id)
        assert agent is not None
        assert agent.declared_params == {"fast": "int", "slow": "float"}


def test_two_concrete_strategies_are_refused(client: TestClient, alice: Headers) -> None:
    code = "import backtrader as bt\nclass Base(bt.Strategy): pass\nclass A(Base): pass\n"
    response = submit(client, alice, code + "class B(Base): pass\n")
    assert response.status_code == 400  # type: ignore[attr-defined]
    assert "found 2 concrete Strategy classes (A, B)" in response.json()["message"]  # type: ignore[attr-defined]


def test_runtime_lists_the_installed_packages_with_versions_publicly(client: TestClient) -> None:
    response = client.get("/api/runtime")  # no token
    assert response.status_code == 200
    body = response.json()
    assert body["python"].startswith("3.")
    versions = {p["name"].lower(): p["version"] for p in body["packages"]}
    for name in ("numpy", "pandas", "scipy", "scikit-learn", "statsmodels", "ta", "backtrader"):
        assert versions[name] == metadata.version(name)
