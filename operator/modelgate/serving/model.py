"""Loading a release's model artifact for serving, and scoring with it.

The bytes are checked against the SHA-256 the release recorded *before*
anything parses them, and skops loads only types on an explicit allow-list:
the server runs the gated model or nothing.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import skops.io as sio
from sklearn.pipeline import Pipeline

from modelgate.serving.artifacts import ModelLoadError, read_artifact, verified
from modelgate.serving.schema import RANGE_TOLERANCE, InputSchema
from modelgate.trainer.contract import label_strings

try:  # where scikit-learn keeps the forests' shared predict()
    from sklearn.ensemble._forest import ForestClassifier
except ImportError:  # moved: every model takes the two-pass path
    ForestClassifier = None

# What a reference-trainer model may contain besides scikit-learn's own
# estimators and transformers.
TRUSTED_TYPES = frozenset({"numpy.dtype", "numpy.ndarray", "numpy.random.mtrand.RandomState"})
TRUSTED_PREFIXES = ("sklearn.",)


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
    # metadata.json as recorded (the live metrics' training references).
    metadata: Mapping[str, Any] = field(default_factory=dict)
    _transforms: Any = field(default=None, repr=False)

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
            metadata=metadata,
        )

    @property
    def classes(self) -> list[str]:
        """The class labels, in predict_proba's order (none for a regression)."""
        if self.task == "regression" or not hasattr(self.estimator, "classes_"):
            return []
        return label_strings(self.estimator.classes_)

    def _final_step(self, frame: pd.DataFrame) -> tuple[Any, Any]:
        """The last estimator and its inputs: a pipeline's transforms run
        once for both predict and predict_proba, exactly as each would run
        them."""
        if isinstance(self.estimator, Pipeline) and len(self.estimator.steps) > 1:
            if self._transforms is None:
                self._transforms = self.estimator[:-1]
            return self.estimator.steps[-1][1], self._transforms.transform(frame)
        return self.estimator, frame

    def predict(self, columns: Mapping[str, list[Any]]) -> dict[str, Any]:
        """Predictions and scores for validated columns, as the offline
        predictions file has them (y_pred, y_score / y_score_<class>)."""
        frame = pd.DataFrame({name: columns[name] for name in self.schema.names})
        for feature in self.schema.features:
            if feature.numeric:
                frame[feature.name] = pd.to_numeric(frame[feature.name], errors="coerce")
        final, inputs = self._final_step(frame)
        probabilities = (
            final.predict_proba(inputs)
            if self.task != "regression" and hasattr(final, "predict_proba")
            else None
        )
        if probabilities is not None and _predicts_by_argmax(final):
            # What its predict() computes from these same probabilities.
            predicted = final.classes_.take(np.argmax(probabilities, axis=1), axis=0)
        else:
            predicted = final.predict(inputs)
        if self.task == "regression":
            return {"predictions": [float(v) for v in predicted]}
        answer: dict[str, Any] = {"predictions": label_strings(predicted)}
        if probabilities is not None:
            classes = label_strings(final.classes_)
            if self.task == "binary" and self.positive_label in classes:
                column = classes.index(self.positive_label)
                answer["scores"] = [float(p) for p in probabilities[:, column]]
            else:
                answer["scores"] = [
                    {label: float(p) for label, p in zip(classes, row, strict=True)}
                    for row in probabilities
                ]
        return answer


def _predicts_by_argmax(estimator: Any) -> bool:
    """A single-output forest whose predict() is scikit-learn's own: it is
    the class of the largest predict_proba, so one pass gives both."""
    return (
        ForestClassifier is not None
        and isinstance(estimator, ForestClassifier)
        and type(estimator).predict is ForestClassifier.predict
        and getattr(estimator, "n_outputs_", 1) == 1
    )
