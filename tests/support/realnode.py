"""A real node joined to a real control plane: containerd and runc run the
pods' containers, a kubelet registered as a kubelet registers (its own client
certificate, the Node authorizer and NodeRestriction), kube-proxy routes
Services, CNI's bridge plugin gives each pod an address on a bridge of the
machine. The images are the OCI archives `make images` writes
(.tools/images), imported into this containerd.

Everything lives in a throwaway directory: containerd's root, state and
socket, the kubelet's root, the CNI configuration and every log. ``stop()``
removes what it made, after a failure too: the pods, every container and
sandbox, containerd, the bridge, the pods' network namespaces, kube-proxy's
and CNI's iptables chains, the mounts under the directory and the cgroups of
the pods. A killed run leaves nothing running either: every process here is
a child of the test run, in its run guard's cgroup (tests/support/runguard.py).

What NODE.md records and this relies on: containerd needs
``restrict_oom_score_adj`` (the machine lacks CAP_SYS_RESOURCE); cgroups are
v1 hierarchies, so the kubelet runs the cgroupfs driver under a cgroup root of
its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.support.controlplane import BIN, ROOT, Component, ControlPlane
from tests.support.node_cleanup import (
    NODE_PREFIX,
    STATE_ROOT,
    make_cgroups,
    node_cgroup,
    reap_stale,
    remove_cgroups,
    remove_kube_chains,
    remove_made,
    remove_network,
    unmount_under,
)
from tests.support.s3server import free_port

IMAGES = Path(os.environ.get("MODELGATE_IMAGES", ROOT / ".tools" / "images"))
# The images the node runs, by archive (scripts/build-images.sh) and name.
IMAGE_ARCHIVES = ("pause", "coredns", "modelgate", "s3", "prometheus", "mlserver", "mlflow")
PAUSE_IMAGE = "localhost/modelgate/pause:1"
MODELGATE_IMAGE = "localhost/modelgate:dev"
POD_SUBNET = "10.244.0.0/24"
POD_PREFIX = "10.244.0."
CLUSTER_DOMAIN = "cluster.local"
CLUSTER_DNS = "10.0.0.10"  # deploy/node/coredns.yaml's Service
ADDONS = (ROOT / "deploy" / "node" / "coredns.yaml",)
SYSCTLS = {
    # Service traffic is DNAT'd by the host and routed back to the bridge.
    "/proc/sys/net/ipv4/ip_forward": "1",
    # Bridged pod-to-pod replies pass through iptables (kube-proxy's conntrack).
    "/proc/sys/net/bridge/bridge-nf-call-iptables": "1",
}


class RealNodeUnavailable(RuntimeError):
    """Something the node needs is missing; the message says how to get it."""


def requirements() -> list[str]:
    """What is missing for a real node, each with how to get it."""
    missing = []
    for tool, package in (
        ("containerd", "containerd"),
        ("runc", "runc"),
        ("ctr", "containerd"),
        ("iptables", "iptables"),
        ("conntrack", "conntrack"),
    ):
        if shutil.which(tool) is None:
            missing.append(f"{tool} (Debian package {package})")
    if not Path("/usr/lib/cni/bridge").exists():
        missing.append("CNI plugins (Debian package containernetworking-plugins)")
    for binary in ("kubelet", "kube-proxy", "kube-scheduler"):
        if not os.access(BIN / binary, os.X_OK):
            missing.append(f"{binary} (`make controlplane`)")
    for archive in IMAGE_ARCHIVES:
        if not (IMAGES / f"{archive}.tar").exists():
            missing.append(f"image {archive} (`make node-images`)")
    return missing


@dataclass
class RealNode:
    """containerd + kubelet + kube-proxy on this machine, as node ``name``."""

    directory: Path
    plane: ControlPlane
    name: str = "modelgate-node"
    components: dict[str, Component] = field(default_factory=dict)
    # The pods' bridge and cgroup root: unique, so that nothing of another
    # run's is touched.
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    _saved_sysctls: dict[str, str] = field(default_factory=dict)
    _cgroup_root: str = ""
    _kubelet_args: list[str] = field(default_factory=list)
    _cgroups_made: list[Path] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"mg{self.tag}"

    @property
    def cgroup_root(self) -> str:
        return self._cgroup_root or node_cgroup(self.tag)

    @property
    def state(self) -> Path:
        """containerd's and the kubelet's roots and sockets. Short: a unix
        socket's path has at most 107 bytes, the kubelet makes sockets deep
        in its root, and a test's directory is deep already."""
        return STATE_ROOT / f"{NODE_PREFIX}{self.tag}"

    @property
    def containerd_socket(self) -> Path:
        return self.state / "containerd.sock"

    # ---- start ------------------------------------------------------------

    def start(self, timeout: float = 180) -> RealNode:
        missing = requirements()
        if missing:
            raise RealNodeUnavailable("the real node needs: " + "; ".join(missing))
        reap_stale(POD_PREFIX)
        # The tag in the path: a killed run's mounts are found by it.
        self.directory = self.directory / f"{NODE_PREFIX}{self.tag}"
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "logs").mkdir(exist_ok=True)
        self.state.mkdir(parents=True)
        self._cgroup_root = node_cgroup(self.tag)
        for path, value in SYSCTLS.items():
            self._saved_sysctls[path] = Path(path).read_text().strip()
            Path(path).write_text(value)
        try:
            self._start_containerd(timeout)
            self._import_images()
            self._start_kubelet(timeout)
            self._start_kube_proxy()
            self._start_addons(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _component(self, name: str, args: list[str]) -> Component:
        component = Component(name, args, self.directory / "logs" / f"{name}.log")
        self.components[name] = component
        component.start()
        return component

    def _start_containerd(self, timeout: float) -> None:
        cni_conf = self.directory / "net.d"
        cni_conf.mkdir(exist_ok=True)
        (cni_conf / "10-modelgate.conflist").write_text(
            json.dumps(
                {
                    "cniVersion": "1.0.0",
                    "name": f"modelgate-{self.tag}",
                    "plugins": [
                        {
                            "type": "bridge",
                            "bridge": self.bridge,
                            "isGateway": True,
                            "ipMasq": True,
                            "hairpinMode": True,
                            "ipam": {
                                "type": "host-local",
                                "ranges": [[{"subnet": POD_SUBNET}]],
                                "routes": [{"dst": "0.0.0.0/0"}],
                                "dataDir": str(self.directory / "cni-ipam"),
                            },
                        },
                        {"type": "portmap", "capabilities": {"portMappings": True}},
                        {"type": "loopback"},
                    ],
                },
                indent=2,
            )
        )
        config = self.directory / "containerd.toml"
        config.write_text(
            "\n".join(
                [
                    "version = 2",
                    f'root = "{self.state / "containerd" / "root"}"',
                    f'state = "{self.state / "containerd" / "state"}"',
                    "[grpc]",
                    f'  address = "{self.containerd_socket}"',
                    "[ttrpc]",
                    f'  address = "{self.containerd_socket.with_suffix(".ttrpc")}"',
                    "[debug]",
                    '  level = "info"',
                    "[metrics]",
                    '  address = ""',
                    '[plugins."io.containerd.grpc.v1.cri"]',
                    f'  sandbox_image = "{PAUSE_IMAGE}"',
                    # Required here: without CAP_SYS_RESOURCE runc cannot
                    # lower a process's oom_score_adj (NODE.md).
                    "  restrict_oom_score_adj = true",
                    '  [plugins."io.containerd.grpc.v1.cri".containerd]',
                    '    snapshotter = "overlayfs"',
                    '  [plugins."io.containerd.grpc.v1.cri".cni]',
                    '    bin_dir = "/usr/lib/cni"',
                    f'    conf_dir = "{cni_conf}"',
                    "",
                ]
            )
        )
        containerd = self._component(
            "containerd", [shutil.which("containerd") or "containerd", f"--config={config}"]
        )
        self._wait(
            lambda: self._ctr("version", check=False).returncode == 0,
            timeout,
            "containerd",
            containerd,
        )

    def _ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"ctr {' '.join(args)} failed: {done.stderr}")
        return done

    def _import_images(self) -> None:
        for archive in IMAGE_ARCHIVES:
            # --no-unpack would defer the unpacking to the first pod; do it now.
            self._ctr("images", "import", "--snapshotter=overlayfs", str(IMAGES / f"{archive}.tar"))

    def images(self) -> list[str]:
        """The image names this node's containerd holds."""
        listed = self._ctr("images", "list", "--quiet").stdout.split()
        return [name for name in listed if not name.startswith("sha256:")]

    def _start_kubelet(self, timeout: float) -> None:
        plane = self.plane
        assert plane.ca is not None
        pki = self.directory / "pki"
        ca = plane.ca
        kubelet_cert = ca.client(
            f"kubelet-{self.tag}", f"system:node:{self.name}", ("system:nodes",)
        )
        kubeconfig = plane.write_kubeconfig(
            self.directory / "kubelet.kubeconfig", "kubelet", cert=kubelet_cert
        )
        pki.mkdir(exist_ok=True)
        serving = ca.serving(f"kubelet-serving-{self.tag}", (self.name, plane.advertise_address))
        root = self.state / "kubelet"
        root.mkdir(exist_ok=True)
        self._cgroups_made = make_cgroups(self.cgroup_root)
        configuration = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": plane.advertise_address,
            "port": free_port(),
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port(),
            "tlsCertFile": str(serving.cert),
            "tlsPrivateKeyFile": str(serving.key),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(ca.cert_path)},
            },
            "authorization": {"mode": "Webhook"},
            "containerRuntimeEndpoint": f"unix://{self.containerd_socket}",
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": self.cgroup_root,
            "failSwapOn": False,
            # The machine lacks CAP_SYS_RESOURCE: the kubelet may not lower
            # its own oom_score_adj.
            "oomScoreAdj": 0,
            # Its firewall and canary chains would outlive it; kube-proxy
            # does the Service rules.
            "makeIPTablesUtilChains": False,
            "clusterDomain": CLUSTER_DOMAIN,
            "clusterDNS": [CLUSTER_DNS],
            "resolvConf": "/etc/resolv.conf",
            # The tests' disks are shared and often fuller than a node's: evict
            # and collect images only when nearly nothing is left.
            "evictionHard": {
                "memory.available": "100Mi",
                "nodefs.available": "1%",
                "imagefs.available": "1%",
                "nodefs.inodesFree": "1%",
            },
            "imageGCHighThresholdPercent": 99,
            "imageGCLowThresholdPercent": 98,
            "serializeImagePulls": False,
            "maxPods": 60,
            "nodeStatusUpdateFrequency": "5s",
            "syncFrequency": "10s",
            "fileCheckFrequency": "10s",
            "localStorageCapacityIsolation": True,
        }
        config_path = self.directory / "kubelet.yaml"
        config_path.write_text(yaml.safe_dump(configuration))
        self._kubelet_args = [
            str(BIN / "kubelet"),
            f"--config={config_path}",
            f"--kubeconfig={kubeconfig}",
            f"--root-dir={root}",
            f"--hostname-override={self.name}",
            f"--node-ip={plane.advertise_address}",
            f"--cert-dir={pki}",
            "--v=1",
        ]
        kubelet = self._component("kubelet", self._kubelet_args)
        self._wait(self._node_ready, timeout, f"node {self.name} Ready", kubelet)

    def restart_kubelet(self, timeout: float = 120) -> None:
        """Stop the kubelet and start it again: running pods stay running."""
        kubelet = self.components["kubelet"]
        kubelet.stop()
        kubelet.start()
        self._wait(self._node_ready, timeout, f"node {self.name} Ready after a restart", kubelet)

    def _node_ready(self) -> bool:
        done = self.plane.kubectl("get", "node", self.name, "-o", "json", check=False)
        if done.returncode != 0:
            return False
        conditions = json.loads(done.stdout).get("status", {}).get("conditions", [])
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    def _start_kube_proxy(self) -> None:
        plane = self.plane
        assert plane.ca is not None
        cert = plane.ca.client(f"kube-proxy-{self.tag}", "system:kube-proxy")
        kubeconfig = plane.write_kubeconfig(
            self.directory / "kube-proxy.kubeconfig", "kube-proxy", cert=cert
        )
        configuration = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(kubeconfig)},
            "hostnameOverride": self.name,
            "mode": "iptables",
            "clusterCIDR": POD_SUBNET,
            "bindAddress": "0.0.0.0",
            "healthzBindAddress": f"127.0.0.1:{free_port()}",
            "metricsBindAddress": f"127.0.0.1:{free_port()}",
            # Leave the machine's conntrack table size alone.
            "conntrack": {"maxPerCore": 0},
            "oomScoreAdj": 0,
        }
        config_path = self.directory / "kube-proxy.yaml"
        config_path.write_text(yaml.safe_dump(configuration))
        self._component("kube-proxy", [str(BIN / "kube-proxy"), f"--config={config_path}", "--v=1"])

    def _start_addons(self, timeout: float) -> None:
        """Cluster DNS, as a cluster's add-ons run: pods of the node."""
        for manifest in ADDONS:
            self.plane.kubectl("apply", "-f", str(manifest))
        self.plane.kubectl(
            "-n",
            "kube-system",
            "rollout",
            "status",
            "deployment/coredns",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 30,
        )

    def _wait(self, ready: Any, timeout: float, what: str, component: Component) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not component.alive():
                raise RuntimeError(
                    f"{component.name} exited while waiting for {what}:\n{component.tail()}"
                )
            with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
                if ready():
                    return
            time.sleep(0.5)
        raise RuntimeError(f"timed out after {timeout}s waiting for {what}\n{self.logs_tail()}")

    # ---- stop -------------------------------------------------------------

    def stop(self) -> None:
        """Remove every pod, container, network and mount this node made."""
        errors: list[str] = []
        kubelet = self.components.get("kubelet")
        if kubelet is not None and kubelet.alive():
            self._drain(errors)
            kubelet.stop()
        if "kube-proxy" in self.components:
            self.components["kube-proxy"].stop()
            subprocess.run(
                [str(BIN / "kube-proxy"), "--cleanup", "--v=0"],
                capture_output=True,
                check=False,
                timeout=60,
            )
        containerd = self.components.get("containerd")
        if containerd is not None and containerd.alive():
            self._remove_containers(errors)
        if containerd is not None:
            containerd.stop()
        errors += remove_network(self.tag, POD_PREFIX)
        errors += remove_kube_chains()
        errors += unmount_under(self.state)
        errors += remove_cgroups(self.cgroup_root)
        errors += remove_made(self._cgroups_made)
        for path, value in self._saved_sysctls.items():
            with contextlib.suppress(OSError):
                Path(path).write_text(value)
        # Image layers and the kubelet's volumes go; the logs stay.
        shutil.rmtree(self.state, ignore_errors=True)
        if errors:
            raise RuntimeError("the real node left things behind: " + "; ".join(errors))

    def _drain(self, errors: list[str]) -> None:
        """Take every pod off the node through the API, so that the kubelet
        tears its sandboxes down as it does (CNI DEL: the pod's address,
        veth and port mappings go)."""
        self.plane.kubectl("cordon", self.name, check=False)
        self.plane.kubectl(
            "delete",
            "pods",
            "--all-namespaces",
            f"--field-selector=spec.nodeName={self.name}",
            "--grace-period=1",
            "--wait=false",
            check=False,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not self._ctr("tasks", "list", "--quiet", check=False).stdout.split():
                return
            time.sleep(1)
        errors.append("pods still running a minute after they were deleted")

    def _remove_containers(self, errors: list[str]) -> None:
        """Whatever the kubelet did not remove: kill and delete it."""
        deadline = time.monotonic() + 30
        while tasks := self._ctr("tasks", "list", "--quiet", check=False).stdout.split():
            for task in tasks:
                self._ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
                self._ctr("tasks", "delete", "--force", task, check=False)
            if time.monotonic() > deadline:
                errors.append(f"containerd tasks would not go: {tasks}")
                break
            time.sleep(0.5)
        for container in self._ctr("containers", "list", "--quiet", check=False).stdout.split():
            self._ctr("containers", "delete", container, check=False)

    def logs_tail(self, lines: int = 40) -> str:
        return "\n".join(
            f"--- {name} (last {lines} lines) ---\n{component.tail(lines)}"
            for name, component in self.components.items()
        )


@contextlib.contextmanager
def running_real_node(directory: Path) -> Iterator[tuple[ControlPlane, RealNode]]:
    """A control plane made for a real node, and the node joined to it."""
    from tests.support.controlplane import running_control_plane  # noqa: PLC0415

    with running_control_plane(directory / "controlplane", for_real_node=True) as plane:
        node = RealNode(directory / "node", plane).start()
        try:
            yield plane, node
        finally:
            node.stop()


def main(argv: list[str]) -> int:
    """`make node-up`: the real node and its control plane in the foreground,
    until Ctrl-C; the admin kubeconfig at DIRECTORY/kubeconfig."""
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    directory = Path(argv[0] if argv else ROOT / ".tools" / "node").resolve()
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    with running_real_node(directory) as (plane, node):
        kubeconfig = directory / "kubeconfig"
        shutil.copy(plane.admin_kubeconfig(), kubeconfig)
        print(
            f"node {node.name} is Ready; images: {', '.join(node.images())}\n\n"
            f"  export KUBECONFIG={kubeconfig} PATH={BIN}:$PATH\n"
            "  make deploy IMAGE_REPO=localhost/modelgate IMAGE_TAG=dev\n"
            "  make sample IMAGE_REPO=localhost/modelgate IMAGE_TAG=dev\n"
            "  kubectl -n team get modelreleases -w\n\n"
            "Ctrl-C stops the node and removes everything it made.",
            flush=True,
        )
        stop.wait()
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(main(sys.argv[1:]))
