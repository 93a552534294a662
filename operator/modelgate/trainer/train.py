"""The reference trainer: a scikit-learn pipeline fitted from the contract.

Numeric columns are median-imputed and standardised; text columns are imputed with the most
frequent value and one-hot encoded (unknown categories ignored at predict
time). The estimator is named by its dotted path and must live in
``sklearn.``: the trainer never imports arbitrary modules from a spec.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import sklearn
import skops.io as sio
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.inspection import permutation_importance
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from modelgate.backends.base import ArtifactError
from modelgate.backends.s3 import S3Settings, make_client, read_uri, write_uri
from modelgate.trainer import contract

ALLOWED_ESTIMATOR_PREFIX = "sklearn."
TASKS = ("binary", "multiclass", "regression")


class ContractError(ValueError):
    """The job was started with inputs that break the training contract."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise ContractError(f"data file {path} does not exist")
    if path.suffix in {".parquet", ".pq"}:
        return pd.read_parquet(path)
    return pd.read_csv(path)


def write_predictions(predictions: pd.DataFrame, path: Path) -> None:
    """The predictions as Parquet in row groups, the pieces a sharded
    evaluation splits. A column of mixed Python types (pandas reads some CSV
    columns so) is written as text, as a CSV file would have held it."""
    columns: dict[str, pa.Array] = {}
    for name in predictions.columns:
        values = predictions[name]
        try:
            column = pa.array(values, from_pandas=True)
            if pa.types.is_dictionary(column.type):  # pandas categoricals: their values
                column = column.dictionary_decode()
            columns[str(name)] = column
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            text = values.map(lambda v: None if pd.isna(v) else str(v))
            columns[str(name)] = pa.array(text, type=pa.string(), from_pandas=True)
    pq.write_table(pa.table(columns), path, row_group_size=contract.PREDICTIONS_ROW_GROUP)


def load_estimator_class(dotted: str) -> type[Any]:
    if not dotted.startswith(ALLOWED_ESTIMATOR_PREFIX) or dotted.count(".") < 2:
        raise ContractError(
            f"params.estimator {dotted!r} is not allowed: name a scikit-learn estimator "
            "such as sklearn.ensemble.RandomForestClassifier"
        )
    module_name, _, class_name = dotted.rpartition(".")
    try:
        estimator: type[Any] = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as error:
        raise ContractError(f"params.estimator {dotted!r} does not exist: {error}") from error
    return estimator


def build_pipeline(frame: pd.DataFrame, features: list[str], estimator: Any) -> Any:

    numeric = [c for c in features if pd.api.types.is_numeric_dtype(frame[c])]
    categorical = [c for c in features if c not in numeric]
    transformers: list[tuple[str, Any, list[str]]] = []
    if numeric:
        # Scaling leaves tree models unchanged and lets linear models converge.
        scaled = Pipeline(
            [("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]
        )
        transformers.append(("numeric", scaled, numeric))
    if categorical:
        encoder = Pipeline(
            [
                ("impute", SimpleImputer(strategy="most_frequent")),
                ("onehot", OneHotEncoder(handle_unknown="ignore")),
            ]
        )
        transformers.append(("categorical", encoder, categorical))
    return Pipeline([("features", ColumnTransformer(transformers)), ("model", estimator)])


MAX_CATEGORIES = 1000
# Live drift references (metadata.json): bins per numeric feature, categories kept.
REFERENCE_BINS = 10
REFERENCE_CATEGORIES = 50


def feature_schema(frame: pd.DataFrame, features: list[str]) -> list[dict[str, Any]]:
    """The training schema the model server validates requests against:
    type, whether missing values were seen, the numeric range and the
    categories (all of them, when there are at most MAX_CATEGORIES)."""
    schema = []
    for column in features:
        values = frame[column]
        numeric = pd.api.types.is_numeric_dtype(values)
        entry: dict[str, Any] = {
            "name": column,
            "type": "number" if numeric else "string",
            "nullable": bool(values.isna().any()),
        }
        present = values.dropna()
        if numeric and len(present):
            entry["min"], entry["max"] = float(present.min()), float(present.max())
        elif not numeric:
            categories = sorted({str(v) for v in present.unique()})
            entry["categories"] = categories[:MAX_CATEGORIES]
            entry["categoriesComplete"] = len(categories) <= MAX_CATEGORIES
        if len(present):
            entry["reference"] = (
                binned_reference(present.to_numpy(dtype=float))
                if numeric
                else category_reference(present.astype(str))
            )
        schema.append(entry)
    return schema


def binned_reference(values: np.ndarray[Any, Any], bins: int = REFERENCE_BINS) -> dict[str, Any]:
    """Training shares over quantile bins, the edges as the gate's PSI draws
    them (bins between edges, a value on an edge in the bin above): what the
    model server's live drift compares with."""
    edges = np.unique(np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=edges.size + 1)
    return {
        "edges": [float(e) for e in edges],
        "shares": [float(c) for c in counts / counts.sum()],
    }


def category_reference(values: pd.Series, top: int = REFERENCE_CATEGORIES) -> dict[str, Any]:
    """Training shares of the most frequent categories, and of all the others."""
    shares = values.value_counts(normalize=True, sort=True)
    kept = shares.iloc[:top]
    return {
        "categories": [str(c) for c in kept.index],
        "shares": [*(float(v) for v in kept.to_numpy()), float(max(0.0, 1.0 - kept.sum()))],
    }


def _score_function(pipeline: Any, task: str, positive_label: str) -> Any:
    """What a behaviour test watches: the positive-class score (binary), the
    predicted value (regression) or the predicted label (multiclass)."""
    if task == "binary":
        classes = contract.label_strings(pipeline.classes_)
        column = classes.index(positive_label)
        return lambda frame: pipeline.predict_proba(frame)[:, column]
    if task == "regression":
        return lambda frame: np.asarray(pipeline.predict(frame), dtype=float)
    return lambda frame: np.asarray(contract.label_strings(pipeline.predict(frame)))


def model_findings(
    pipeline: Any,
    eval_frame: pd.DataFrame,
    features: list[str],
    env: Mapping[str, str],
    repeats: int = 3,
    seed: int = 0,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What only the model can tell, recorded for the gate: permutation
    importance on the evaluation data, and the behaviour tests the gate asks
    for (MODELGATE_BEHAVIOR_TESTS)."""
    task = env.get(contract.TASK, "binary")
    target = env[contract.TARGET]
    importance: list[dict[str, Any]] = []
    if repeats > 0:
        y_eval = eval_frame[target]
        if task != "regression":
            y_eval = pd.Series(contract.label_strings(y_eval), index=eval_frame.index)
        measured = permutation_importance(
            pipeline, eval_frame[features], y_eval, n_repeats=repeats, random_state=seed
        )
        importance = [
            {"feature": feature, "mean": float(mean), "std": float(std)}
            for feature, mean, std in zip(
                features, measured.importances_mean, measured.importances_std, strict=True
            )
        ]
    try:
        tests = json.loads(env.get(contract.BEHAVIOR_TESTS) or "[]")
    except json.JSONDecodeError as error:
        raise ContractError(f"{contract.BEHAVIOR_TESTS} is not valid JSON: {error}") from error
    positive_label = env.get(contract.POSITIVE_LABEL, "1")
    behavior = run_behavior_tests(
        tests, _score_function(pipeline, task, positive_label), eval_frame[features], task
    )
    return importance, behavior


def run_behavior_tests(
    tests: list[dict[str, Any]], predict: Any, frame: pd.DataFrame, task: str
) -> list[dict[str, Any]]:
    """Perturb one column per test and count the rows that break the expectation."""
    results: list[dict[str, Any]] = []
    before = predict(frame)
    for test in tests:
        name, column = str(test.get("name")), str(test.get("column"))
        if column not in frame.columns:
            results.append({"name": name, "error": f"column {column!r} is not a model feature"})
            continue
        changed = frame.copy()
        numeric = pd.api.types.is_numeric_dtype(frame[column])
        try:
            if test.get("add") is not None:
                if not numeric:
                    raise ValueError(f"cannot add a number to text column {column!r}")
                changed[column] = frame[column] + float(test["add"])
            else:
                value = test.get("set")
                changed[column] = float(value) if numeric else str(value)  # type: ignore[arg-type]
        except (TypeError, ValueError) as error:
            results.append({"name": name, "error": str(error)})
            continue
        after = predict(changed)
        tolerance = float(test.get("tolerance", 1e-6))
        expect = test.get("expect", "invariant")
        if task == "multiclass":
            broken = after != before
            delta = broken.astype(float)
        else:
            delta = after - before
            if expect == "increase":
                broken = delta < -tolerance
            elif expect == "decrease":
                broken = delta > tolerance
            else:
                broken = np.abs(delta) > tolerance
        results.append(
            {
                "name": name,
                "column": column,
                "expect": expect,
                "rows": len(frame),
                "failures": int(np.sum(broken)),
                "maxAbsDelta": float(np.max(np.abs(delta))) if len(delta) else 0.0,
                "meanDelta": float(np.mean(delta)) if len(delta) else 0.0,
            }
        )
    return results


def train(env: Mapping[str, str]) -> dict[str, Any]:
    """Run one training job from contract variables; returns the metadata written."""
    started = time.time()
    missing = [
        name
        for name in (contract.TRAIN_DATA, contract.EVAL_DATA, contract.TARGET)
        if not env.get(name)
    ]
    if not env.get(contract.OUTPUT_DIR) and not env.get(contract.OUTPUT_URI):
        missing.append(f"{contract.OUTPUT_DIR} or {contract.OUTPUT_URI}")
    if missing:
        raise ContractError(f"missing environment variables: {', '.join(missing)}")
    task = env.get(contract.TASK, "binary")
    if task not in TASKS:
        raise ContractError(f"{contract.TASK}={task!r}: use one of {', '.join(TASKS)}")
    try:
        params: dict[str, Any] = json.loads(env.get(contract.PARAMS) or "{}")
    except json.JSONDecodeError as error:
        raise ContractError(f"{contract.PARAMS} is not valid JSON: {error}") from error
    if not isinstance(params, dict):
        raise ContractError(f"{contract.PARAMS} must be a JSON object")
    seed = int(env.get(contract.SEED, "0"))
    target = env[contract.TARGET]
    id_column = env.get(contract.ID_COLUMN) or None
    positive_label = env.get(contract.POSITIVE_LABEL, "1")
    output = Path(env.get(contract.OUTPUT_DIR) or tempfile.mkdtemp(prefix="modelgate-output-"))
    output.mkdir(parents=True, exist_ok=True)
    downloads = output / ".inputs"
    train_path = fetch_input(env[contract.TRAIN_DATA], downloads)
    eval_path = fetch_input(env[contract.EVAL_DATA], downloads)

    train_frame, eval_frame = read_table(train_path), read_table(eval_path)
    for name, frame in (("training", train_frame), ("evaluation", eval_frame)):
        if target not in frame.columns:
            raise ContractError(f"{name} data has no target column {target!r}")
    excluded = {target, *([id_column] if id_column else []), *params.get("exclude", [])}
    features = list(params.get("features") or [c for c in train_frame.columns if c not in excluded])
    absent = [c for c in features if c not in train_frame.columns or c not in eval_frame.columns]
    if absent:
        raise ContractError(f"feature columns missing from the data: {absent}")

    estimator_class = load_estimator_class(
        str(params.get("estimator", "sklearn.ensemble.RandomForestClassifier"))
    )
    kwargs = {k: v for k, v in params.items() if k not in contract.RESERVED_PARAMS}
    if "random_state" in estimator_class().get_params():
        kwargs.setdefault("random_state", seed)
    try:
        estimator = estimator_class(**kwargs)
    except TypeError as error:
        raise ContractError(f"params do not fit {estimator_class.__name__}: {error}") from error
    pipeline = build_pipeline(train_frame, features, estimator)
    y_train = train_frame[target]
    if task != "regression":
        y_train = pd.Series(contract.label_strings(y_train), index=train_frame.index)
    pipeline.fit(train_frame[features], y_train)

    predictions = eval_frame.copy()
    predictions["y_true"] = (
        eval_frame[target] if task == "regression" else contract.label_strings(eval_frame[target])
    )
    predicted = pipeline.predict(eval_frame[features])
    predictions["y_pred"] = predicted if task == "regression" else contract.label_strings(predicted)
    if task != "regression" and hasattr(pipeline, "predict_proba"):
        probabilities = pipeline.predict_proba(eval_frame[features])
        classes = contract.label_strings(pipeline.classes_)
        if task == "binary":
            if positive_label not in classes:
                raise ContractError(
                    f"positive label {positive_label!r} not among the classes {classes}"
                )
            predictions["y_score"] = probabilities[:, classes.index(positive_label)]
        else:
            for index, label in enumerate(classes):
                predictions[f"y_score_{label}"] = probabilities[:, index]
    write_predictions(predictions, output / contract.PREDICTIONS_FILE)

    importance, behavior = model_findings(
        pipeline, eval_frame, features, env, repeats=int(params.get("importance_repeats", 3)),
        seed=seed,
    )  # fmt: skip

    sio.dump(pipeline, output / contract.MODEL_FILE)

    metadata: dict[str, Any] = {
        "contract": "modelgate.dev/training/v1",
        "release": env.get(contract.RELEASE),
        "model": {"name": env.get(contract.MODEL_NAME), "version": env.get(contract.MODEL_VERSION)},
        "task": task,
        "target": target,
        "idColumn": id_column,
        "positiveLabel": positive_label,
        # The order of predict_proba's columns (scikit-learn's classes_): how a
        # server that does not name it (MLServer) answers scores.
        "classes": (
            contract.label_strings(pipeline.classes_) if hasattr(pipeline, "classes_") else []
        ),
        "estimator": f"{estimator_class.__module__}.{estimator_class.__name__}",
        "params": params,
        "seed": seed,
        "features": feature_schema(train_frame, features),
        # What the served scores (binary) or predictions (regression) are
        # compared with live: the gated predictions' distribution.
        "scoreReference": (
            binned_reference(predictions[scored].to_numpy(dtype=float))
            if (scored := "y_pred" if task == "regression" else "y_score") in predictions.columns
            else None
        ),
        "importance": importance,
        "importanceScoring": "r2" if task == "regression" else "accuracy",
        "behavior": behavior,
        "data": {
            "train": {
                "path": str(train_path),
                "sha256": sha256_file(train_path),
                "rows": len(train_frame),
            },
            "evaluation": {
                "path": str(eval_path),
                "sha256": sha256_file(eval_path),
                "rows": len(eval_frame),
            },
        },
        "versions": {
            "python": platform.python_version(),
            "scikit-learn": sklearn.__version__,
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "skops": importlib.metadata.version("skops"),
        },
        "durationSeconds": round(time.time() - started, 3),
    }
    (output / contract.METADATA_FILE).write_text(json.dumps(metadata, indent=2, sort_keys=True))
    if env.get(contract.OUTPUT_URI):
        upload_outputs(output, env[contract.OUTPUT_URI])
    return metadata


def _s3_client() -> Any:
    return make_client(S3Settings.from_env(bucket="unused"))


def fetch_input(uri: str, folder: Path) -> Path:
    """A local path for a data URI: s3:// objects are downloaded first."""
    if not uri.startswith("s3://"):
        return Path(uri.removeprefix("file://"))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / Path(uri).name
    try:
        target.write_bytes(read_uri(_s3_client(), uri))
    except ArtifactError as error:
        raise ContractError(f"cannot read {uri}: {error}") from error
    return target


def upload_outputs(output: Path, uri: str) -> None:
    """Copy the contract's output files to ``uri`` (s3://bucket/prefix)."""
    client = _s3_client()
    for name, accepted in contract.ACCEPTED_OUTPUTS.items():
        file = next((f for f in accepted if (output / f).exists()), None)
        if file is None:
            raise ContractError(f"no {name} output to write: none of {list(accepted)}")
        try:
            write_uri(client, f"{uri.rstrip('/')}/{file}", (output / file).read_bytes())
        except ArtifactError as error:
            raise ContractError(f"cannot write {uri}/{file}: {error}") from error


def main() -> int:
    try:
        metadata = train(os.environ)
    except ContractError as error:
        print(f"modelgate-trainer: {error}", file=sys.stderr)
        return 2
    print(
        f"modelgate-trainer: trained {metadata['estimator']} on "
        f"{metadata['data']['train']['rows']} rows; outputs in "
        f"{os.environ.get(contract.OUTPUT_URI) or os.environ.get(contract.OUTPUT_DIR)}"
    )
    return 0
