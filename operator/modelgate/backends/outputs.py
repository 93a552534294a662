"""A finished training run's output files, taken into the artifact store."""

from __future__ import annotations

from modelgate.api.modelrelease import ArtifactRecord
from modelgate.backends.base import ArtifactNotFoundError, ArtifactStore
from modelgate.trainer import contract


def ingest_outputs(store: ArtifactStore, output: str) -> tuple[ArtifactRecord, ...]:
    """Per output, the first of its accepted files under ``output`` (a folder
    or a store prefix), streamed and copied inside the store: the caller's
    memory does not grow with the size of the predictions. An output with
    no file is left out; the core fails the release closed without
    predictions."""
    artifacts: list[ArtifactRecord] = []
    for name, files in contract.ACCEPTED_OUTPUTS.items():
        for file in files:
            try:
                artifacts.append(store.put_uri(f"{output.rstrip('/')}/{file}", name))
            except ArtifactNotFoundError:
                continue
            break
    return tuple(artifacts)
