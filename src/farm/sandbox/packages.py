"""What agent code can import in the sandbox: the standard library and the installed packages.

The sandbox runs the host's own interpreter and virtual environment (read-only), so what is
installed here is exactly what an agent can import. Both answers are computed once per process.
"""

from __future__ import annotations

import functools
import platform
import sys
from importlib import metadata


@functools.cache
def installed_packages() -> dict[str, str]:
    """Every installed distribution's name and version, sorted by name (case-insensitive)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name not in found:
            found[name] = dist.version
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


@functools.cache
def importable_modules() -> frozenset[str]:
    """Top-level module names an agent may import: the standard library's and the installed
    distributions'."""
    return frozenset(sys.stdlib_module_names) | frozenset(metadata.packages_distributions())


def python_version() -> str:
    """The sandbox's Python version, e.g. ``3.11.2``."""
    return platform.python_version()
