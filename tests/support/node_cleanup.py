"""What a real node (tests/support/realnode.py) leaves on the machine, and
how it goes: after its own teardown, and when a killed run left it.

Every trace of a node carries its tag: its directory and cgroups are named
``modelgate-node-<tag>``, its bridge ``mg<tag>``, its CNI network
``modelgate-<tag>`` (the comment on its iptables rules). Its cgroups sit
under the run's own cgroup (tests/support/runguard.py), so the containers die
with the run however it ends: a killed run leaves only things that do not
run (mounts, cgroup directories, a bridge, iptables rules), and the next
node's start reaps them.
"""

from __future__ import annotations

import contextlib
import shlex
import shutil
import subprocess
from pathlib import Path

from tests.support.controlplane import BIN
from tests.support.runguard import PREFIX as RUN_PREFIX
from tests.support.runguard import cgroup2_mount, own_cgroup, populated

CGROUPS = Path("/sys/fs/cgroup")
# A node's containerd and kubelet roots: /var/lib/modelgate-node-<tag>.
STATE_ROOT = Path("/var/lib")
NODE_PREFIX = "modelgate-node-"
# Rules the kubelet and kube-proxy write outside their own chains' names.
KUBE_CHAINS = ("KUBE-FIREWALL", "KUBE-KUBELET-CANARY", "KUBE-IPTABLES-HINT")


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)


def v1_hierarchies() -> list[Path]:
    """The cgroup v1 hierarchies (a hybrid host: v2 is at ``unified``)."""
    if not CGROUPS.is_dir():
        return []
    unified = cgroup2_mount()
    return [
        path
        for path in CGROUPS.iterdir()
        if path.is_dir() and path != unified and (path / "cgroup.procs").exists()
    ]


def run_cgroup() -> str:
    """This process's cgroup v2 path ("/..."): the run guard's, under a guard."""
    mount = cgroup2_mount()
    own = own_cgroup(mount) if mount is not None else None
    if mount is None or own is None:
        return "/"
    return "/" + str(own.relative_to(mount)).strip(".").strip("/")


def node_cgroup(tag: str) -> str:
    """The kubelet's cgroup root: inside the run's cgroup, so that runc,
    which puts each container into the same path of the v2 hierarchy too,
    puts it where the run guard kills it."""
    return (run_cgroup().rstrip("/") + f"/{NODE_PREFIX}{tag}").replace("//", "/")


def make_cgroups(path: str) -> list[Path]:
    """The cgroup root in every v1 hierarchy (the kubelet refuses a missing
    one), each cpuset level with its parent's CPUs and memory nodes; the
    directories made, for :func:`remove_made`."""
    made = []
    for hierarchy in v1_hierarchies():
        current = hierarchy
        for part in path.strip("/").split("/"):
            current = current / part
            if not current.is_dir():
                current.mkdir()
                made.append(current)
                if hierarchy.name == "cpuset":
                    for name in ("cpuset.cpus", "cpuset.mems"):
                        (current / name).write_text((current.parent / name).read_text())
    return made


def remove_made(made: list[Path]) -> list[str]:
    """Remove the cgroup directories :func:`make_cgroups` made, deepest first."""
    left = []
    for cgroup in sorted(made, key=lambda p: len(p.parts), reverse=True):
        try:
            if cgroup.is_dir():
                cgroup.rmdir()
        except OSError as error:
            left.append(f"cgroup {cgroup}: {error}")
    return left


def remove_cgroups(path: str) -> list[str]:
    """Remove the node's cgroups, deepest first, in every hierarchy; what
    could not go (a process still in it) is returned."""
    left = []
    mount = cgroup2_mount()
    for hierarchy in [*v1_hierarchies(), *([mount] if mount is not None else [])]:
        top = hierarchy / path.strip("/")
        if not top.is_dir():
            continue
        for cgroup in sorted(
            (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                cgroup.rmdir()
        try:
            top.rmdir()
        except OSError as error:
            left.append(f"cgroup {top}: {error}")
    return left


def remove_network(tag: str, pod_subnet_prefix: str) -> list[str]:
    """The bridge, the pods' network namespaces, the CNI plugin's iptables
    rules and chains of node ``tag``."""
    _run("ip", "link", "delete", f"mg{tag}")
    netns = Path("/var/run/netns")
    for namespace in sorted(netns.glob("cni-*")) if netns.exists() else []:
        addresses = _run("ip", "netns", "exec", namespace.name, "ip", "-4", "-o", "addr").stdout
        # Ours: an address in the pods' subnet, or no interface but lo left.
        if pod_subnet_prefix in addresses or "eth0" not in addresses:
            _run("ip", "netns", "delete", namespace.name)
    network = f"modelgate-{tag}"
    rules = _run("iptables-save", "-t", "nat").stdout.splitlines()
    ours = [line for line in rules if line.startswith("-A ") and network in line]
    chains = {word for line in ours for word in shlex.split(line) if word.startswith("CNI-")}
    for line in ours:
        _run("iptables", "-t", "nat", "-D", *shlex.split(line)[1:])
    for chain in chains:
        _run("iptables", "-t", "nat", "-F", chain)
        _run("iptables", "-t", "nat", "-X", chain)
    if network in _run("iptables-save", "-t", "nat").stdout:
        return [f"iptables rules of {network} remain"]
    return []


def remove_kube_chains() -> list[str]:
    """The kubelet's and kube-proxy's own chains (kube-proxy --cleanup does
    most; these it leaves), in iptables and ip6tables."""
    left = []
    for tool in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            saved = _run(f"{tool}-save", "-t", table).stdout.splitlines()
            for line in saved:
                words = shlex.split(line) if line.startswith("-A ") else []
                if words and words[1] not in KUBE_CHAINS and any(c in words for c in KUBE_CHAINS):
                    _run(tool, "-t", table, "-D", *words[1:])
            for chain in KUBE_CHAINS:
                _run(tool, "-t", table, "-F", chain)
                _run(tool, "-t", table, "-X", chain)
            if any(chain in _run(f"{tool}-save", "-t", table).stdout for chain in KUBE_CHAINS):
                left.append(f"{tool} {table}: kube chains remain")
    return left


def unmount_under(directory: Path) -> list[str]:
    """Unmount everything mounted below ``directory``, deepest first."""
    prefix = str(directory.resolve()) + "/"
    for _ in range(3):
        mounts = _mounts_with(prefix)
        if not mounts:
            return []
        for mount in sorted(mounts, key=len, reverse=True):
            _run("umount", "--lazy", mount)
    return [f"mounts remain under {prefix}"]


def _mounts_with(fragment: str) -> list[str]:
    return [
        line.split()[1]
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if fragment in line.split()[1]
    ]


def stale_tags() -> set[str]:
    """Tags of nodes whose run is gone: their v2 cgroup is missing or empty
    (the run guard killed it) while their v1 cgroups or mounts remain."""
    mount = cgroup2_mount()
    seen: set[str] = set()
    for hierarchy in [*v1_hierarchies(), *([mount] if mount is not None else [])]:
        seen |= _node_dirs(hierarchy)
    seen |= {p.name.removeprefix(NODE_PREFIX) for p in STATE_ROOT.glob(f"{NODE_PREFIX}*")}
    for path in _mounts_with(f"/{NODE_PREFIX}"):
        fragment = path.split(f"/{NODE_PREFIX}", 1)[1]
        seen.add(fragment.split("/", 1)[0])
    stale = set()
    for tag in seen:
        alive = mount is not None and any(
            populated(p) for p in _node_dirs_named(mount, f"{NODE_PREFIX}{tag}")
        )
        if not alive:
            stale.add(tag)
    return stale


def _node_dirs(hierarchy: Path) -> set[str]:
    # A node's cgroup is at the top or under a run's cgroup: two levels at most.
    found = set()
    for pattern in (f"{NODE_PREFIX}*", f"*/{NODE_PREFIX}*"):
        found |= {p.name.removeprefix(NODE_PREFIX) for p in hierarchy.glob(pattern) if p.is_dir()}
    return found


def _node_dirs_named(hierarchy: Path, name: str) -> list[Path]:
    return [p for pattern in (name, f"*/{name}") for p in hierarchy.glob(pattern) if p.is_dir()]


def reap_stale(pod_subnet_prefix: str) -> list[str]:
    """Remove what nodes of killed runs left; the tags reaped."""
    reaped = []
    for tag in sorted(stale_tags()):
        for path in _mounts_with(f"/{NODE_PREFIX}{tag}/"):
            _run("umount", "--lazy", path)
        remove_network(tag, pod_subnet_prefix)
        for hierarchy in v1_hierarchies():
            for cgroup in _node_dirs_named(hierarchy, f"{NODE_PREFIX}{tag}"):
                remove_cgroups("/" + str(cgroup.relative_to(hierarchy)))
        mount = cgroup2_mount()
        for cgroup in _node_dirs_named(mount, f"{NODE_PREFIX}{tag}") if mount else []:
            remove_cgroups("/" + str(cgroup.relative_to(mount)))
        shutil.rmtree(STATE_ROOT / f"{NODE_PREFIX}{tag}", ignore_errors=True)
        reaped.append(tag)
    # The run cgroups the nodes were made under, in the v1 hierarchies, of
    # runs that are over (the guard removes only the v2 one).
    mount = cgroup2_mount()
    for hierarchy in v1_hierarchies():
        for run in hierarchy.glob(f"{RUN_PREFIX}*"):
            if mount is None or not (mount / run.name).exists():
                remove_cgroups("/" + run.name)
    if reaped:
        # kube-proxy's Service rules: its own --cleanup knows them all.
        proxy = BIN / "kube-proxy"
        if proxy.exists():
            _run(str(proxy), "--cleanup", "--v=0")
        remove_kube_chains()
    return reaped
