"""Shared fixtures. The e2e tier runs on a real node started here, or with
--with-e2e on the current kubectl context (kind)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.support.controlplane import ControlPlane

# The operator's handlers read their resync interval when first imported; the
# operator tests need it short. Set before any test module imports them.
os.environ.setdefault("MODELGATE_RESYNC_SECONDS", "0.5")
# The operators run against the kmock emulator (tests/integration) read from
# the API server on every reconcile (MODELGATE_CACHE=false): their faults are
# injected into those reads, and the emulator has no label selectors. The
# operators on the real control plane (tests/realcluster) get their env from
# the chart and read from watches, as installed.
os.environ.setdefault("MODELGATE_CACHE", "false")

ROOT = Path(__file__).resolve().parent.parent
RUN_GUARD = pytest.StashKey[str]()
EXAMPLES = ROOT / "examples"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """The run's controller (not xdist's workers, its children) puts itself
    and all it will start into a cgroup that dies with it."""
    if not hasattr(config, "workerinput") and sys.platform == "linux":
        from tests.support.runguard import guard  # noqa: PLC0415

        config.stash[RUN_GUARD] = guard()


def pytest_report_header(config: pytest.Config) -> str | None:
    guarded = config.stash.get(RUN_GUARD, None)
    return None if guarded is None else f"run guard: {guarded}"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--with-e2e",
        action="store_true",
        default=False,
        help="run the e2e tier against the current kubectl context (kind) instead of "
        "the real node the tests start",
    )


# Tests that write a ModelRelease's status themselves (to prove what the
# server does with it), which a running operator would overwrite: they run
# before any test starts one, in whatever order the rest runs.
BEFORE_ANY_OPERATOR = ("tests/realcluster/test_crds_on_apiserver.py",)


# The real control plane and its operators are one session's world: every
# test on it runs in one xdist worker; the real node's (the e2e tier) is
# another; the rest is dealt out a file at a time (a module's fixtures are
# built once).
CONTROL_PLANE_TESTS = "tests/realcluster/"
REAL_NODE_TESTS = "tests/e2e/"


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """xdist's scope scheduling, with the control plane's tests as one scope."""
    from xdist.scheduler import LoadScopeScheduling  # noqa: PLC0415  (only under xdist)

    class ControlPlaneTogether(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path.startswith(CONTROL_PLANE_TESTS):
                return "control-plane"
            return "real-node" if path.startswith(REAL_NODE_TESTS) else path

        def _assign_work_unit(self, node: Any) -> None:
            # The two long scopes start at once, one per worker, and the files
            # are dealt around them. Ordered by test count, the real node's
            # eleven slow tests would come last and run alone at the end.
            for first in ("control-plane", "real-node"):
                if first in self.workqueue:
                    self.workqueue.move_to_end(first, last=False)
                    break
            super()._assign_work_unit(node)

    return ControlPlaneTogether(config, log)


@pytest.hookimpl(trylast=True)  # after pytest-randomly has shuffled
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    first = [i for i in items if i.nodeid.split("::", 1)[0] in BEFORE_ANY_OPERATOR]
    if first:
        ids = {id(i) for i in first}
        items[:] = first + [i for i in items if id(i) not in ids]


def _stop_local_servers(root: Path) -> None:
    """Stop the model servers local mode left running under ``root``."""
    from modelgate.backends.local import LocalServers  # noqa: PLC0415  (after the env setup above)

    for servers in root.rglob("servers") if root.exists() else []:
        if servers.is_dir():
            LocalServers(servers.parent).stop_all()


@pytest.fixture(autouse=True)
def _local_servers_stopped(request: pytest.FixtureRequest) -> Iterator[None]:
    """Local runs leave model servers running by design: stop a test's own."""
    own = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if own is not None:
        _stop_local_servers(own)


@pytest.fixture(autouse=True, scope="session")
def _every_local_server_stopped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """And those of module-wide state directories, once the session ends."""
    yield
    _stop_local_servers(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """The real etcd, kube-apiserver and kube-controller-manager (built by
    `make controlplane`), shared by the session's tests; each test makes its
    own namespaces. A missing binary is an error, never a skip."""
    from tests.support.controlplane import running_control_plane  # noqa: PLC0415

    with running_control_plane(tmp_path_factory.mktemp("controlplane")) as plane:
        yield plane


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failing test that used the control plane gets its components' logs."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed:
        return
    plane = getattr(item, "funcargs", {}).get("control_plane")
    if plane is None:
        return
    report.sections.append(("control plane logs", plane.logs_tail(60)))
    installation = getattr(item, "funcargs", {}).get("installation")
    for process in installation.operators if installation is not None else []:
        report.sections.append((f"operator log {process.log.name}", process.tail(80)))
    node = getattr(item, "funcargs", {}).get("test_node")
    if node is not None:
        for pod, text in node.logs().items():
            report.sections.append((f"pod {pod}", text))
