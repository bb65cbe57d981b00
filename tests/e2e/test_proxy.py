"""`farm serve` behind a proxy: the addresses the proxies named in FARM_FORWARDED_ALLOW_IPS
forward (X-Forwarded-For) are the clients' (rate limits count them apart); anyone else's
forwarding headers are ignored."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest
from server_support import FARM, start_process


def _bad_token_from(url: str, address: str) -> int:
    """The status of a request with an invalid token, forwarded for ``address``."""
    headers = {"Authorization": "Bearer not-a-token", "X-Forwarded-For": address}
    return httpx.get(f"{url}/api/accounts", headers=headers, timeout=10).status_code


@pytest.mark.parametrize(("trusted", "separate"), [("*", True), ("10.9.9.9", False)])
def test_forwarded_addresses_count_apart_only_from_trusted_proxies(
    tmp_path: Path, trusted: str, separate: bool
) -> None:
    home = tmp_path / "farm"
    env = {"FARM_RATE_LIMIT_AUTH_FAILURES": "2/minute", "FARM_FORWARDED_ALLOW_IPS": trusted}
    subprocess.run([*FARM, "migrate"], env={"FARM_HOME": str(home)}, check=True, timeout=120)
    server = start_process(home, ["serve"], **env)
    try:
        url = server.env["FARM_URL"]
        assert [_bad_token_from(url, "203.0.113.7") for _ in range(3)] == [401, 401, 429]
        # Another client behind the proxy: its own count when the proxy is trusted, else
        # the proxy's address, whose guesses are used up.
        assert _bad_token_from(url, "198.51.100.9") == (401 if separate else 429)
    finally:
        server.stop()
