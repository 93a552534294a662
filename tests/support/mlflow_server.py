"""A real MLflow tracking server and model registry on loopback: SQLite
backend store, artifacts served by the server itself (mlflow-artifacts:/),
from .tools/mlflow (``make tools``)."""

from __future__ import annotations

import json
import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import answers, serving
from tests.support.s3server import free_port

ROOT = Path(__file__).resolve().parents[2]
MLFLOW_BIN = ROOT / ".tools" / "mlflow" / "bin"


@dataclass
class MlflowServer:
    url: str
    log: Path

    def register_sklearn(
        self,
        pipeline_skops: Path,
        name: str,
        workdir: Path,
        *,
        pickled: bool = False,
        signature_from: Path | None = None,
    ) -> str:
        """Log the pipeline of a skops artifact as an MLflow scikit-learn
        model (as a team training elsewhere would) and register it as a new
        version of ``name``; the version. ``pickled``: saved with cloudpickle
        (what MLServer's scikit-learn runtime loads) instead of skops;
        ``signature_from``: a CSV holding the pipeline's columns, for the
        signature (inputs and output) logged with it."""
        script = textwrap.dedent(
            f"""
            import json, mlflow, mlflow.sklearn, pandas as pd, skops.io as sio
            from mlflow.models import infer_signature
            data = open({str(pipeline_skops)!r}, "rb").read()
            trusted = sio.get_untrusted_types(data=data)
            pipeline = sio.loads(data, trusted=trusted)
            signature = None
            if {str(signature_from or "")!r}:
                frame = pd.read_csv({str(signature_from or "")!r})
                features = list(pipeline.feature_names_in_)
                signature = infer_signature(frame[features], pipeline.predict(frame[features]))
            options = dict(serialization_format="cloudpickle") if {pickled!r} else dict(
                skops_trusted_types=trusted
            )
            mlflow.set_tracking_uri({self.url!r})
            with mlflow.start_run():
                info = mlflow.sklearn.log_model(
                    pipeline, name="model", registered_model_name={name!r},
                    signature=signature, **options,
                )
            print(json.dumps({{"version": str(info.registered_model_version)}}))
            """
        )
        done = subprocess.run(
            [str(MLFLOW_BIN / "python"), "-c", script],
            capture_output=True,
            text=True,
            check=False,
            cwd=workdir,
            timeout=300,
        )
        if done.returncode != 0:
            raise RuntimeError(f"registering {name} failed: {done.stderr[-3000:]}")
        version: str = json.loads(done.stdout.strip().splitlines()[-1])["version"]
        return version


@contextmanager
def running_mlflow(workdir: Path) -> Iterator[MlflowServer]:
    if not (MLFLOW_BIN / "mlflow").exists():
        raise RuntimeError(f"{MLFLOW_BIN / 'mlflow'} is missing: run `make tools`")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = MlflowServer(url=f"http://127.0.0.1:{port}", log=workdir / "mlflow.log")
    command = [
        str(MLFLOW_BIN / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{workdir / 'mlflow.db'}",
        "--artifacts-destination", str(workdir / "artifacts"),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with serving(
        command, server.log, answers(f"{server.url}/health"), "mlflow server", 180, workdir
    ):
        yield server
