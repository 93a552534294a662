"""Reading a release's artifacts for serving and verification, checked
against the SHA-256 the release recorded before anything parses them. Light:
no model library is imported here (the verifier never loads a model)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from modelgate.backends.s3 import S3Settings, make_client, read_uri


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
