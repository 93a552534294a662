"""A real MLServer (Seldon's Open Inference Protocol server) with its
scikit-learn runtime, serving one model on loopback.

Installed by ``make tools`` in a virtualenv of its own (.tools/mlserver).
A model of the reference trainer (skops) is handed to it as MLServer's
scikit-learn runtime takes models: a joblib file next to model-settings.json.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import joblib

from modelgate.serving.model import trusted_loads
from tests.support.node import ForeignImage
from tests.support.pins import SERVERS, pinned
from tests.support.processes import answers, serving
from tests.support.s3server import free_port

ROOT = Path(__file__).resolve().parents[2]
MLSERVER = ROOT / ".tools" / "mlserver" / "bin" / "mlserver"

MLSERVER_VERSION = pinned("mlserver", SERVERS / "requirements-mlserver.txt")
# Seldon's image with its scikit-learn runtime: the name `make images` gives
# the image it builds from the same pins and the project's scikit-learn
# (with buildah for the real node, with Docker for kind).
MLSERVER_REPOSITORY = "docker.io/seldonio/mlserver"
MLSERVER_TAGGED = f"{MLSERVER_REPOSITORY}:{MLSERVER_VERSION}-sklearn"
# As a release names it, by digest; the process node runs it from .tools/mlserver.
MLSERVER_IMAGE = f"{MLSERVER_TAGGED}@sha256:" + "5e" * 32


def dataplane_openapi() -> Path:
    """The Open Inference Protocol's OpenAPI document, as MLServer's wheel ships it."""
    found = sorted(MLSERVER.parent.parent.glob("lib/python3*/site-packages/mlserver/rest/openapi"))
    assert found, f"MLServer is not installed in {MLSERVER.parent.parent}: run `make tools`"
    return found[0] / "dataplane.json"


def mlserver_image() -> ForeignImage:
    """MLServer's image for the test node: its installation's commands, and
    its listeners (gRPC's among them, which no Python socket call opens)
    on the pod's own address."""
    return ForeignImage(bin=MLSERVER.parent, env=(("MLSERVER_HOST", "$(MODELGATE_POD_IP)"),))


@dataclass
class MLServer:
    url: str
    model: str
    log: Path


def sklearn_model_dir(skops_model: Path, target: Path, name: str, version: str) -> Path:
    """A model directory MLServer's scikit-learn runtime serves: the same
    pipeline as the skops artifact, as joblib, under ``name``."""
    target.mkdir(parents=True, exist_ok=True)
    joblib.dump(trusted_loads(skops_model.read_bytes()), target / "model.joblib")
    settings = {
        "name": name,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./model.joblib", "version": version},
    }
    (target / "model-settings.json").write_text(json.dumps(settings))
    return target


@contextmanager
def running_mlserver(model_dir: Path, workdir: Path) -> Iterator[MLServer]:
    """``mlserver start`` over one model directory, until its model is ready."""
    if not MLSERVER.exists():
        raise RuntimeError(f"{MLSERVER} is missing: run `make tools`")
    name = json.loads((model_dir / "model-settings.json").read_text())["name"]
    root = workdir / "mlserver"
    root.mkdir(parents=True, exist_ok=True)
    http, grpc, metrics = free_port(), free_port(), free_port()
    settings = {
        "host": "127.0.0.1",
        "http_port": http,
        "grpc_port": grpc,
        "metrics_port": metrics,
        # One process: the model is loaded in the server itself.
        "parallel_workers": 0,
        "load_models_at_startup": True,
    }
    (root / "settings.json").write_text(json.dumps(settings))
    shutil.copytree(model_dir, root / name, dirs_exist_ok=True)
    server = MLServer(url=f"http://127.0.0.1:{http}", model=name, log=workdir / "mlserver.log")
    ready = answers(f"{server.url}/v2/models/{name}/ready")
    with serving([str(MLSERVER), "start", str(root)], server.log, ready, "mlserver", 120, root):
        yield server
