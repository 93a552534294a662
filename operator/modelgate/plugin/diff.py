"""``kubectl modelgate diff RELEASE --environment A --environment B``: the
config the release gets in each environment (the Environment's, then the
release's overrides, then what tells the server which model to load: what
the operator delivers and hashes), side by side, with the rules of each and
what breaks them. Pure."""

from __future__ import annotations

from typing import Any

from modelgate.api import Environment, ModelRelease
from modelgate.api.modelrelease import Serving
from modelgate.envconfig import MASK, config_hash, merge_config, validate_config
from modelgate.plugin.views import table
from modelgate.promotion.keys import serving_config

UNSET = "-"


def describe_rule(rule: Any) -> str:
    """A rule as one line: its key and what it asks."""
    asks = []
    if rule.required:
        asks.append("required")
    if rule.type is not None:
        asks.append(f"type {rule.type}")
    if rule.pattern is not None:
        asks.append(f"matches {rule.pattern}")
    if rule.allowed is not None:
        asks.append(f"one of {', '.join(rule.allowed)}")
    if rule.min is not None:
        asks.append(f">= {rule.min:g}")
    if rule.max is not None:
        asks.append(f"<= {rule.max:g}")
    if rule.url_hosts is not None:
        asks.append(f"URL host in {', '.join(rule.url_hosts)}")
    if rule.forbid:
        asks.append(f"never contains {', '.join(rule.forbid)}")
    if rule.secret:
        asks.append("secret")
    return f"{rule.key}: {'; '.join(asks) or 'no constraint'}"


def config_diff(
    release: ModelRelease, chosen: list[Environment], peers: list[Environment]
) -> tuple[str, bool]:
    """The comparison, and whether every config is valid there."""
    merged, secrets = [], set()
    for environment in chosen:
        overrides = next(
            (c.values for c in release.spec.promotion.config if c.environment == environment.name),
            [],
        )
        merged.append(merge_config(environment, overrides))
        secrets |= {r.key for r in environment.spec.config_rules if r.secret}
    # What the operator delivers and hashes also tells the server what to load.
    artifacts = release.status.artifacts if release.status is not None else []
    served = serving_config(release, artifacts)
    delivered = [{**config, **served} for config in merged]
    keys = sorted(set().union(*delivered))

    def shown(config: dict[str, str], key: str) -> str:
        if key not in config:
            return UNSET
        return MASK if key in secrets else config[key]

    rows = []
    for key in keys:
        values = [shown(config, key) for config in delivered]
        mark = "=" if len(set(values)) == 1 else "~"
        rows.append([mark, key, *values])
    rows.append([" ", "(sha256)", *[config_hash(config)[:12] for config in delivered]])
    lines = [
        f"Config of ModelRelease {release.namespace}/{release.name} (= same, ~ different):",
        table([" ", "KEY", *[e.name for e in chosen]], rows),
    ]
    if release.spec.serving != Serving.IMAGE and not served:
        lines.append(
            "(not trained yet: the model's location joins the config, and changes its hash)"
        )
    valid = True
    for environment, config in zip(chosen, merged, strict=True):
        rules = environment.spec.config_rules
        lines.append(
            f"\nRules of {environment.name}:"
            if rules
            else f"\n{environment.name} has no config rules (leaks of other environments' "
            "hosts and buckets are still checked)."
        )
        lines += [f"  {describe_rule(rule)}" for rule in rules]
        broken = validate_config(environment, config, peers)
        valid = valid and not broken
        lines += [f"  ✗ {v.describe()}" for v in broken] or [f"  ✓ valid in {environment.name}"]
    return "\n".join(lines), valid
