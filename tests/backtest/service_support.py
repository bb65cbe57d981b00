"""Helpers for tests that drive the backtest service through real HTTP."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from farm.config import Settings

Headers = dict[str, str]


def app_settings(tmp_path: Path, real_bars: Path, **overrides: Any) -> Settings:
    home = tmp_path / "farm"
    shutil.copytree(real_bars, home / "bars")
    values: dict[str, Any] = {
        "home": home,
        "backtest_workers": 2,
        "sandbox_wall_s": 60,
        "standard_symbols": ["SPY", "AAPL"],
        "standard_start": "2023-01-01",
        "standard_end": "2023-06-30",
    }
    return Settings(**{**values, **overrides})


def submit(client: TestClient, headers: Headers, code: bytes, name: str = "agent") -> str:
    response = client.post(
        "/api/agents/submit",
        headers=headers,
        data={"agentName": name},
        files={"file": ("agent.py", code)},
    )
    assert response.status_code == 201, response.text
    agent_id: str = response.json()["agentId"]
    return agent_id


def wait_for(client: TestClient, headers: Headers, session_id: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = client.get(f"/api/backtest/{session_id}/results", headers=headers).json()
        if result["status"] in {"completed", "failed", "cancelled"}:
            return result
        time.sleep(0.1)
    pytest.fail(f"backtest {session_id} did not finish in {timeout} s")


def start(client: TestClient, headers: Headers, agent_id: str, **body: Any) -> Any:
    return client.post(f"/api/backtest/{agent_id}/start", headers=headers, json=body)
