"""Where the CLI looks for the server when FARM_URL is unset."""

from __future__ import annotations

import pytest

from farm.cli_support import client_url


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:9001"),
        ("0.0.0.0", "http://127.0.0.1:9001"),  # a wildcard bind is reached on the loopback
        ("::", "http://127.0.0.1:9001"),
        ("::1", "http://[::1]:9001"),
        ("farm.internal", "http://farm.internal:9001"),
    ],
)
def test_the_url_of_a_server_bound_to_host_and_port(host: str, url: str) -> None:
    assert client_url(host, 9001) == url
