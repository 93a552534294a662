"""The training-job contract: what a training container reads and writes.

Any image honouring this contract can train a release. Inputs arrive as
environment variables; outputs are files in ``MODELGATE_OUTPUT_DIR``.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable
from typing import Any, Final

# Inputs (environment variables).
TRAIN_DATA: Final = "MODELGATE_TRAIN_DATA"  # path or URI of the training table
EVAL_DATA: Final = "MODELGATE_EVAL_DATA"  # path or URI of the evaluation table
TARGET: Final = "MODELGATE_TARGET"  # label column
ID_COLUMN: Final = "MODELGATE_ID_COLUMN"  # optional row id column
TASK: Final = "MODELGATE_TASK"  # binary | multiclass | regression
POSITIVE_LABEL: Final = "MODELGATE_POSITIVE_LABEL"  # binary tasks, default "1"
PARAMS: Final = "MODELGATE_PARAMS"  # JSON object of hyperparameters
SEED: Final = "MODELGATE_SEED"  # integer random seed
OUTPUT_DIR: Final = "MODELGATE_OUTPUT_DIR"  # where the outputs below are written
# Optional s3://bucket/prefix the outputs are copied to (how a Job hands them
# to the operator); data URIs may be s3:// too. S3 endpoint and credentials
# come from MODELGATE_S3_ENDPOINT, MODELGATE_S3_PATH_STYLE and AWS_*.
OUTPUT_URI: Final = "MODELGATE_OUTPUT_URI"
RELEASE: Final = "MODELGATE_RELEASE"  # namespace/name of the ModelRelease
MODEL_NAME: Final = "MODELGATE_MODEL_NAME"
MODEL_VERSION: Final = "MODELGATE_MODEL_VERSION"
# JSON list of the gate's behaviour checks: [{name, column, add|set, expect, tolerance}]
BEHAVIOR_TESTS: Final = "MODELGATE_BEHAVIOR_TESTS"

# The import run of a registered MLflow model (``python -m modelgate.importer``):
# the tracking server, the model and the version the release resolved;
# credentials in MLflow's own variables (MLFLOW_TRACKING_TOKEN, or
# MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD).
MLFLOW_TRACKING_URI: Final = "MODELGATE_MLFLOW_TRACKING_URI"
MLFLOW_MODEL: Final = "MODELGATE_MLFLOW_MODEL"
MLFLOW_VERSION: Final = "MODELGATE_MLFLOW_VERSION"
MLFLOW_TOKEN: Final = "MLFLOW_TRACKING_TOKEN"
MLFLOW_USERNAME: Final = "MLFLOW_TRACKING_USERNAME"
MLFLOW_PASSWORD: Final = "MLFLOW_TRACKING_PASSWORD"

# Or the import run of a stored model file: its URI, SHA-256, format (Skops or
# Pickle) and, when it is not read from the model, its columns (JSON list).
ARTIFACT_URI: Final = "MODELGATE_ARTIFACT_URI"
ARTIFACT_SHA256: Final = "MODELGATE_ARTIFACT_SHA256"
ARTIFACT_FORMAT: Final = "MODELGATE_ARTIFACT_FORMAT"
FEATURES: Final = "MODELGATE_FEATURES"

# Outputs (file names in OUTPUT_DIR).
MODEL_FILE: Final = "model.skops"  # the fitted model, skops format (never pickle)
# Or a model that only its own server loads (any format, a pickle too): an
# import run served by a model server of the release's (metadata.json's
# servedBy names the file name the server is given).
SERVED_MODEL_FILE: Final = "model.served"
# Evaluation columns + y_true, y_pred, y_score. Parquet in row groups of
# PREDICTIONS_ROW_GROUP rows: the unit a sharded evaluation splits.
PREDICTIONS_FILE: Final = "predictions.parquet"
PREDICTIONS_ROW_GROUP: Final = 65_536
# Also taken from trainers of other images: a CSV file is one piece, read
# whole by one shard.
PREDICTIONS_CSV_FILE: Final = "predictions.csv"
METADATA_FILE: Final = "metadata.json"  # params, versions, data SHA-256s, schema

# What the reference trainer writes.
OUTPUTS: Final = {
    "model": MODEL_FILE,
    "predictions": PREDICTIONS_FILE,
    "metadata": METADATA_FILE,
}

# What is taken from any training run, per output: the first file present.
ACCEPTED_OUTPUTS: Final[dict[str, tuple[str, ...]]] = {
    "model": (MODEL_FILE, SERVED_MODEL_FILE),
    "predictions": (PREDICTIONS_FILE, PREDICTIONS_CSV_FILE),
    "metadata": (METADATA_FILE,),
}

# What the reference model server reads (flags or environment): a run's
# model and metadata outputs, by URI and SHA-256. The operator writes them
# into a ReferenceServer deployment's config.
SERVER_MODEL_URI: Final = "MODELGATE_MODEL_URI"
SERVER_MODEL_SHA256: Final = "MODELGATE_MODEL_SHA256"
SERVER_METADATA_URI: Final = "MODELGATE_METADATA_URI"
SERVER_METADATA_SHA256: Final = "MODELGATE_METADATA_SHA256"
SERVER_INPUTS: Final = (
    SERVER_MODEL_URI,
    SERVER_MODEL_SHA256,
    SERVER_METADATA_URI,
    SERVER_METADATA_SHA256,
)

# The import run scores through a model server of the release's own, run as
# a local process: JSON {command, modelName, env: [{name, value}]} (see
# modelgate.serving.runtime for what the command is told).
MODEL_SERVER: Final = "MODELGATE_MODEL_SERVER"
# In a pod the release's model server runs beside the import run (a native
# sidecar on the model a first step fetched): its URL, and no command is run.
MODEL_SERVER_URL: Final = "MODELGATE_MODEL_SERVER_URL"

# Keys of MODELGATE_PARAMS the reference trainer reserves; the rest go to the
# estimator's constructor.
RESERVED_PARAMS: Final = ("estimator", "features", "exclude", "importance_repeats")


def label_string(value: Any) -> str:
    """A class label as the contract writes it (predictions, the model
    server's answers): integral numbers without a decimal point, 1.0 -> "1"."""
    # numbers.Real minus Integral: Python and numpy floats alike.
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        number = float(value)
        if number.is_integer():
            return str(int(number))
    return str(value)


def label_strings(values: Iterable[Any]) -> list[str]:
    return [label_string(value) for value in values]
