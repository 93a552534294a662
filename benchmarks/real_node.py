"""The real node: image sizes, pod start to ready, and a release from
`kubectl apply` to `Released` on real containers against local mode.

    python benchmarks/real_node.py [--runs 1]          (root; after `make tools`)

Brings up the control plane and the real node the e2e tier runs on
(tests/support/realnode.py), installs the chart with `make deploy` as the
README says, then measures:

- the images: the OCI archive each build wrote (compressed, `.tools/images`)
  and the size the kubelet reports for it (containerd's content size: the
  compressed layers; none for the base, which no pod runs);
- pod start to ready, from the API's own timestamps (creation to the Ready
  condition, one-second resolution): a pause pod (the kubelet's floor:
  sandbox, network, no probe), the operator's pod (the chart's probes) and
  the model servers' pods (the reference server loading the model, its
  readiness probe every 5 s);
- the credit-risk sample from `kubectl apply` to `Released` (training Job,
  gate, staging and production Deployments, two verification Jobs), against
  the same sample in local mode (`modelgate run`: processes, no containers),
  the peer it is compared with, run after it on the same machine.

`.ci/run` from a fresh clone, cold and warm, is measured by running it; the
figures are in the README ("How long CI takes").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "operator")]

from tests.e2e.conftest import Cluster, deploy, sample_module  # noqa: E402
from tests.support.realnode import MODELGATE_IMAGE, PAUSE_IMAGE, running_real_node  # noqa: E402

TOOLS = ROOT / ".tools"
SAMPLE = ROOT / "examples" / "credit-risk"
RELEASE = "credit-risk-1-4-0"


def _seconds(start: str, end: str) -> float:
    parse = datetime.fromisoformat
    return (parse(end.replace("Z", "+00:00")) - parse(start.replace("Z", "+00:00"))).total_seconds()


def start_to_ready(pod: dict[str, Any]) -> float:
    """Creation to the Ready condition, by the API server's clock."""
    ready = next(c for c in pod["status"]["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "True", pod["metadata"]["name"]
    return _seconds(pod["metadata"]["creationTimestamp"], ready["lastTransitionTime"])


def kubectl_json(cluster: Cluster, *args: str) -> dict[str, Any]:
    found: dict[str, Any] = json.loads(cluster.run("kubectl", *args, "-o", "json").stdout)
    return found


def image_sizes(cluster: Cluster) -> list[tuple[str, str, int, int]]:
    """(name, reference, archive bytes, bytes as the kubelet reports)."""
    node = kubectl_json(cluster, "get", "nodes")["items"][0]
    unpacked = {
        name: int(image.get("sizeBytes") or 0)
        for image in node["status"].get("images", [])
        for name in image.get("names", [])
    }
    rows = []
    for line in (TOOLS / "images" / "sizes.tsv").read_text().splitlines():
        name, reference, archive, _key = line.split("\t")
        rows.append((name, reference, int(archive), unpacked.get(reference, 0)))
    return rows


def pause_pod_ready(cluster: Cluster, namespace: str) -> float:
    name = f"pause-{uuid.uuid4().hex[:5]}"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "containers": [
                {
                    "name": "pause",
                    "image": PAUSE_IMAGE,
                    "imagePullPolicy": "Never",
                    "securityContext": {
                        "runAsNonRoot": True,
                        "runAsUser": 65532,
                        "allowPrivilegeEscalation": False,
                        "readOnlyRootFilesystem": True,
                        "capabilities": {"drop": ["ALL"]},
                    },
                }
            ]
        },
    }
    cluster.run("kubectl", "apply", "-f", "-", stdin=json.dumps(pod))
    cluster.run(
        "kubectl", "-n", namespace, "wait", "--for=condition=Ready", f"pod/{name}", "--timeout=120s"
    )
    return start_to_ready(kubectl_json(cluster, "-n", namespace, "get", "pod", name))


def release_on_node(cluster: Cluster, namespace: str) -> tuple[float, dict[str, float]]:
    """`kubectl apply` of the sample to Released; the model servers' start to ready."""
    sample = sample_module()
    started = time.monotonic()
    sample.apply(namespace)
    phase, deadline = "", time.monotonic() + 900
    release: dict[str, Any] = {}
    while phase not in {"Released", "GateFailed", "Failed"} and time.monotonic() < deadline:
        time.sleep(1)
        release = kubectl_json(cluster, "-n", namespace, "get", "modelrelease", RELEASE)
        phase = (release.get("status") or {}).get("phase", "")
    elapsed = time.monotonic() - started
    if phase != "Released":
        conditions = (release.get("status") or {}).get("conditions", [])
        why = "; ".join(f"{c['type']}: {c.get('message')}" for c in conditions)
        raise SystemExit(f"the sample ended {phase or 'unfinished'} in {namespace}: {why}")
    servers = {}
    for environment in ("staging", "production"):
        pods = kubectl_json(
            cluster,
            "-n",
            f"{namespace}-{environment}",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=model-server",
        )
        for pod in pods["items"]:
            servers[f"model server ({environment})"] = start_to_ready(pod)
    return elapsed, servers


def release_in_local_mode() -> float:
    with tempfile.TemporaryDirectory() as state:
        started = time.monotonic()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "modelgate",
                "run",
                *(str(SAMPLE / f) for f in ("gate.yaml", "environments.yaml", "release.yaml")),
                "--state-dir",
                state,
                "--reset",
            ],
            check=True,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "operator")},
        )
        elapsed = time.monotonic() - started
        subprocess.run(
            [sys.executable, "-m", "modelgate", "stop", "--state-dir", state],
            check=False,
            capture_output=True,
            env={**os.environ, "PYTHONPATH": str(ROOT / "operator")},
        )
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="sample releases on each side")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="modelgate-bench-") as directory:
        began = time.monotonic()
        with running_real_node(Path(directory)) as (plane, _node):
            node_ready = time.monotonic() - began
            environment = {
                "KUBECONFIG": str(plane.admin_kubeconfig()),
                "PATH": f"{TOOLS / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
                "MODELGATE_IMAGE": MODELGATE_IMAGE,  # the sample's training image
            }
            os.environ.update(environment)  # scripts/kind_sample.py calls kubectl
            cluster = Cluster(environment, MODELGATE_IMAGE)
            began = time.monotonic()
            deploy(cluster, *MODELGATE_IMAGE.rsplit(":", 1))
            deployed = time.monotonic() - began
            sizes = image_sizes(cluster)
            operator = kubectl_json(
                cluster,
                "-n",
                "modelgate-system",
                "get",
                "pods",
                "-l",
                "app.kubernetes.io/name=modelgate",
            )["items"][0]
            cluster.run("kubectl", "create", "namespace", "bench")
            floor = pause_pod_ready(cluster, "bench")
            on_node = [release_on_node(cluster, f"bench-{run}") for run in range(options.runs)]
        local = [release_in_local_mode() for _ in range(options.runs)]

    print("\nimages (.tools/images, and as the kubelet reports them)")
    print(f"  {'image':<14} {'archive MB':>10} {'on node MB':>11}")
    for name, _reference, archive, reported in sizes:
        shown = f"{reported / 1e6:.1f}" if reported else "-"
        print(f"  {name:<14} {archive / 1e6:>10.1f} {shown:>11}")
    print("\nbring-up")
    print(f"  control plane + node Ready     {node_ready:7.1f} s")
    print(f"  make deploy (S3 store, chart)  {deployed:7.1f} s")
    print("\npod start to ready (API timestamps, 1 s resolution)")
    print(f"  pause pod (the floor)          {floor:7.1f} s")
    print(f"  operator (chart's probes)      {start_to_ready(operator):7.1f} s")
    for run, (_, servers) in enumerate(on_node):
        for what, seconds in servers.items():
            label = f"{what} run {run + 1}"
            ratio = seconds / max(floor, 1)
            print(f"  {label:<30} {seconds:7.1f} s   x{ratio:.1f} the floor")
    print("\nthe sample, apply to Released")
    for run, ((seconds, _), peer) in enumerate(zip(on_node, local, strict=True)):
        print(
            f"  run {run + 1}: real node {seconds:6.1f} s   local mode {peer:6.1f} s   "
            f"ratio {seconds / peer:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
