"""``python -m modelgate.layout``: the model laid out for a model server of the
release's own, before it starts (a serving pod's init container).

The release's model artifact (``MODELGATE_MODEL_URI``, from the environment's
ConfigMap) is read, checked against the SHA-256 the release recorded
(``MODELGATE_MODEL_SHA256``) and written to ``MODELGATE_MODEL_FILE``, in the
volume the server container mounts. Nothing here parses the file: the
server alone loads it. Exit 0 laid out, 2 not (the last line says why; the
pod stays in its init step and the rollout waits, naming it).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

from modelgate.backends.base import ArtifactError
from modelgate.serving.artifacts import ModelLoadError, read_artifact, verified
from modelgate.serving.runtime import MODEL_FILE
from modelgate.trainer import contract


class LayoutError(RuntimeError):
    """The model could not be laid out; the message says why."""


def lay_out(env: Mapping[str, str]) -> Path:
    names = (contract.SERVER_MODEL_URI, contract.SERVER_MODEL_SHA256, MODEL_FILE)
    missing = [n for n in names if not env.get(n)]
    if missing:
        raise LayoutError(f"missing environment variables: {', '.join(missing)}")
    uri = env[contract.SERVER_MODEL_URI]
    try:
        data = verified(read_artifact(uri), env[contract.SERVER_MODEL_SHA256], f"the model {uri}")
    except ModelLoadError as error:
        raise LayoutError(str(error)) from None
    except (OSError, ArtifactError) as error:
        raise LayoutError(f"the model {uri} cannot be read: {error}") from None
    target = Path(env[MODEL_FILE])
    target.parent.mkdir(parents=True, exist_ok=True)
    # Whole or not at all: a server never sees half a file.
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def main() -> int:
    try:
        target = lay_out(os.environ)
    except LayoutError as error:
        print(f"modelgate-layout: {error}", file=sys.stderr)
        return 2
    print(f"modelgate-layout: laid out {target} ({target.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
