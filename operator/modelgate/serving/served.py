"""What a release's metadata.json says its model takes and answers: the
features, the task, the positive label and the class order. The steps that
talk to a model server (verification, scoring) go by it, not by what the
server declares, so a server that declares nothing is asked the same way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Served:
    """What the release's metadata.json says the model takes and answers."""

    features: list[str]
    task: str
    positive_label: str
    classes: list[str]

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> Served:
        features = [str(f["name"]) for f in metadata.get("features") or [] if "name" in f]
        if not features:
            raise RuntimeError("the release's metadata.json lists no features")
        return cls(
            features=features,
            task=str(metadata.get("task", "binary")),
            positive_label=str(metadata.get("positiveLabel", "1")),
            classes=[str(c) for c in metadata.get("classes") or []],
        )
