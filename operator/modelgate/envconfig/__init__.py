"""Environment configuration: merge, hash and validate before every deploy.

Merge order: the Environment's own ``config`` first, then the release's
overrides for that environment (``spec.promotion.config[environment=...]``);
a release value replaces the environment value of the same key.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

from modelgate.api.common import NameValue, parse_duration
from modelgate.api.environment import ConfigRule, Environment, ValueType
from modelgate.envconfig.leakage import detect_leakage
from modelgate.envconfig.violations import MASK, Violation


def merge_config(environment: Environment, overrides: list[NameValue]) -> dict[str, str]:
    """The configuration delivered to the model in ``environment``."""
    merged = {item.name: item.value for item in environment.spec.config}
    for item in overrides:
        merged[item.name] = item.value
    return dict(sorted(merged.items()))


def config_hash(config: dict[str, str]) -> str:
    """SHA-256 of the canonical JSON of the merged config."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower()
    for entry in allowed:
        pattern = entry.lower()
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and host != pattern[2:]:
                return True
        elif host == pattern:
            return True
    return False


def _type_error(value: str, value_type: ValueType) -> str | None:
    """Why ``value`` is not of ``value_type``, or None when it is."""
    try:
        if value_type == ValueType.INT:
            int(value)
        elif value_type == ValueType.FLOAT:
            if not math.isfinite(float(value)):
                return "is not a finite number"
        elif value_type == ValueType.BOOL:
            if value.lower() not in {"true", "false"}:
                return "is not true or false"
        elif value_type == ValueType.URL:
            parts = urlsplit(value)
            if not parts.scheme or not parts.hostname:
                return "is not an absolute URL with a scheme and a host"
        elif value_type == ValueType.DURATION:
            parse_duration(value)
    except ValueError:
        return f"does not parse as {value_type}"
    return None


def _forbidden_match(value: str, entry: str) -> bool:
    if len(entry) > 2 and entry.startswith("/") and entry.endswith("/"):
        return re.search(entry[1:-1], value) is not None
    return entry.lower() in value.lower()


def check_rule(environment: str, rule: ConfigRule, config: dict[str, str]) -> list[Violation]:
    """Every violation of one rule on the merged config."""
    value = config.get(rule.key)
    shown = MASK if (rule.secret and value is not None) else value

    def violation(name: str, message: str, fix: str) -> Violation:
        return Violation(environment, rule.key, name, shown, message, fix)

    if value is None or value == "":
        if rule.required:
            return [
                violation(
                    "required",
                    "the key is required but missing or empty",
                    f"set {rule.key} in the Environment's config or in the release's "
                    f"promotion.config for {environment}",
                )
            ]
        return []

    found: list[Violation] = []
    if rule.type is not None and (problem := _type_error(value, ValueType(rule.type))):
        found.append(violation(f"type={rule.type}", f"the value {problem}", f"use a {rule.type}"))
    if rule.pattern is not None and re.fullmatch(rule.pattern, value) is None:
        found.append(
            violation(
                "pattern",
                f"the value does not match {rule.pattern!r}",
                "use a value matching the pattern",
            )
        )
    for entry in rule.forbid:
        if _forbidden_match(value, entry):
            found.append(
                violation(
                    f"forbid={entry}",
                    f"the value contains the forbidden {entry!r}",
                    f"point {rule.key} at {environment}'s own resources",
                )
            )
    if rule.allowed is not None and value not in rule.allowed:
        found.append(
            violation(
                "allowed",
                f"the value is not one of {rule.allowed}",
                "use one of the allowed values",
            )
        )
    if rule.min is not None or rule.max is not None:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number):
            found.append(violation("range", "the value is not a number", "use a number"))
        elif rule.min is not None and number < rule.min:
            found.append(
                violation("min", f"{number:g} is below {rule.min:g}", f"use at least {rule.min:g}")
            )
        elif rule.max is not None and number > rule.max:
            found.append(
                violation("max", f"{number:g} is above {rule.max:g}", f"use at most {rule.max:g}")
            )
    if rule.url_hosts is not None:
        host = urlsplit(value).hostname
        if host is None or not _host_allowed(host, rule.url_hosts):
            found.append(
                violation(
                    "urlHosts",
                    f"host {host!r} is not in the allow-list {rule.url_hosts}",
                    "use a URL on an allowed host",
                )
            )
    return found


def validate_config(
    environment: Environment,
    config: dict[str, str],
    peers: Iterable[Environment] = (),
) -> list[Violation]:
    """All violations of the merged config of ``environment``: its rules, and
    leakage of other environments' identifiers (``peers``: the namespace's
    Environments) with no rule needed."""
    violations: list[Violation] = []
    for rule in environment.spec.config_rules:
        violations.extend(check_rule(environment.name, rule, config))
    secrets = [rule.key for rule in environment.spec.config_rules if rule.secret]
    violations.extend(detect_leakage(environment, config, peers, secrets))
    return violations


__all__ = [
    "MASK",
    "Violation",
    "check_rule",
    "config_hash",
    "detect_leakage",
    "merge_config",
    "validate_config",
]
