"""`python -m modelgate` runs the operator against an ordinary kubeconfig."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml

from tests.conftest import EXAMPLES
from tests.support.cluster import api_client, create, get, wait_for
from tests.support.emulator import running_emulator
from tests.support.s3server import free_port


def test_python_dash_m_modelgate_reconciles_with_a_kubeconfig(tmp_path: Path) -> None:
    with running_emulator() as emulator:
        kubeconfig = tmp_path / "config"
        kubeconfig.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "c", "cluster": {"server": emulator.url}}],
                    "users": [{"name": "u", "user": {"token": "t"}}],
                    "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                    "current-context": "x",
                }
            )
        )
        port, metrics_port = free_port(), free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("MODELGATE_API_SERVER")
        }
        env.update({"KUBECONFIG": str(kubeconfig), "MODELGATE_RESYNC_SECONDS": "1"})
        log = (tmp_path / "operator.log").open("w")
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "modelgate",
                "operator",
                "--standalone",
                f"--liveness=http://127.0.0.1:{port}/healthz",
                f"--metrics-port={metrics_port}",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            api = api_client(emulator)
            gate = next(yaml.safe_load_all((EXAMPLES / "credit-risk" / "gate.yaml").read_text()))
            create(api, gate, "team")

            def gate_ready() -> bool:
                status = get(api, "QualityGate", "team", "credit-gate").get("status") or {}
                return any(
                    c["type"] == "Ready" and c["status"] == "True"
                    for c in status.get("conditions", [])
                )

            wait_for(
                gate_ready,
                60,
                "the gate to become Ready",
                lambda: (tmp_path / "operator.log").read_text()[-3000:],
            )
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as health:
                assert health.status == 200
            metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            with urllib.request.urlopen(metrics, timeout=5) as scraped:
                text = scraped.read().decode()
            assert 'modelgate_reconcile_total{kind="QualityGate",result="ok"}' in text
            # Readiness is its own endpoint beside /metrics (no webhook here,
            # no watches: MODELGATE_CACHE=false in this tier).
            ready = f"http://127.0.0.1:{metrics_port}/readyz"
            with urllib.request.urlopen(ready, timeout=5) as answer:
                assert (answer.status, answer.read()) == (200, b"ready")
        finally:
            process.terminate()
            process.wait(timeout=30)
            log.close()


def test_operator_subcommand_help() -> None:
    parser_help = subprocess.run(
        [sys.executable, "-m", "modelgate", "operator", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--standalone" in parser_help.stdout
