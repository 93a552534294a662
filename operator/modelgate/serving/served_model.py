"""A model answered by a server over the Open Inference Protocol, with the
surface of a fitted scikit-learn estimator that the trainer's findings use
(``predict``, ``predict_proba``, ``score``, ``classes_``,
``feature_names_in_``): permutation importance and the gate's behaviour
tests are then measured on what the server answers, and the model is never
loaded here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from modelgate.serving import oip_client
from modelgate.trainer.contract import label_string

BATCH_ROWS = 2048


class ServedModel:
    def __init__(
        self,
        url: str,
        model_name: str,
        features: Sequence[str],
        task: str,
        classes: Sequence[str],
        timeout: float = 60,
    ) -> None:
        self.url = url
        self.model_name = model_name
        self.feature_names_in_ = np.asarray(list(features), dtype=object)
        self.task = task
        self.classes_ = np.asarray(list(classes), dtype=object)
        self.timeout = timeout
        self._infer = f"{oip_client.model_path(url, model_name)}/infer"
        self.requests = 0

    @property
    def _estimator_type(self) -> str:
        return "regressor" if self.task == "regression" else "classifier"

    def fit(self, *_: Any, **__: Any) -> ServedModel:
        raise TypeError("a served model is fitted where it was trained, not here")

    def _answers(self, frame: pd.DataFrame, scores: bool) -> list[oip_client.Answers]:
        outputs = ["predict", "predict_proba"] if scores else ["predict"]
        found: list[oip_client.Answers] = []
        for start in range(0, len(frame), BATCH_ROWS):
            batch = frame.iloc[start : start + BATCH_ROWS]
            columns = {str(f): batch[f].tolist() for f in self.feature_names_in_}
            body = json.dumps(oip_client.infer_body(columns, outputs), allow_nan=False).encode()
            status, answer = oip_client.request(self._infer, body, self.timeout)
            self.requests += 1
            if status != 200:
                raise oip_client.AnswerError(
                    f"rows {start}..{start + len(batch) - 1}: the server answered {status}: "
                    f"{answer.get('error') if isinstance(answer, dict) else answer}"
                )
            classes = [str(c) for c in self.classes_] if scores else None
            found.append(oip_client.read_answers(answer, len(batch), classes))
        return found

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        values = [v for a in self._answers(frame, scores=False) for v in a.predictions]
        if self.task == "regression":
            return np.asarray(values, dtype=float)
        return np.asarray([label_string(v) for v in values], dtype=object)

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        if self.task == "regression":
            raise AttributeError("a regression model has no predict_proba")
        rows = [
            [p[str(c)] for c in self.classes_]
            for a in self._answers(frame, scores=True)
            for p in a.probabilities or []
        ]
        return np.asarray(rows, dtype=float).reshape(len(frame), len(self.classes_))

    def score(self, frame: pd.DataFrame, truth: Any) -> float:
        """Accuracy (a classifier) or R² (a regressor), as scikit-learn's estimators score."""
        predicted = self.predict(frame)
        if self.task == "regression":
            actual = np.asarray(truth, dtype=float)
            residual = float(np.sum((actual - predicted) ** 2))
            total = float(np.sum((actual - actual.mean()) ** 2))
            return 1.0 - residual / total if total else 0.0
        labels = np.asarray([label_string(v) for v in truth], dtype=object)
        return float(np.mean(labels == predicted))
