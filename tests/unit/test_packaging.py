"""Image, kind path and CI workflow: what can be checked without docker or kind."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT
from tests.support.pins import SERVERS, pinned

DOCKERFILES = [
    "Dockerfile",
    "deploy/images/s3/Dockerfile",
    "deploy/images/mlserver/Dockerfile",
    "deploy/images/mlflow/Dockerfile",
]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    done = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), str(ROOT / dockerfile)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerfile_is_slim_non_root_and_safe_path() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11\.\d+-slim-bookworm$", text, re.M)
    final = text[text.rindex("\nFROM ") :]
    assert "PYTHONSAFEPATH=1" in final
    assert "USER 65532:65532" in final
    assert "pip install" not in final  # built in the first stage, copied over
    assert "build-essential" not in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_every_image_runs_as_non_root_from_a_virtualenv(dockerfile: str) -> None:
    """Debian's Python refuses `pip install` into the system interpreter:
    each image installs into a virtualenv in a build stage and runs the
    result as a user that is not root."""
    text = (ROOT / dockerfile).read_text()
    final = text[text.rindex("\nFROM ") :]
    assert "-m venv /opt/" in text
    assert "USER 65532:65532" in final
    assert "pip install" not in final


def test_kind_mlflow_names_the_image_make_images_builds_from_the_pin() -> None:
    pin = pinned("mlflow", SERVERS / "requirements-mlflow.txt")
    manifests = yaml.safe_load_all((ROOT / "deploy/kind/mlflow.yaml").read_text())
    deployment = next(d for d in manifests if d and d["kind"] == "Deployment")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"ghcr.io/mlflow/mlflow:v{pin}"
    assert (
        "[mlflow]=ghcr.io/mlflow/mlflow:v$mlflow_version"
        in (ROOT / "scripts/build-images.sh").read_text()
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_make_targets_of_the_kind_path_exist() -> None:
    targets = set(re.findall(r"^([a-z][a-z0-9-]*):", (ROOT / "Makefile").read_text(), re.M))
    assert {"kind-up", "images", "kind-load", "deploy", "sample", "e2e", "kind-down"} <= targets


def test_workflow_runs_the_kind_path() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/e2e-kind.yaml").read_text())
    runs = [step.get("run", "") for step in workflow["jobs"]["e2e"]["steps"]]
    assert "make images kind-load" in runs
    assert "make deploy" in runs
    assert "make e2e" in runs


def test_kind_values_use_the_local_image_and_in_cluster_store() -> None:
    values = yaml.safe_load((ROOT / "deploy/kind/values.yaml").read_text())
    assert values["image"]["pullPolicy"] == "Never"
    s3 = [d for d in yaml.safe_load_all((ROOT / "deploy/kind/s3.yaml").read_text()) if d]
    service = next(d for d in s3 if d["kind"] == "Service")
    assert values["artifacts"]["endpoint"] == (
        f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:5000"
    )
