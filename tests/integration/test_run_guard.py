"""A test run killed by SIGTERM or SIGKILL leaves no process behind: the
control plane, the test node's pods and every other server it started go
with it (tests/support/runguard.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support import runguard
from tests.support.probes.run_to_be_killed import start_time

PROBE = "tests/support/probes/run_to_be_killed.py"


def _alive(pid: int, started: str) -> bool:
    try:
        return start_time(pid) == started
    except (OSError, IndexError):
        return False


def test_this_run_is_guarded() -> None:
    """The suite itself runs in a guarded cgroup (CI runs as root): were it
    not, a killed CI run would leave its servers behind."""
    mount = runguard.cgroup2_mount()
    assert mount is not None, "no cgroup v2 hierarchy: the run guard cannot work here"
    own = runguard.own_cgroup(mount)
    assert own is not None
    assert any(part.startswith(runguard.PREFIX) for part in own.parts), own


@pytest.mark.parametrize("sent", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_a_killed_run_takes_its_servers_with_it(tmp_path: Path, sent: signal.Signals) -> None:
    pids_file = tmp_path / "pids.json"
    env = {**os.environ, "MODELGATE_PROBE_PIDS": str(pids_file)}
    env.pop("PYTEST_XDIST_WORKER", None)
    with (tmp_path / "run.log").open("wb") as log:
        run = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:randomly", "-p", "no:cacheprovider",
             f"--basetemp={tmp_path / 'base'}", PROBE],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 240
        while not pids_file.exists():
            assert run.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-3000:]
            time.sleep(0.5)
        started = {
            name: (pid, when) for name, (pid, when) in json.loads(pids_file.read_text()).items()
        }
        assert {"etcd", "kube-apiserver", "kube-controller-manager", "pod", "worker"} <= set(
            started
        )
        assert all(_alive(pid, when) for pid, when in started.values())
        mount = runguard.cgroup2_mount()
        assert mount is not None
        cgroup = runguard.own_cgroup(mount, run.pid)
        assert cgroup is not None
        assert cgroup.name == f"{runguard.PREFIX}{run.pid}"

        os.kill(run.pid, sent)
        run.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            left = {name for name, (pid, when) in started.items() if _alive(pid, when)}
            if not left and not cgroup.exists():
                break
            time.sleep(0.2)
        assert left == set(), f"still running after the run was killed: {sorted(left)}"
        assert not cgroup.exists()
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
            run.wait()
