"""Live traffic for analysis tests: evaluation rows sent to model servers
from a background thread while a release soaks."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Callable
from types import TracebackType
from typing import Any

import pandas as pd

FEATURES = ["age", "income", "debt_ratio", "credit_lines", "late_payments", "region"]


def feature_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """The model's input columns of ``frame`` as JSON-ready rows."""
    return [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        for row in frame[FEATURES].to_dict("records")
    ]


def riskiest(frame: pd.DataFrame, count: int = 100) -> pd.DataFrame:
    """The applicants with the most late payments and debt: traffic whose
    scores the model puts far above the evaluation data's."""
    return frame.sort_values(["late_payments", "debt_ratio"]).tail(count)


class Traffic:
    """Every 0.1 s, ``servers()`` (name -> base URL) are sent ``rows`` in one
    request each, until the context ends; ``sent`` counts answers by name."""

    def __init__(self, servers: Callable[[], dict[str, str]], rows: list[dict[str, Any]]) -> None:
        self.servers = servers
        self.body = json.dumps({"instances": rows}).encode()
        self.stopped = threading.Event()
        self.sent: dict[str, int] = {}
        self.thread = threading.Thread(target=self._send, daemon=True)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopped.set()
        self.thread.join(timeout=30)

    def _send(self) -> None:
        while not self.stopped.wait(0.1):
            for name, url in self.servers().items():
                request = urllib.request.Request(
                    f"{url}/v1/predict",
                    data=self.body,
                    headers={"Content-Type": "application/json"},
                )
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        answer.read()
                except OSError:
                    continue  # a server starting or going away
                self.sent[name] = self.sent.get(name, 0) + 1
