"""What the plugin's verbs write. Pure: each builds the change to a spec
(never a status) that the operator acts on, or refuses naming the fix.

- ``approve RELEASE --environment ENV [--config-hash H] [--comment C]``
  appends to ``spec.promotion.approvals`` an entry with ``environment``,
  ``approvedBy`` (the caller, as the API server knows them), ``approvedAt``
  and, if given, ``configHash`` and ``comment``. It is a JSON merge patch of
  the whole list carrying the release's ``resourceVersion``: a concurrent
  edit makes it fail (409) rather than lose either. GitOps users write the
  same entry through Git.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

HASH = re.compile(r"^[a-f0-9]{12,64}$")


class Refused(ValueError):
    """The change cannot be made as asked; the message names the fix."""


def approval_patch(
    release: dict[str, Any],
    environment: str,
    who: str,
    now: datetime,
    config_hash: str | None = None,
    comment: str | None = None,
) -> dict[str, Any]:
    """The merge patch that records ``who`` approving ``release`` into
    ``environment``."""
    meta = release.get("metadata") or {}
    name = f"{meta.get('namespace')}/{meta.get('name')}"
    promotion = (release.get("spec") or {}).get("promotion") or {}
    path = list(promotion.get("environments") or [])
    if environment not in path:
        raise Refused(
            f"environment {environment!r} is not on the promotion path of ModelRelease {name} "
            f"({', '.join(path) or 'none'}): pass --environment with one of them"
        )
    if config_hash is not None and not HASH.match(config_hash):
        raise Refused(
            f"--config-hash {config_hash!r} is not a config hash: give 12 to 64 lowercase hex "
            "digits, as `kubectl modelgate get release` shows the environment's config"
        )
    approvals = list(promotion.get("approvals") or [])
    for existing in approvals:
        same_config = existing.get("configHash") == config_hash or (
            config_hash is not None
            and str(existing.get("configHash") or "").startswith(config_hash)
        )
        if existing.get("environment") == environment and same_config:
            raise Refused(
                f"ModelRelease {name} already has an approval for {environment}"
                + (f" and config {config_hash}" if config_hash else "")
                + f" (by {existing.get('approvedBy') or 'unknown'}); nothing to do"
            )
    entry: dict[str, Any] = {
        "environment": environment,
        "approvedBy": who,
        "approvedAt": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if config_hash is not None:
        entry["configHash"] = config_hash
    if comment:
        entry["comment"] = comment
    return {
        "metadata": {"resourceVersion": meta.get("resourceVersion")},
        "spec": {"promotion": {"approvals": [*approvals, entry]}},
    }
