"""The real kubectl client against the emulator, on the project's CRDs."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from modelgate.api.crdgen import build_crd
from tests.conftest import EXAMPLES, ROOT
from tests.support.emulator import RunningEmulator, running_emulator

KUBECTL = ROOT / ".tools" / "bin" / "kubectl"
NAMESPACE = "team"


@pytest.fixture(scope="module")
def kubectl(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningEmulator, Path]]:
    assert KUBECTL.exists(), "kubectl is fetched by `make tools` into .tools/bin"
    with running_emulator() as emulator:
        config = tmp_path_factory.mktemp("kube") / "config"
        config.write_text(
            yaml.safe_dump(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "emulator", "cluster": {"server": emulator.url}}],
                    "users": [{"name": "tester", "user": {"token": "test"}}],
                    "contexts": [
                        {
                            "name": "emulator",
                            "context": {
                                "cluster": "emulator",
                                "user": "tester",
                                "namespace": NAMESPACE,
                            },
                        }
                    ],
                    "current-context": "emulator",
                }
            )
        )
        yield emulator, config


def run(config: Path, *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [str(KUBECTL), f"--kubeconfig={config}", "--request-timeout=20s", *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 0, f"kubectl {' '.join(args)}: {result.stderr}"
    return result.stdout


def test_apply_examples_and_read_printer_columns(kubectl: tuple[RunningEmulator, Path]) -> None:
    _, config = kubectl
    for name in ("gate.yaml", "environments.yaml", "release.yaml"):
        run(config, "apply", "--validate=false", "-f", str(EXAMPLES / "credit-risk" / name))
    run(
        config,
        "patch",
        "modelrelease",
        "credit-risk-1-4-0",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(
            {
                "status": {
                    "phase": "Released",
                    "liveIn": "production",
                    "conditions": [
                        {
                            "type": "Ready",
                            "status": "True",
                            "reason": "Released",
                            "message": "released",
                            "lastTransitionTime": "2026-11-22T12:00:00Z",
                        }
                    ],
                }
            }
        ),
    )
    # kubectl resolves every printer column's JSONPath of the CRD on the object.
    version = build_crd("ModelRelease")["spec"]["versions"][0]
    columns = [c for c in version["additionalPrinterColumns"] if c["name"] != "Age"]
    spec = ",".join(f"{c['name'].upper()}:{{{c['jsonPath']}}}" for c in columns)
    output = run(config, "get", "modelreleases", "-o", f"custom-columns={spec}")
    header, row = output.strip().splitlines()
    assert header.split() == [c["name"].upper() for c in columns]
    assert row.split()[:5] == ["Released", "True", "credit-risk", "1.4.0", "production"]


def test_status_patch_leaves_the_spec_alone(kubectl: tuple[RunningEmulator, Path]) -> None:
    _, config = kubectl
    before = json.loads(run(config, "get", "qualitygate", "credit-gate", "-o", "json"))
    run(
        config,
        "patch",
        "qualitygate",
        "credit-gate",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"checkCount": 99}, "spec": {"task": "regression"}}),
    )
    after = json.loads(run(config, "get", "qualitygate", "credit-gate", "-o", "json"))
    assert after["status"]["checkCount"] == 99
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


def test_category_and_short_names(kubectl: tuple[RunningEmulator, Path]) -> None:
    _, config = kubectl
    listed = run(config, "get", "modelgate", "-o", "name")
    assert "modelrelease.modelgate.dev/credit-risk-1-4-0" in listed
    assert "qualitygate.modelgate.dev/credit-gate" in listed
    assert "environment.modelgate.dev/production" in listed
    assert "credit-risk-1-4-0" in run(config, "get", "mr", "-o", "name")
