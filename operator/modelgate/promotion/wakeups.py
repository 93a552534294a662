"""Which releases an edit of an Environment or a QualityGate concerns.

An index kept from the ModelReleases' watch events: the edit of one object
wakes the releases that name it, found by a dictionary lookup, not by a scan
of every release. Pure: fed with objects as the API server returns them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

ENVIRONMENT = "Environment"
QUALITY_GATE = "QualityGate"
# A release blocked on its promotion path, a config rule or leakage may be
# unblocked by an edit of any Environment of its namespace (a leakage finding
# names identifiers declared by environments it does not list).
BLOCKED = "Blocked"

Reference = tuple[str, str, str]  # (kind, namespace, name)


def release_key(namespace: str, name: str) -> str:
    return f"{namespace}/{name}"


def references_of(release: Mapping[str, Any]) -> set[Reference]:
    """The Environments and the QualityGate a release (as stored) names."""
    metadata = release.get("metadata") or {}
    namespace = str(metadata.get("namespace", ""))
    spec = release.get("spec") or {}
    found: set[Reference] = set()
    gate = (spec.get("gate") or {}).get("name")
    if isinstance(gate, str):
        found.add((QUALITY_GATE, namespace, gate))
    environments = (spec.get("promotion") or {}).get("environments") or []
    for name in environments if isinstance(environments, list) else []:
        if isinstance(name, str):
            found.add((ENVIRONMENT, namespace, name))
    return found


class ReleaseIndex:
    """Releases by the objects they name, and the blocked ones by namespace."""

    def __init__(self) -> None:
        self._by_reference: defaultdict[Reference, set[str]] = defaultdict(set)
        self._references: dict[str, set[Reference]] = {}
        self._blocked: defaultdict[str, set[str]] = defaultdict(set)

    def update(self, release: Mapping[str, Any], deleted: bool = False) -> None:
        """Index a release as the watch delivered it (or forget it when deleted)."""
        metadata = release.get("metadata") or {}
        namespace = str(metadata.get("namespace", ""))
        key = release_key(namespace, str(metadata.get("name", "")))
        for reference in self._references.pop(key, set()):
            holders = self._by_reference[reference]
            holders.discard(key)
            if not holders:
                del self._by_reference[reference]
        self._blocked[namespace].discard(key)
        if deleted:
            if not self._blocked[namespace]:
                del self._blocked[namespace]
            return
        references = references_of(release)
        self._references[key] = references
        for reference in references:
            self._by_reference[reference].add(key)
        if (release.get("status") or {}).get("phase") == BLOCKED:
            self._blocked[namespace].add(key)

    def concerned(self, kind: str, namespace: str, name: str) -> set[str]:
        """The releases (``namespace/name``) an edit of this object may change."""
        found = set(self._by_reference.get((kind, namespace, name), ()))
        if kind == ENVIRONMENT:
            found |= self._blocked.get(namespace, set())
        return found

    def __len__(self) -> int:
        return len(self._references)
