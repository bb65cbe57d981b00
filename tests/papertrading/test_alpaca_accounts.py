"""Accounts of broker ``alpaca`` over real HTTP: the key is verified with the local Alpaca
server, stored encrypted, never returned."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from alpaca_server import FakeAlpaca, alpaca_server
from farm.app import create_app
from farm.config import Settings
from farm.context import Context, Role
from farm.secretbox import KEY_FILE, MissingSecretKey, SecretBox
from farm.storage.models import PaperAccount
from support import free_port, user_token

Headers = dict[str, str]


@pytest.fixture
def fake() -> Iterator[tuple[FakeAlpaca, str]]:
    with alpaca_server(FakeAlpaca(cash=Decimal("25000.5"))) as served:
        yield served


@pytest.fixture
def db_settings(tmp_path: Path, fake: tuple[FakeAlpaca, str]) -> Settings:
    return Settings(
        home=tmp_path / "farm",
        backtest_workers=0,
        paper_runtime=False,
        feed="off",
        alpaca_trading_url=fake[1],
        secret_key=None,  # generated into FARM_HOME
    )


@pytest.fixture
def alice(make_user: Callable[[str], Headers]) -> Headers:
    return make_user("alice")


def _post(client: TestClient, headers: Headers, **body: Any) -> Any:
    return client.post("/api/accounts", headers=headers, json=body)


def test_an_alpaca_account_is_verified_and_its_secret_sealed(
    client: TestClient, context: Context, alice: Headers, fake: tuple[FakeAlpaca, str]
) -> None:
    server, _ = fake
    response = _post(
        client,
        alice,
        broker="alpaca",
        name="Live paper",
        keyId=server.key_id,
        secretKey=server.secret_key,
    )
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["broker"] == "alpaca"
    assert created["cash"] == created["initialCash"] == 25000.5  # Alpaca's cash
    assert ("GET", "/v2/account") in [(m, p) for _, m, p in server.requests]
    shown = client.get(f"/api/accounts/{created['accountId']}", headers=alice)
    listed = client.get("/api/accounts", headers=alice)
    for text in (response.text, shown.text, listed.text):
        assert server.secret_key not in text
    with context.db.transaction() as session:
        row = session.get(PaperAccount, created["accountId"])
        assert row is not None
        assert row.broker_secret is not None
        sealed = row.broker_secret
    assert server.secret_key not in sealed
    box = SecretBox.from_settings(context.settings)
    assert box.open(sealed) == server.secret_key
    key_file = context.settings.home / KEY_FILE
    assert key_file.stat().st_mode & 0o777 == 0o600  # generated in FARM_HOME, private

    again = _post(client, alice, broker="alpaca", keyId=server.key_id, secretKey=server.secret_key)
    assert again.status_code == 409
    fund = client.post(
        f"/api/accounts/{created['accountId']}/fund", headers=alice, json={"amount": 10}
    )
    assert fund.status_code == 400
    assert "its cash comes from alpaca" in fund.text


def test_a_refused_key_is_a_400_saying_why(
    client: TestClient, alice: Headers, fake: tuple[FakeAlpaca, str], caplog: Any
) -> None:
    server, _ = fake
    bad = _post(client, alice, broker="alpaca", keyId=server.key_id, secretKey="wrong-secret")
    assert bad.status_code == 400
    assert "Alpaca refused the key (HTTP 401)" in bad.text
    assert "not authorized" in bad.text
    assert "wrong-secret" not in bad.text
    assert "wrong-secret" not in caplog.text
    missing = _post(client, alice, broker="alpaca", keyId=server.key_id)
    assert missing.status_code == 400
    assert "secretKey" in missing.text
    stray = _post(client, alice, keyId="PK", secretKey="x")
    assert stray.status_code == 400


def test_an_unreachable_alpaca_is_a_400(
    tmp_path: Path, make_user: Callable[[str], Headers], client: TestClient, context: Context
) -> None:
    context.settings.alpaca_trading_url = "http://127.0.0.1:9"  # nothing listens there
    response = _post(client, make_user("bob"), broker="alpaca", keyId="PK", secretKey="s")
    assert response.status_code == 400
    assert "could not be reached" in response.text


SCALED_OUT = [
    {"redis_url": "redis://127.0.0.1:1/0"},
    {"database_url": "postgresql://farm@127.0.0.1:1/farm"},  # never connected to
]


@pytest.mark.parametrize("shape", SCALED_OUT, ids=["redis", "postgresql"])
def test_scaled_out_needs_the_secret_key(tmp_path: Path, shape: dict[str, str]) -> None:
    with pytest.raises(MissingSecretKey, match="FARM_SECRET_KEY must be set when scaled out"):
        SecretBox.from_settings(Settings(home=tmp_path, secret_key=None, **shape))
    box = SecretBox.from_settings(Settings(home=tmp_path, secret_key="operator-key", **shape))
    assert box.open(box.seal("abc")) == "abc"
    assert not (tmp_path / KEY_FILE).exists()


@pytest.mark.parametrize("role", ["all", "api", "paper"])
def test_a_scaled_out_process_without_the_key_stops_at_start(tmp_path: Path, role: Role) -> None:
    for shape in SCALED_OUT:
        settings = Settings(home=tmp_path / role, secret_key=None, feed="off", **shape)
        context = Context.build(settings, role=role)
        try:
            with pytest.raises(MissingSecretKey, match="FARM_SECRET_KEY"):
                context.start()  # before touching the database or Redis
        finally:
            context.close()


def test_farm_serve_without_the_key_exits_saying_so(tmp_path: Path) -> None:
    env = {**os.environ, "FARM_HOME": str(tmp_path), "FARM_REDIS_URL": "redis://127.0.0.1:1/0"}
    env.pop("FARM_SECRET_KEY")
    port = str(free_port())
    served = subprocess.run(
        [sys.executable, "-m", "farm", "serve", "--port", port],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert served.returncode != 0
    assert "FARM_SECRET_KEY must be set when scaled out" in served.stderr + served.stdout


def test_the_box_is_built_once_not_per_request(
    db_settings: Settings, fake: tuple[FakeAlpaca, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Settings] = []
    build = SecretBox.from_settings
    monkeypatch.setattr(SecretBox, "from_settings", lambda s: built.append(s) or build(s))
    server, _ = fake
    with TestClient(create_app(db_settings)) as client:
        assert len(built) == 1  # at start
        context: Context = client.app.state.context  # type: ignore[attr-defined]
        alice = {"Authorization": f"Bearer {user_token(context, 'alice')}"}
        for name in ("one", "two"):
            server.other_keys[f"PK{name}"] = f"secret-{name}"
            created = _post(
                client,
                alice,
                broker="alpaca",
                name=name,
                keyId=f"PK{name}",
                secretKey=f"secret-{name}",
            )
            assert created.status_code == 201, created.text
        assert client.get("/api/accounts", headers=alice).status_code == 200
    assert len(built) == 1


def test_the_cli_creates_an_alpaca_account_with_the_secret_off_argv(
    client: TestClient,
    context: Context,
    fake: tuple[FakeAlpaca, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``farm accounts create --broker alpaca``: the secret from ALPACA_SECRET_KEY or a hidden
    prompt (never echoed), verified by the local Alpaca server."""
    from typer.testing import CliRunner

    from farm.cli import app
    from farm.users.service import create_user
    from support import route_cli

    server, _ = fake
    route_cli(client, monkeypatch)
    runner = CliRunner()
    with context.db.transaction() as session:
        _, token = create_user(session, "carol")
    base = ["accounts", "create", "--broker", "alpaca", "--key-id", server.key_id]
    by_env = runner.invoke(
        app,
        [*base, "--name", "from env", "--json", "--token", token],
        env={"ALPACA_SECRET_KEY": server.secret_key},
    )
    assert by_env.exit_code == 0, by_env.output
    assert '"broker": "alpaca"' in by_env.output
    assert server.secret_key not in by_env.output
    server.other_keys["PKOTHER"] = "other-secret"
    other = ["accounts", "create", "--broker", "alpaca", "--key-id", "PKOTHER", "--quiet"]
    prompted = runner.invoke(
        app,
        [*other, "--token", token],
        input="other-secret\n",
        env={"ALPACA_SECRET_KEY": ""},
    )
    assert prompted.exit_code == 0, prompted.output
    assert "other-secret" not in prompted.output  # the prompt hides what is typed
    with context.db.transaction() as session:
        rows = session.query(PaperAccount).filter_by(broker="alpaca").all()
        assert sorted(r.broker_key_id or "" for r in rows) == ["PKOTHER", server.key_id]
    refused = runner.invoke(
        app, [*base, "--token", token], env={"ALPACA_SECRET_KEY": "wrong-secret"}
    )
    assert refused.exit_code != 0
    assert "Alpaca refused the key" in refused.output
    no_key = runner.invoke(app, ["accounts", "create", "--broker", "alpaca", "--token", token])
    assert no_key.exit_code != 0
    assert "--key-id" in no_key.output
