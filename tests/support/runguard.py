"""Every process a test run starts dies with the run, however the run ends.

The tests start servers in sessions of their own (etcd, kube-apiserver, the
controller manager, the node's pods, model servers, MLflow, operators), so
that a test can signal a whole process group. A pytest killed by SIGTERM or
SIGKILL runs no teardown, and those servers would outlive it. So before any
test starts, the run's controller (pytest's main process; xdist's workers are
its children) moves itself into a cgroup of its own: every process started
after that belongs to it, whatever session it makes or whoever it is
reparented to. A watchdog outside the cgroup waits for the controller to
exit (a pidfd, so a reused pid cannot fool it), then kills the cgroup whole
(``cgroup.kill``) and removes it. Cgroups left by runs whose watchdog died
too are reaped when the next run starts.

It needs a writable cgroup v2 hierarchy (root, as in CI); elsewhere
:func:`guard` says why there is no guard and the run goes on without one.

Run as a script, this module is the watchdog: ``runguard.py PID CGROUP``.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from pathlib import Path

PREFIX = "modelgate-run-"


def cgroup2_mount() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup`` on a
    unified host, ``/sys/fs/cgroup/unified`` on a hybrid one)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        separator = fields.index("-")
        if fields[separator + 1] == "cgroup2":
            return Path(fields[4])
    return None


def own_cgroup(mount: Path, pid: int | str = "self") -> Path | None:
    """The cgroup v2 directory of a process."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            return mount / line[3:].lstrip("/")
    return None


def members(cgroup: Path) -> list[int]:
    """The processes directly in a cgroup."""
    try:
        return [int(p) for p in (cgroup / "cgroup.procs").read_text().split()]
    except OSError:
        return []


def populated(cgroup: Path) -> bool:
    """Whether any process is left in the cgroup or below it."""
    try:
        for line in (cgroup / "cgroup.events").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "populated":
                return value.strip() == "1"
    except OSError:
        return False
    return False


def kill_and_remove(cgroup: Path, timeout: float = 30) -> None:
    """Kill every process in the cgroup and below it, then remove the cgroups."""
    if not cgroup.exists():
        return
    try:
        (cgroup / "cgroup.kill").write_text("1")
    except OSError:
        # Kernels before 5.14 have no cgroup.kill: signal each member.
        for below in sorted(cgroup.rglob("cgroup.procs"), reverse=True):
            for pid in members(below.parent):
                _signal(pid)
    deadline = time.monotonic() + timeout
    while populated(cgroup) and time.monotonic() < deadline:
        time.sleep(0.05)
    # Deepest first: a cgroup with children cannot be removed.
    for directory in sorted((p for p in cgroup.rglob("*") if p.is_dir()), reverse=True):
        _rmdir(directory)
    _rmdir(cgroup)


def _signal(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _rmdir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        directory.rmdir()


def reap_stale(parent: Path) -> list[Path]:
    """Cgroups of earlier runs under ``parent`` whose controller is gone
    (its watchdog killed with it): their processes are killed, they go."""
    reaped = []
    for cgroup in parent.glob(f"{PREFIX}*"):
        controller = cgroup.name.removeprefix(PREFIX)
        if controller.isdigit() and int(controller) in members(cgroup):
            continue  # a run in progress (another clone's, say)
        kill_and_remove(cgroup)
        reaped.append(cgroup)
    return reaped


def guard() -> str:
    """Put this process (the run's controller) and everything it will start
    into a cgroup that a watchdog kills when it exits. Returns a line for the
    run's header: the cgroup, or why there is none."""
    mount = cgroup2_mount()
    if mount is None:
        return "off: no cgroup v2 hierarchy is mounted"
    parent = own_cgroup(mount)
    if parent is None or not os.access(parent, os.W_OK):
        return f"off: the cgroup {parent} is not writable (the guard needs root)"
    reap_stale(parent)
    cgroup = parent / f"{PREFIX}{os.getpid()}"
    try:
        cgroup.mkdir()
    except OSError as error:
        return f"off: cannot make {cgroup}: {error}"
    # The watchdog starts before the move, so it stays outside the cgroup;
    # its own session and no inherited output keep it out of the run's way.
    # Spawned, not Popen'd: nothing here waits for it, so no Popen object
    # may be left to complain that it still runs.
    quiet = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_RDWR, 0) for fd in (0, 1, 2)]
    os.posix_spawn(
        sys.executable,
        [sys.executable, __file__, str(os.getpid()), str(cgroup)],
        os.environ,
        file_actions=quiet,
        setsid=True,
    )
    try:
        (cgroup / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as error:
        _rmdir(cgroup)
        return f"off: cannot move the run into {cgroup}: {error}"
    return f"on: {cgroup}"


def watch(controller: int, cgroup: Path) -> None:
    """Wait until the controller exits, then kill and remove its cgroup."""
    try:
        handle = os.pidfd_open(controller)
    except ProcessLookupError:
        handle = None
    if handle is not None:
        select.select([handle], [], [])
        os.close(handle)
    kill_and_remove(cgroup)


if __name__ == "__main__":
    watch(int(sys.argv[1]), Path(sys.argv[2]))
