"""End-to-end fixtures: the test Redis as the platform's bus."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support import flushed_redis


@pytest.fixture
def bus_redis() -> Iterator[str]:
    """The test Redis (this test process's own database), empty before and after."""
    with flushed_redis() as url:
        yield url
