"""Which releases, and which Environments, a watch event concerns.

Indexes kept from the watch events: the edit of an Environment or a
QualityGate wakes the releases that name it, found by a dictionary lookup,
not by a scan of every release; an Environment is judged again when an
Environment of its namespace changes or a release live in it does. Pure:
fed with objects as the API server returns them.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from modelgate.api.modelrelease import EnvironmentPhase

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


def environment_key(namespace: str, name: str) -> str:
    """An Environment's wake-up key (apart from the releases' ``namespace/name``)."""
    return f"Environment:{namespace}/{name}"


def live_environments(release: Mapping[str, Any]) -> frozenset[str]:
    """The environments a release (as stored) is live in: there, its config
    is what the Environment's ConfigValid judges."""
    entries = (release.get("status") or {}).get("environments") or []
    return frozenset(
        str(e.get("name"))
        for e in (entries if isinstance(entries, list) else [])
        if isinstance(e, Mapping) and e.get("phase") == EnvironmentPhase.DEPLOYED.value
    )


class EnvironmentIndex:
    """Which Environments' conditions an event may change.

    An Environment's verdicts read the Environments of its namespace (the
    promotion graph, rules that name other environments) and the spec of
    each release live in it (its overrides). Each method returns the wake-up
    keys of the Environments to judge again.
    """

    def __init__(self) -> None:
        self._names: defaultdict[str, set[str]] = defaultdict(set)
        # release key -> (generation, environments it is live in)
        self._live: dict[str, tuple[object, frozenset[str]]] = {}

    def environment_changed(
        self, environment: Mapping[str, Any], deleted: bool = False
    ) -> set[str]:
        """A spec edit (or creation, or deletion): its namespace's other
        Environments (its own verdict is its change handler's)."""
        metadata = environment.get("metadata") or {}
        namespace = str(metadata.get("namespace", ""))
        name = str(metadata.get("name", ""))
        names = self._names[namespace]
        if deleted:
            names.discard(name)
        else:
            names.add(name)
        woken = {environment_key(namespace, n) for n in names if n != name}
        if not names:
            del self._names[namespace]
        return woken

    def release_changed(self, release: Mapping[str, Any], deleted: bool = False) -> set[str]:
        """The Environments a release is or was live in, when where it is
        live or its spec changed; none for any other status write."""
        metadata = release.get("metadata") or {}
        namespace = str(metadata.get("namespace", ""))
        key = release_key(namespace, str(metadata.get("name", "")))
        before = self._live.pop(key, None)
        now = (metadata.get("generation"), frozenset() if deleted else live_environments(release))
        if not deleted:
            self._live[key] = now
        if before == now:
            return set()
        affected = now[1] | (before[1] if before is not None else frozenset())
        return {environment_key(namespace, n) for n in affected}
