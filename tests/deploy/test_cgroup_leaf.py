"""deploy/cgroup-leaf.sh, the sandboxing workers' wrapper, on a stand-in cgroup v2 folder: it
moves the container's processes into ``leaf`` and enables memory and pids below, once, then
runs the command. (This host has cgroup v1; the kernel's side is exercised on a v2 node.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "cgroup-leaf.sh"


def run(root: Path, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), *command],
        env={**os.environ, "FARM_CGROUP_ROOT": str(root)},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def cgroup_v2(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        pytest.skip("the wrapper acts only as root (the workers' uid)")
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("\n")
    (tmp_path / "cgroup.procs").write_text("1\n7\n42\n")
    return tmp_path


def test_moves_processes_to_a_leaf_and_enables_the_controllers(cgroup_v2: Path) -> None:
    done = run(cgroup_v2, "sh", "-c", "echo ran $0", "worker")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ran worker\n"  # the command, with its arguments, ran
    assert (cgroup_v2 / "leaf" / "cgroup.procs").read_text().split() == ["1", "7", "42"]
    assert (cgroup_v2 / "cgroup.subtree_control").read_text() == "+memory +pids\n"


def test_leaves_enabled_controllers_alone(cgroup_v2: Path) -> None:
    (cgroup_v2 / "cgroup.subtree_control").write_text("cpu memory pids\n")
    assert run(cgroup_v2, "true").returncode == 0
    assert not (cgroup_v2 / "leaf").exists()
    assert (cgroup_v2 / "cgroup.subtree_control").read_text() == "cpu memory pids\n"


def test_changes_nothing_on_cgroup_v1(tmp_path: Path) -> None:
    done = run(tmp_path, "sh", "-c", "exit 3")
    assert done.returncode == 3  # exec'd: the command's own status
    assert list(tmp_path.iterdir()) == []
