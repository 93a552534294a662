"""Not collected by the suite: the run that tests/integration/test_run_guard.py
starts and kills. It starts what a real run starts in sessions of their own
(the control plane, the test node and a pod's process), writes their pids and
start times to ``$MODELGATE_PROBE_PIDS`` and waits to be killed."""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

from kubernetes import client

from tests.support.cluster import wait_for
from tests.support.controlplane import ControlPlane
from tests.support.node import ForeignImage, running_node

TOOLS = "registry.test/tools"


def start_time(pid: int) -> str:
    """The process's start time (field 22 of /proc/PID/stat): a pid reused
    by another process has another."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[19]


def test_start_servers_and_wait_to_be_killed(control_plane: ControlPlane, tmp_path: Path) -> None:
    tools = tmp_path / "tools" / "bin"
    tools.mkdir(parents=True)
    (tools / "python").symlink_to(sys.executable)
    foreign = {TOOLS: ForeignImage(bin=tools)}
    core = client.CoreV1Api(control_plane.api_client())
    namespace = f"probe-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    wait_for(lambda: core.list_namespaced_service_account(namespace).items, 30, "default SA")
    with running_node(control_plane.api_client(), tmp_path / "node", foreign=foreign) as node:
        pod = {
            "metadata": {"name": "sleeper"},
            "spec": {
                "restartPolicy": "Never",
                "automountServiceAccountToken": False,
                "containers": [
                    {
                        "name": "main",
                        "image": TOOLS,
                        "command": ["python", "-c", "import time; time.sleep(3600)"],
                    }
                ],
            },
        }
        core.create_namespaced_pod(namespace, pod)

        def running() -> int | None:
            for running_pod in list(node.pods.values()):
                for container in running_pod.containers.values():
                    if container.running() and container.process is not None:
                        return container.process.pid
            return None

        sleeper = wait_for(running, 60, "the pod's process")
        pids = {name: c.process.pid for name, c in control_plane.components.items() if c.process}
        pids["pod"] = sleeper
        pids["worker"] = os.getpid()
        record = {name: [pid, start_time(pid)] for name, pid in pids.items()}
        Path(os.environ["MODELGATE_PROBE_PIDS"]).write_text(json.dumps(record))
        time.sleep(3600)
