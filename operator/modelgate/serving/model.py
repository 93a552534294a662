"""Loading a release's model artifact for serving, and scoring with it.

The bytes are checked against the SHA-256 the release recorded *before*
anything parses them, and skops loads only types on an explicit allow-list:
the server runs the gated model or nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import skops.io as sio

from modelgate.backends.s3 import S3Settings, make_client, read_uri
from modelgate.serving.schema import RANGE_TOLERANCE, InputSchema
from modelgate.trainer.contract import label_strings

# What a reference-trainer model may contain besides scikit-learn's own
# estimators and transformers.
TRUSTED_TYPES = frozenset({"numpy.dtype", "numpy.ndarray", "numpy.random.mtrand.RandomState"})
TRUSTED_PREFIXES = ("sklearn.",)


class ModelLoadError(RuntimeError):
    """The artifact is not the recorded one, or holds types nobody trusted."""


def read_artifact(uri: str) -> bytes:
    """Bytes from a local path, file:// or s3:// (endpoint and keys from MODELGATE_S3_*/AWS_*)."""
    if uri.startswith("s3://"):
        return read_uri(make_client(S3Settings.from_env(bucket="unused")), uri)
    return Path(uri.removeprefix("file://")).read_bytes()


def verified(data: bytes, expected: str, what: str) -> bytes:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected.lower():
        raise ModelLoadError(
            f"{what} has SHA-256 {actual}, the release recorded {expected}: refusing to load it"
        )
    return data


def trusted_loads(data: bytes) -> Any:
    untrusted = sio.get_untrusted_types(data=data)
    refused = [
        t for t in untrusted if t not in TRUSTED_TYPES and not t.startswith(TRUSTED_PREFIXES)
    ]
    if refused:
        raise ModelLoadError(
            f"the model holds types outside the trusted list: {', '.join(sorted(refused))}"
        )
    return sio.loads(data, trusted=untrusted)


@dataclass
class LoadedModel:
    estimator: Any
    schema: InputSchema
    task: str
    positive_label: str
    name: str
    version: str
    sha256: str

    @classmethod
    def load(
        cls,
        model_uri: str,
        model_sha256: str,
        metadata_uri: str,
        metadata_sha256: str,
        check_ranges: bool = True,
        range_tolerance: float = RANGE_TOLERANCE,
    ) -> LoadedModel:
        metadata_bytes = verified(read_artifact(metadata_uri), metadata_sha256, "metadata.json")
        metadata: Mapping[str, Any] = json.loads(metadata_bytes)
        estimator = trusted_loads(verified(read_artifact(model_uri), model_sha256, "the model"))
        model = metadata.get("model") or {}
        return cls(
            estimator=estimator,
            schema=InputSchema.from_metadata(metadata, check_ranges, range_tolerance),
            task=str(metadata.get("task", "binary")),
            positive_label=str(metadata.get("positiveLabel", "1")),
            name=str(model.get("name") or ""),
            version=str(model.get("version") or ""),
            sha256=model_sha256.lower(),
        )

    def predict(self, columns: Mapping[str, list[Any]]) -> dict[str, Any]:
        """Predictions and scores for validated columns, as the offline
        predictions file has them (y_pred, y_score / y_score_<class>)."""
        frame = pd.DataFrame({name: columns[name] for name in self.schema.names})
        for feature in self.schema.features:
            if feature.numeric:
                frame[feature.name] = pd.to_numeric(frame[feature.name], errors="coerce")
        predicted = self.estimator.predict(frame)
        if self.task == "regression":
            return {"predictions": [float(v) for v in predicted]}
        answer: dict[str, Any] = {"predictions": label_strings(predicted)}
        if hasattr(self.estimator, "predict_proba"):
            probabilities = self.estimator.predict_proba(frame)
            classes = label_strings(self.estimator.classes_)
            if self.task == "binary" and self.positive_label in classes:
                column = classes.index(self.positive_label)
                answer["scores"] = [float(p) for p in probabilities[:, column]]
            else:
                answer["scores"] = [
                    {label: float(p) for label, p in zip(classes, row, strict=True)}
                    for row in probabilities
                ]
        return answer
