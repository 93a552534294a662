"""The conditions of an Environment: a valid place in the promotion graph, and
a live config that passes the rules in force now (a rule added after a
release went live is checked against it; nothing is undeployed for it)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from modelgate.api.environment import Environment
from modelgate.api.modelrelease import EnvironmentPhase, ModelRelease
from modelgate.envconfig import merge_config, validate_config
from modelgate.promotion import conditions as cond
from modelgate.promotion.paths import graph_problems

CONFIG_VALID = cond.CONFIG_VALID


@dataclass(frozen=True)
class Verdict:
    kind: str
    ok: bool | None
    reason: str
    message: str


def environment_verdicts(
    environment: Environment,
    environments: Mapping[str, Environment],
    releases: Iterable[ModelRelease],
) -> list[Verdict]:
    """ConfigValid (the live releases' config against the current rules) and
    Ready (the graph is valid and the live config is)."""
    name = environment.name
    broken: list[str] = []
    for release in releases:
        status = release.status
        entry = next((e for e in status.environments if e.name == name), None) if status else None
        if entry is None or entry.phase != EnvironmentPhase.DEPLOYED:
            continue  # not live here, or live with a change pending (its release says so)
        merged = merge_config(environment, release.overrides_for(name))
        violations = validate_config(environment, merged, environments.values())
        if violations:
            described = "; ".join(v.describe() for v in violations)
            broken.append(f"live release {release.name}: {described}")
    if broken:
        config = Verdict(
            CONFIG_VALID,
            False,
            "LiveConfigViolatesRules",
            "; ".join(broken) + "; nothing is undeployed for it and no deploy that breaks a "
            "rule is made here: fix the release's override (or the rule), or promote a "
            "release whose config passes",
        )
    else:
        config = Verdict(CONFIG_VALID, True, "ConfigValid", "the live config passes every rule")
    problem = graph_problems(environments).get(name)
    if problem is not None:
        ready = Verdict(cond.READY, False, "PromotionPathInvalid", problem)
    elif config.ok is False:
        ready = Verdict(cond.READY, False, config.reason, config.message)
    else:
        ready = Verdict(cond.READY, True, "Valid", "environment is valid")
    return [config, ready]
