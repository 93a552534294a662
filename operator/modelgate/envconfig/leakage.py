"""Cross-environment leakage: a value for one environment naming another.

The classic failure is a production config still pointing at the backtesting
feature store. Rules catch it only if someone wrote them; this check needs
none. Each Environment has identifiers: its name, its namespace, the hosts and
buckets its own config points at, and what it declares (``identifiers``,
``markers``). A value destined for environment A that contains an identifier
of environment B, and not of A itself, is a violation.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from modelgate.api.environment import Environment
from modelgate.envconfig.violations import MASK, Violation

URL_PATTERN = re.compile(r"[a-z][a-z0-9+.-]*://[^\s,;\"']+", re.IGNORECASE)
# Generic words that name no environment in particular: never identifiers.
TOO_GENERIC = {"default", "localhost", "example", "com", "svc", "cluster", "local"}
MIN_LENGTH = 3


def _hosts_and_buckets(value: str) -> set[str]:
    found: set[str] = set()
    for url in URL_PATTERN.findall(value):
        parts = urlsplit(url)
        if parts.scheme.lower() in {"s3", "gs", "gcs", "abfs"} and parts.netloc:
            found.add(parts.netloc.lower())  # the bucket
        elif parts.hostname:
            found.add(parts.hostname.lower())
    return found


def identifiers(environment: Environment) -> set[str]:
    """What names this environment (lower case)."""
    names = {environment.name.lower(), environment.spec.namespace.lower()}
    for item in environment.spec.config:
        names |= _hosts_and_buckets(item.value)
    names |= {i.lower() for i in environment.spec.identifiers}
    names |= {m.lower() for m in environment.spec.markers}
    return {n for n in names if len(n) >= MIN_LENGTH and n not in TOO_GENERIC}


def _mentions(value: str, identifier: str) -> bool:
    # Whole words or host labels: "staging" matches "features.staging.example.com"
    # but not "stagingarea".
    pattern = rf"(?<![a-z0-9]){re.escape(identifier)}(?![a-z0-9])"
    return re.search(pattern, value.lower()) is not None


def detect_leakage(
    target: Environment,
    config: Mapping[str, str],
    environments: Iterable[Environment],
    secret_keys: Iterable[str] = (),
) -> list[Violation]:
    """Every config value for ``target`` that names another environment."""
    if not target.spec.leakage.enabled:
        return []
    own = identifiers(target)
    ignored = set(target.spec.leakage.ignore_keys)
    secrets = set(secret_keys)
    others = {env.name: identifiers(env) - own for env in environments if env.name != target.name}
    found: list[Violation] = []
    for key, value in sorted(config.items()):
        if key in ignored:
            continue
        for other, names in sorted(others.items()):
            hits = sorted(n for n in names if _mentions(value, n))
            if hits:
                found.append(
                    Violation(
                        environment=target.name,
                        key=key,
                        rule=f"leakage:{other}",
                        value=MASK if key in secrets else value,
                        message=(
                            f"the value names environment {other} "
                            f"({', '.join(repr(h) for h in hits)}), not {target.name}"
                        ),
                        fix=(
                            f"point {key} at {target.name}'s own resources, or list {key} "
                            "in spec.leakage.ignoreKeys if sharing is intended"
                        ),
                    )
                )
    return found
