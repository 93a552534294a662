"""The import run of a model trained elsewhere: ``python -m modelgate.importer``.

A release whose model was trained elsewhere (a version registered in MLflow,
or a stored model file) gets, in place of a training run, this run (a Job
of the operator's server image, a process in local mode). It honours the
training contract's outputs, so everything after it (the gate, serving,
verification) is what a trained release gets:

1. fetch the model: the version the release resolved from the registry
   (every file hashed, one digest over them all), or the stored file
   (refused unless its SHA-256 is the release's); recorded in metadata.json;
2. start the server that will serve it, on it: the reference server (the
   model must be skops, read here through the trusted-types list for its
   columns and classes), or the release's own model server
   (MODELGATE_MODEL_SERVER), which alone loads the model: its columns come
   from the MLflow signature or the release, its classes from the training
   labels;
3. describe it (metadata.json: features with the training data's ranges,
   categories and drift references, task, positive label, classes, where it
   came from) and record what only the model can tell the gate (permutation
   importance, the gate's behaviour tests), as the trainer does;
4. score the evaluation data through that server over the Open Inference
   Protocol into predictions.parquet: the gate judges what the server answers.

In a pod, a server of the release's own is another image: the Job's first
step (``python -m modelgate.importer fetch``, an init container) does step 1
into the model volume, the server runs there as a native sidecar, and this
run (``MODELGATE_MODEL_SERVER_URL``) does steps 3 and 4 through it.

Exit 0 imported, 2 not (the last line says why: the release's condition).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import yaml

from modelgate.backends.base import ArtifactError
from modelgate.backends.mlflow import (
    FetchedModel,
    MlflowError,
    MlflowRegistry,
    headers_from_environment,
)
from modelgate.serving import oip_client
from modelgate.serving.artifacts import ModelLoadError, read_artifact, verified
from modelgate.serving.model import trusted_loads
from modelgate.serving.runtime import (
    MODEL_DIR,
    ModelServerCommand,
    ModelServerError,
    free_port,
    running_model_server,
)
from modelgate.serving.scoring import ScoreResult, ScoreSettings, ScoringError, score
from modelgate.serving.served import Served
from modelgate.serving.served_model import ServedModel
from modelgate.trainer import contract
from modelgate.trainer.train import (
    TASKS,
    ContractError,
    binned_reference,
    feature_schema,
    fetch_input,
    model_findings,
    read_table,
    sha256_file,
    upload_outputs,
)

READY_TIMEOUT_SECONDS = 120.0


def _sklearn_flavor(fetched: FetchedModel) -> dict[str, Any]:
    """The MLmodel file's description, after checking it has the sklearn flavor."""
    mlmodel = fetched.root / "MLmodel"
    if not mlmodel.exists():
        raise ContractError("the registered version has no MLmodel file: not an MLflow model")
    try:
        description = yaml.safe_load(mlmodel.read_text()) or {}
    except yaml.YAMLError as error:
        raise ContractError(f"the MLmodel file is not YAML: {error}") from None
    flavors = description.get("flavors") if isinstance(description, dict) else None
    sklearn = flavors.get("sklearn") if isinstance(flavors, dict) else None
    if not isinstance(sklearn, dict):
        found = sorted(flavors) if isinstance(flavors, dict) else []
        raise ContractError(
            f"the registered model has no sklearn flavor (it has {found}): the reference "
            "server serves scikit-learn models"
        )
    return dict(description)


def flavor_model_file(fetched: FetchedModel, description: dict[str, Any]) -> Path:
    """The model file the sklearn flavor names, whatever its format."""
    sklearn = description["flavors"]["sklearn"]
    path = (fetched.root / str(sklearn.get("pickled_model") or "")).resolve()
    if fetched.root.resolve() not in path.parents or not path.is_file():
        raise ContractError(
            f"the sklearn flavor names a model file {path.name!r} that is not there"
        )
    return path


def skops_model(fetched: FetchedModel) -> Path:
    """The model file of an MLflow scikit-learn model saved with skops."""
    description = _sklearn_flavor(fetched)
    sklearn = description["flavors"]["sklearn"]
    if sklearn.get("serialization_format") != "skops":
        raise ContractError(
            f"the model is saved as {sklearn.get('serialization_format')!r}; the reference server "
            "loads only skops (never pickle): log it with mlflow.sklearn.log_model("
            "..., serialization_format='skops'), or serve it with a model server of its own"
        )
    return flavor_model_file(fetched, description)


def signature_features(description: dict[str, Any]) -> list[str]:
    """The model's input columns, from the signature MLflow logged with it."""
    signature = description.get("signature")
    inputs = signature.get("inputs") if isinstance(signature, dict) else None
    try:
        columns = json.loads(inputs) if isinstance(inputs, str) else None
    except json.JSONDecodeError:
        columns = None
    names = [c.get("name") for c in columns or [] if isinstance(c, dict)]
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ContractError(
            "the registered model has no column-based signature, so the columns its server "
            "takes are unknown: log it with a signature (mlflow.models.infer_signature, or an "
            "input_example) of named columns"
        )
    return [str(n) for n in names]


@dataclass(frozen=True)
class Candidate:
    """The model to import, fetched and checked: its file, where it came from
    (for metadata.json's ``source``) and, for a server of its own, its columns."""

    model_file: Path
    source: dict[str, Any]
    features: list[str] | None

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps(
                {"modelFile": str(self.model_file), "source": self.source,
                 "features": self.features},
                sort_keys=True,
            )
        )  # fmt: skip

    @classmethod
    def load(cls, path: Path) -> Candidate:
        try:
            found = json.loads(path.read_text())
            return cls(Path(found["modelFile"]), dict(found["source"]), found["features"])
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ContractError(
                f"the fetched model's record {path} cannot be read ({error}): the fetch step "
                "(python -m modelgate.importer fetch) runs first, in the same pod"
            ) from None


def _registered(env: Mapping[str, str], work: Path, own_server: bool) -> Candidate:
    name, version = env[contract.MLFLOW_MODEL], env[contract.MLFLOW_VERSION]
    registry = MlflowRegistry(env[contract.MLFLOW_TRACKING_URI], headers_from_environment(env))
    try:
        registered = registry.version(name, version)
        fetched = registry.fetch(name, version, work / "model")
    except MlflowError as error:
        raise ContractError(f"{name} version {version}: {error}") from None
    source = {
        "mlflow": {
            "trackingUri": env[contract.MLFLOW_TRACKING_URI],
            "name": name,
            "version": version,
            "runId": registered.run_id or None,
            "digest": fetched.digest,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in fetched.files],
        }
    }
    if not own_server:
        return Candidate(skops_model(fetched), source, None)
    description = _sklearn_flavor(fetched)
    model_file = flavor_model_file(fetched, description)
    return Candidate(model_file, source, signature_features(description))


def _stored(env: Mapping[str, str], work: Path, own_server: bool) -> Candidate:
    uri, sha256 = env[contract.ARTIFACT_URI], env[contract.ARTIFACT_SHA256]
    form = env.get(contract.ARTIFACT_FORMAT, "Skops")
    if form not in ("Skops", "Pickle"):
        raise ContractError(f"{contract.ARTIFACT_FORMAT} must be Skops or Pickle, not {form!r}")
    if form == "Pickle" and not own_server:
        raise ContractError(
            "a pickled artifact is loaded only by a model server of its own (serving: "
            "ModelServer); the reference server loads skops only"
        )
    try:
        data = verified(read_artifact(uri), sha256, f"the artifact {uri}")
    except ModelLoadError as error:
        raise ContractError(str(error)) from None
    except (OSError, ArtifactError) as error:
        raise ContractError(f"the artifact {uri} cannot be read: {error}") from None
    model_file = work / "model" / ("model.pkl" if form == "Pickle" else contract.MODEL_FILE)
    model_file.parent.mkdir(parents=True, exist_ok=True)
    model_file.write_bytes(data)
    features: list[str] | None = None
    if env.get(contract.FEATURES):
        try:
            named = json.loads(env[contract.FEATURES])
        except json.JSONDecodeError as error:
            raise ContractError(f"{contract.FEATURES} is not JSON: {error}") from None
        if (
            not isinstance(named, list)
            or not named
            or not all(isinstance(n, str) and n for n in named)
        ):
            raise ContractError(f"{contract.FEATURES} must be a JSON list of column names")
        features = [str(n) for n in named]
    if own_server and features is None:
        raise ContractError(
            "a model served by a server of its own needs its columns named (artifact.features): "
            "Modelgate does not load it to read them"
        )
    source = {"artifact": {"uri": uri, "sha256": sha256, "format": form, "size": len(data)}}
    return Candidate(model_file, source, features)


@contextmanager
def reference_server(model: Path, metadata: Path, log: Path) -> Iterator[str]:
    """The reference server on the model, on loopback, as it will serve it
    (every row scored: the gate judges rows outside the training ranges too)."""
    port = free_port()
    command = [
        sys.executable, "-m", "modelgate.server",
        "--model", str(model), "--model-sha256", sha256_file(model),
        "--metadata", str(metadata), "--metadata-sha256", sha256_file(metadata),
        "--host", "127.0.0.1", "--port", str(port), "--allow-out-of-range",
    ]  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def describe(
    estimator: Any, train_frame: pd.DataFrame, env: Mapping[str, str], task: str
) -> dict[str, Any]:
    """metadata.json's description of the model (its source is added by the caller)."""
    target = env[contract.TARGET]
    names = getattr(estimator, "feature_names_in_", None)
    if names is None:
        raise ContractError(
            "the model does not record the columns it was fitted on (feature_names_in_): fit "
            "it on a pandas DataFrame with named columns"
        )
    features = [str(n) for n in names]
    absent = [f for f in features if f not in train_frame.columns]
    if absent:
        raise ContractError(f"the training data lacks the model's feature columns {absent}")
    classes = contract.label_strings(getattr(estimator, "classes_", []))
    positive = env.get(contract.POSITIVE_LABEL, "1")
    if task == "binary" and positive not in classes:
        raise ContractError(
            f"positive label {positive!r} is not among the model's classes {classes}"
        )
    return {
        "contract": "modelgate.dev/training/v1",
        "release": env.get(contract.RELEASE),
        "model": {"name": env.get(contract.MODEL_NAME), "version": env.get(contract.MODEL_VERSION)},
        "task": task,
        "target": target,
        "idColumn": env.get(contract.ID_COLUMN) or None,
        "positiveLabel": positive,
        "classes": [] if task == "regression" else classes,
        "estimator": f"{type(estimator).__module__}.{type(estimator).__name__}",
        "features": feature_schema(train_frame, features),
    }


def _served_by(env: Mapping[str, str]) -> ModelServerCommand | None:
    text = env.get(contract.MODEL_SERVER)
    if not text:
        return None
    try:
        return ModelServerCommand.from_wire(text, contract.MODEL_SERVER)
    except ValueError as error:
        raise ContractError(str(error)) from None


def _training_classes(frame: pd.DataFrame, target: str, task: str) -> list[str]:
    """The classes in scikit-learn's order (``np.unique`` of the training
    labels): the column order of a server's ``predict_proba`` that does not
    name it."""
    if task == "regression":
        return []
    return contract.label_strings(np.unique(frame[target].dropna().to_numpy()))


def _findings(
    metadata: dict[str, Any], estimator: Any, eval_path: Path, env: Mapping[str, str]
) -> None:
    """What only the model can tell the gate, as the trainer records it."""
    importance, behavior = model_findings(
        estimator, read_table(eval_path), [f["name"] for f in metadata["features"]], env
    )
    metadata["importance"] = importance
    metadata["importanceScoring"] = "r2" if metadata["task"] == "regression" else "accuracy"
    metadata["behavior"] = behavior


def _score(
    url: str, model_name: str, eval_path: Path, env: Mapping[str, str], output: Path,
    metadata: dict[str, Any], server_log: Path,
) -> ScoreResult:  # fmt: skip
    """The evaluation data scored through the server into predictions.parquet."""
    settings = ScoreSettings(
        url=url,
        model_name=model_name,
        data=eval_path,
        target=env[contract.TARGET],
        output=output / contract.PREDICTIONS_FILE,
        ready_timeout_seconds=READY_TIMEOUT_SECONDS,
    )
    try:
        return score(settings, Served.from_metadata(metadata))
    except (ScoringError, RuntimeError, oip_client.AnswerError) as error:
        log = server_log.read_text(errors="replace").strip().splitlines()[-3:]
        raise ContractError(f"scoring through the model server: {error} {log}") from None


CANDIDATE_RECORD = "candidate.json"


def _required(env: Mapping[str, str], *names: str) -> None:
    missing = [n for n in names if not env.get(n)]
    if missing:
        raise ContractError(f"missing environment variables: {', '.join(missing)}")


def _source_vars(env: Mapping[str, str]) -> tuple[str, ...]:
    if env.get(contract.MLFLOW_MODEL) is not None:
        return (contract.MLFLOW_TRACKING_URI, contract.MLFLOW_MODEL, contract.MLFLOW_VERSION)
    return (contract.ARTIFACT_URI, contract.ARTIFACT_SHA256)


def fetch_for_server(env: Mapping[str, str]) -> Candidate:
    """A pod's first step (an init container): fetch and check the model,
    lay it out in the model directory the server beside the import run
    serves (``MODELGATE_MODEL_DIR``), and record it for the import run."""
    _required(env, *_source_vars(env), contract.OUTPUT_DIR, MODEL_DIR)
    served_by = _served_by(env)
    if served_by is None:
        raise ContractError(
            f"the fetch step lays out a model for a server of the release's own: "
            f"{contract.MODEL_SERVER} is missing"
        )
    work = Path(env[contract.OUTPUT_DIR]) / ".import"
    fetch = _registered if env.get(contract.MLFLOW_MODEL) is not None else _stored
    candidate = fetch(env, work, own_server=True)
    served_file = Path(env[MODEL_DIR]) / served_by.model_file
    served_file.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(candidate.model_file, served_file)
    shutil.rmtree(work / "model", ignore_errors=True)
    laid_out = Candidate(served_file, candidate.source, candidate.features)
    laid_out.save(work / CANDIDATE_RECORD)
    return laid_out


@contextmanager
def _model_server(
    served_by: ModelServerCommand, served_file: Path, log: Path, url: str | None
) -> Iterator[str]:
    """The server to score through: the one already running beside this run
    (a pod's sidecar), or one started here on the file (local mode)."""
    if url is None:
        with running_model_server(served_by, served_file, log, READY_TIMEOUT_SECONDS) as started:
            yield started
        return
    try:
        oip_client.wait_ready(url, served_by.model_name, READY_TIMEOUT_SECONDS)
    except RuntimeError as error:
        raise ModelServerError(f"the model server beside the import run: {error}") from None
    yield url


def import_model(env: Mapping[str, str]) -> dict[str, Any]:
    started = time.time()
    task = env.get(contract.TASK, "binary")
    if task not in TASKS:
        raise ContractError(f"{contract.TASK} must be one of {TASKS}, not {task!r}")
    registered = env.get(contract.MLFLOW_MODEL) is not None
    _required(env, *_source_vars(env), contract.TRAIN_DATA, contract.EVAL_DATA, contract.TARGET)
    served_by = _served_by(env)
    server_url = env.get(contract.MODEL_SERVER_URL) or None
    if server_url is not None and served_by is None:
        raise ContractError(f"{contract.MODEL_SERVER_URL} needs {contract.MODEL_SERVER}")
    output = Path(env.get(contract.OUTPUT_DIR) or tempfile.mkdtemp(prefix="modelgate-import-"))
    output.mkdir(parents=True, exist_ok=True)
    work = output / ".import"
    if server_url is not None:
        # The fetch step laid the model out for the server beside this run.
        candidate = Candidate.load(work / CANDIDATE_RECORD)
    else:
        fetch = _registered if registered else _stored
        candidate = fetch(env, work, own_server=served_by is not None)
    model_file, source = candidate.model_file, candidate.source
    what = (
        f"{env[contract.MLFLOW_MODEL]} version {env[contract.MLFLOW_VERSION]}"
        if registered
        else f"the artifact {env[contract.ARTIFACT_URI]}"
    )
    train_path = fetch_input(env[contract.TRAIN_DATA], work / "inputs")
    eval_path = fetch_input(env[contract.EVAL_DATA], work / "inputs")
    metadata_path = output / contract.METADATA_FILE
    server_log = work / "server.log"
    if served_by is None:
        # The reference server's way: the model is read here (skops, trusted
        # types only) for what it takes, then served as it will be.
        try:
            estimator = trusted_loads(model_file.read_bytes())
        except ModelLoadError as error:
            raise ContractError(f"{what}: {error}") from None
        shutil.copyfile(model_file, output / contract.MODEL_FILE)
        metadata = describe(estimator, read_table(train_path), env, task)
        _findings(metadata, estimator, eval_path, env)
        del estimator  # the scoring below holds a batch at a time
        metadata["source"] = source
        metadata_path.write_text(json.dumps(metadata, indent=2, sort_keys=True))
        with reference_server(output / contract.MODEL_FILE, metadata_path, server_log) as url:
            result = _score(url, str(env.get(contract.MODEL_NAME) or ""), eval_path, env,
                            output, metadata, server_log)  # fmt: skip
    else:
        # A model server of the release's own loads the model, never this
        # process: what it takes comes from the signature, what it does from
        # its answers.
        features = candidate.features or []
        if server_url is None:
            served_file = work / "served" / served_by.model_file
            served_file.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(model_file, served_file)
        else:
            served_file = model_file
        shutil.copyfile(served_file, output / contract.SERVED_MODEL_FILE)
        train_frame = read_table(train_path)
        classes = _training_classes(train_frame, env[contract.TARGET], task)
        try:
            with _model_server(served_by, served_file, server_log, server_url) as url:
                model = ServedModel(url, served_by.model_name, features, task, classes)
                metadata = describe(model, train_frame, env, task)
                del train_frame
                try:
                    _findings(metadata, model, eval_path, env)
                except oip_client.AnswerError as error:
                    raise ContractError(f"asking the model server: {error}") from None
                metadata["source"] = source
                metadata["servedBy"] = {
                    "modelName": served_by.model_name,
                    "modelFile": served_by.model_file,
                    "sha256": sha256_file(served_file),
                }
                metadata_path.write_text(json.dumps(metadata, indent=2, sort_keys=True))
                result = _score(url, served_by.model_name, eval_path, env, output, metadata,
                                server_log)  # fmt: skip
        except ModelServerError as error:
            raise ContractError(f"{what}: {error}") from None

    predictions = output / contract.PREDICTIONS_FILE
    # What the served scores are compared with live (as the trainer records it).
    column = "y_pred" if task == "regression" else "y_score"
    metadata["scoreReference"] = (
        binned_reference(pd.read_parquet(predictions, columns=[column])[column].to_numpy(float))
        if column in pq.read_schema(predictions).names
        else None
    )
    metadata["data"] = {
        "train": {"path": str(train_path), "sha256": sha256_file(train_path)},
        "evaluation": {
            "path": str(eval_path),
            "sha256": sha256_file(eval_path),
            "rows": result.rows,
        },
    }
    metadata["scoring"] = {"requests": result.requests, "seconds": round(result.seconds, 3)}
    metadata["durationSeconds"] = round(time.time() - started, 3)
    metadata_path.write_text(json.dumps(metadata, indent=2, sort_keys=True))
    shutil.rmtree(work / "model", ignore_errors=True)
    if env.get(contract.OUTPUT_URI):
        upload_outputs(output, env[contract.OUTPUT_URI])
    return metadata


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if arguments == ["fetch"]:
        try:
            candidate = fetch_for_server(os.environ)
        except ContractError as error:
            print(f"modelgate-importer: {error}", file=sys.stderr)
            return 2
        print(f"modelgate-importer: fetched {candidate.model_file.name} for the model server")
        return 0
    if arguments:
        print(f"modelgate-importer: unknown arguments {arguments} (none or fetch)", file=sys.stderr)
        return 2
    try:
        metadata = import_model(os.environ)
    except ContractError as error:
        print(f"modelgate-importer: {error}", file=sys.stderr)
        return 2
    source = metadata["source"]
    if "mlflow" in source:
        registered = source["mlflow"]
        what = f"{registered['name']} version {registered['version']}"
        digest = registered["digest"]
    else:
        what, digest = source["artifact"]["uri"], source["artifact"]["sha256"]
    rows = metadata["data"]["evaluation"]["rows"]
    print(f"modelgate-importer: imported {what} (digest {digest[:12]}), scored {rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
