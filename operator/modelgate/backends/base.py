"""What the backends share: the artifact-store interface and its errors.

Runners and deployers are per driver (local processes and files, or Jobs and
Deployments); the core sees only their observations and emits actions.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Protocol

from modelgate.api.modelrelease import ArtifactRecord


class ArtifactError(RuntimeError):
    """Base of artifact-store failures; ``transient`` says whether to retry."""

    transient = False


class ArtifactIntegrityError(ArtifactError):
    """Stored bytes no longer match their recorded SHA-256: fail closed."""


class ArtifactNotFoundError(ArtifactError):
    """No artifact at the recorded location."""


class ArtifactAccessError(ArtifactError):
    """The store refused access (credentials, policy, missing bucket): fix the setup."""


class ArtifactUnavailableError(ArtifactError):
    """The store is down, throttling or timing out: try again later."""

    transient = True


class ArtifactStore(Protocol):
    """Immutable, content-addressed storage."""

    def put_bytes(self, data: bytes, name: str) -> ArtifactRecord: ...

    def put_file(self, path: Path, name: str) -> ArtifactRecord: ...

    def put_uri(self, uri: str, name: str) -> ArtifactRecord:
        """Store the object at ``uri`` (in the same store), streamed: never
        the whole object in memory."""
        ...

    def get_bytes(self, record: ArtifactRecord) -> bytes:
        """The content, verified against ``record.sha256``."""
        ...

    def get_path(self, record: ArtifactRecord, scratch: Path) -> Path:
        """A local file with the content, verified against ``record.sha256``
        while it streams (never the whole artifact in memory); ``scratch`` is
        a folder the caller owns for downloads."""
        ...


HASH_CHUNK = 1 << 20


def verify_file(path: Path, record: ArtifactRecord) -> Path:
    """``path`` if its SHA-256 is the record's (read in chunks), else raise."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() != record.sha256:
        raise ArtifactIntegrityError(
            f"artifact {record.name} at {record.uri} has SHA-256 {digest.hexdigest()}, "
            f"recorded {record.sha256}: refusing to use it"
        )
    return path
