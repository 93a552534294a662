"""Live traffic for analysis tests: evaluation rows sent to model servers
from a background thread while a release soaks."""

from __future__ import annotations

import json
import random
import threading
import urllib.request
from collections.abc import Callable
from types import TracebackType
from typing import Any

import pandas as pd

# The arm a router answered from (modelgate.serving.router's ARM_HEADER).
ARM_HEADER = "x-modelgate-arm"
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
    request each, until the context ends; ``sent`` counts answers by name.
    With ``batch``, each request carries ``batch`` of the rows instead, a
    chunk drawn at random (a gateway that alternates between backends would
    otherwise give each the same fixed half of the chunks); ``headers`` go
    with each. With ``user_header``, each request also names one of 300
    users in it, and ``arms`` records which arm answered each user (the
    router's ``x-modelgate-arm`` header, when a router answered)."""

    def __init__(
        self,
        servers: Callable[[], dict[str, str]],
        rows: list[dict[str, Any]],
        batch: int | None = None,
        headers: dict[str, str] | None = None,
        user_header: str | None = None,
    ) -> None:
        self.servers = servers
        size = batch or len(rows)
        self.bodies = [
            json.dumps({"instances": (rows + rows)[start : start + size]}).encode()
            for start in range(0, len(rows), size)
        ]
        self.headers = {"Content-Type": "application/json", **(headers or {})}
        self.user_header = user_header
        self.arms: dict[str, set[str]] = {}
        self.lock = threading.Lock()
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
        draw = random.Random(0)
        while not self.stopped.wait(0.1):
            for name, url in self.servers().items():
                body = draw.choice(self.bodies)
                headers = dict(self.headers)
                user = f"user-{draw.randrange(300)}"
                if self.user_header is not None:
                    headers[self.user_header] = user
                request = urllib.request.Request(f"{url}/v1/predict", data=body, headers=headers)
                try:
                    with urllib.request.urlopen(request, timeout=10) as answer:
                        answer.read()
                        arm = answer.headers.get(ARM_HEADER)
                except OSError:
                    continue  # a server starting or going away
                self.sent[name] = self.sent.get(name, 0) + 1
                if self.user_header is not None and arm is not None:
                    with self.lock:
                        self.arms.setdefault(user, set()).add(arm)

    def take_arms(self) -> dict[str, set[str]]:
        """The arms each user was answered from so far, forgotten here."""
        with self.lock:
            taken, self.arms = self.arms, {}
        return taken
