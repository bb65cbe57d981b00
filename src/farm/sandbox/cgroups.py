"""One cgroup per sandboxed agent, under a ``farm`` parent, on cgroup v1 or v2 (DESIGN §4).

v1 needs the ``memory`` and ``pids`` controllers (``freezer``, when mounted, makes killing
atomic; ``cpuacct`` measures CPU time); v2 needs ``memory`` and ``pids`` in the unified
hierarchy's ``cgroup.controllers``.
The ``farm`` parent sits at the top of each hierarchy as mounted in this process's view.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

logger = logging.getLogger("farm.sandbox")

PARENT = "farm"
_MOUNTS = Path("/proc/self/mounts")
_V1_CONTROLLERS = ("memory", "pids", "freezer", "cpuacct")
_REQUIRED = frozenset({"memory", "pids"})
_FIX = (
    "The sandbox needs writable memory and pids cgroup controllers: cgroup v1 mounted at "
    "/sys/fs/cgroup/{memory,pids}, or cgroup v2 at /sys/fs/cgroup with memory and pids in "
    "cgroup.controllers. Run the platform as root (in a container: --privileged or "
    "--cgroupns=host with /sys/fs/cgroup mounted read-write), or set FARM_SANDBOX=unsafe-local "
    "for local development only."
)
_names = itertools.count()


class CgroupError(RuntimeError):
    """A cgroup could not be found, created or configured; the message says what to do."""


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    """Where the controllers are: v1 maps each controller to its mount; v2 has one mount."""

    version: Literal[1, 2]
    mounts: Mapping[str, Path]


def detect_layout() -> CgroupLayout:
    """Find usable controllers from ``/proc/self/mounts``; prefer v1 when it holds memory+pids."""
    v1: dict[str, Path] = {}
    v2: list[Path] = []
    try:
        lines = _MOUNTS.read_text().splitlines()
    except OSError as exc:
        raise CgroupError(f"cannot read {_MOUNTS}: {exc}. {_FIX}") from exc
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        mount, fstype, options = Path(fields[1]), fields[2], fields[3].split(",")
        if fstype == "cgroup":
            v1.update({c: mount for c in _V1_CONTROLLERS if c in options})
        elif fstype == "cgroup2":
            v2.append(mount)
    if _REQUIRED <= v1.keys():
        return CgroupLayout(1, v1)
    for mount in v2:
        try:
            available = set((mount / "cgroup.controllers").read_text().split())
        except OSError:
            continue
        if _REQUIRED <= available:
            return CgroupLayout(2, {"unified": mount})
    raise CgroupError(f"no memory and pids cgroup controllers found. {_FIX}")


class Cgroup:
    """A per-agent cgroup: limits memory and process count, counts OOM kills, kills everything."""

    def __init__(self, layout: CgroupLayout, dirs: Mapping[str, Path]) -> None:
        self.layout = layout
        self.dirs = dict(dirs)

    @classmethod
    def create(cls, layout: CgroupLayout, *, memory_bytes: int, pids: int) -> Cgroup:
        """Make a fresh cgroup under ``farm`` with these limits; CgroupError says why not."""
        name = f"agent-{os.getpid()}-{next(_names)}-{os.urandom(4).hex()}"
        group = cls(layout, {})
        try:
            if layout.version == 1:
                for controller, mount in layout.mounts.items():
                    group.dirs[controller] = _mkdir(_mkdir(mount / PARENT) / name)
                memory = group.dirs["memory"]
                _write(memory / "memory.limit_in_bytes", memory_bytes)
                _write_optional(memory / "memory.memsw.limit_in_bytes", memory_bytes)
                _write(group.dirs["pids"] / "pids.max", pids)
            else:
                root = layout.mounts["unified"]
                _enable_controllers(root)
                _enable_controllers(_mkdir(root / PARENT))
                path = group.dirs["unified"] = _mkdir(root / PARENT / name)
                _write(path / "memory.max", memory_bytes)
                _write_optional(path / "memory.swap.max", 0)
                _write_optional(path / "memory.oom.group", 1)
                _write(path / "pids.max", pids)
        except OSError as exc:
            group.remove()
            raise CgroupError(f"cannot set up a cgroup: {exc}. {_FIX}") from exc
        return group

    def add(self, pid: int) -> None:
        """Move process ``pid`` (not yet running agent code) into this cgroup."""
        for path in self.dirs.values():
            _write(path / "cgroup.procs", pid)

    def procs(self) -> list[int]:
        """Process ids currently in the cgroup."""
        path = self.dirs.get("pids") or self.dirs["unified"]
        try:
            return [int(p) for p in (path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def kill_all(self) -> None:
        """SIGKILL every process in the cgroup, including re-parented and setsid ones."""
        if self.layout.version == 2 and (self.dirs["unified"] / "cgroup.kill").exists():
            _write(self.dirs["unified"] / "cgroup.kill", 1)
            return
        frozen = self._freeze(True)
        try:
            for _ in range(100):
                pids = self.procs()
                if not pids:
                    break
                for pid in pids:
                    _kill(pid)
                if frozen:
                    break
        finally:
            if frozen:
                self._freeze(False)

    def oom_kills(self) -> int:
        """How many processes the kernel OOM-killed in this cgroup."""
        if self.layout.version == 1:
            path, key = self.dirs["memory"] / "memory.oom_control", "oom_kill"
        else:
            path, key = self.dirs["unified"] / "memory.events", "oom_kill"
        try:
            for line in path.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == key:
                    return int(value)
        except OSError:
            pass
        return 0

    def cpu_seconds(self) -> float | None:
        """CPU time used by every process that ran in the cgroup (None if not measured)."""
        try:
            if self.layout.version == 2:
                stats = (self.dirs["unified"] / "cpu.stat").read_text().split()
                return int(stats[stats.index("usage_usec") + 1]) / 1e6
            if "cpuacct" in self.dirs:
                return int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
        except (OSError, ValueError):
            pass
        return None

    def remove(self, wait_s: float = 2.0) -> None:
        """Kill what is left and remove the cgroup directories (best effort, logged)."""
        deadline = time.monotonic() + wait_s
        for path in self.dirs.values():
            while True:
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        logger.warning("could not remove cgroup %s: %s", path, exc)
                        break
                    self.kill_all()
                    time.sleep(0.01)
        self.dirs.clear()

    def _freeze(self, frozen: bool) -> bool:
        """Freeze (or thaw) the cgroup so nothing can fork or exit while it is being killed."""
        done: str | None = None
        if self.layout.version == 2:
            path, value = self.dirs["unified"] / "cgroup.freeze", str(int(frozen))
        elif "freezer" in self.dirs:
            path = self.dirs["freezer"] / "freezer.state"
            value, done = ("FROZEN", "FROZEN") if frozen else ("THAWED", None)
        else:
            return False
        try:
            _write(path, value)
            deadline = time.monotonic() + 1.0
            while done is not None and path.read_text().strip() != done:
                if time.monotonic() > deadline:
                    return True
                time.sleep(0.001)
        except OSError:
            return False
        return True


def _mkdir(path: Path) -> Path:
    path.mkdir(exist_ok=True)
    return path


def _enable_controllers(path: Path) -> None:
    enabled = set((path / "cgroup.subtree_control").read_text().split())
    missing = _REQUIRED - enabled
    if missing:
        _write(path / "cgroup.subtree_control", " ".join(f"+{c}" for c in sorted(missing)))


def _write(path: Path, value: object) -> None:
    with path.open("w") as file:
        file.write(str(value))


def _write_optional(path: Path, value: object) -> None:
    if path.exists():
        try:
            _write(path, value)
        except OSError as exc:
            logger.debug("cannot write %s: %s", path, exc)


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def remove_stale(layout: CgroupLayout) -> None:
    """Remove empty per-agent cgroups left under ``farm`` by host processes that have died."""
    for mount in layout.mounts.values():
        parent = mount / PARENT
        if not parent.is_dir():
            continue
        for child in parent.glob("agent-*"):
            owner = child.name.split("-")[1]
            if owner.isdigit() and not _alive(int(owner)):
                try:
                    child.rmdir()
                except OSError as exc:
                    logger.warning("could not remove stale cgroup %s: %s", child, exc)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
