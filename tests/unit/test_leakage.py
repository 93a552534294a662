"""Cross-environment leakage detection: caught with no rule written for it."""

from __future__ import annotations

from typing import Any

from modelgate.api import Environment
from modelgate.envconfig import validate_config
from modelgate.envconfig.leakage import detect_leakage, identifiers


def env(name: str, namespace: str, config: dict[str, str], **spec: Any) -> Environment:
    return Environment.model_validate(
        {
            "metadata": {"name": name},
            "spec": {
                "tier": "production" if name == "production" else "preproduction",
                "namespace": namespace,
                "config": [{"name": k, "value": v} for k, v in config.items()],
                **spec,
            },
        }
    )


BACKTEST = env(
    "backtest",
    "ml-backtest",
    {
        "FEATURE_STORE_URL": "https://features.backtest.example.com",
        "AUTH": "https://auth.example.com",
    },
    markers=["backtest"],
)
STAGING = env(
    "staging",
    "ml-staging",
    {
        "FEATURE_STORE_URL": "https://features.staging.example.com",
        "AUTH": "https://auth.example.com",
    },
    identifiers=["risk-staging-bucket"],
)
# Production has no config rules at all.
PRODUCTION = env(
    "production",
    "ml-prod",
    {"FEATURE_STORE_URL": "https://features.prod.example.com", "AUTH": "https://auth.example.com"},
)
ALL = [BACKTEST, STAGING, PRODUCTION]


def test_seed_story_is_caught_without_any_rule() -> None:
    config = {"FEATURE_STORE_URL": "https://features.backtest.example.com"}
    [violation] = validate_config(PRODUCTION, config, ALL)
    assert violation.rule == "leakage:backtest"
    assert violation.key == "FEATURE_STORE_URL"
    assert "names environment backtest" in violation.message
    assert "'features.backtest.example.com'" in violation.message
    assert "spec.leakage.ignoreKeys" in violation.fix


def test_markers_namespaces_and_declared_identifiers() -> None:
    cases = {
        "DATA": ("s3://risk-backtest-results/2026/", "leakage:backtest"),
        "SCHEMA": ("ml-staging", "leakage:staging"),
        "BUCKET": ("s3://risk-staging-bucket/models", "leakage:staging"),
    }
    for key, (value, rule) in cases.items():
        found = detect_leakage(PRODUCTION, {key: value}, ALL)
        assert [v.rule for v in found] == [rule], key


def test_shared_identifiers_and_unrelated_words_are_not_leaks() -> None:
    config = {
        "AUTH": "https://auth.example.com",  # shared by every environment
        "MODE": "stagingarea",  # not the word 'staging'
        "URL": "https://features.prod.example.com",
    }
    assert detect_leakage(PRODUCTION, config, ALL) == []
    assert "auth.example.com" not in identifiers(PRODUCTION) - identifiers(STAGING)


def test_opt_out_per_key_and_disabled() -> None:
    config = {"MIRROR": "https://features.staging.example.com"}
    allowed = env("production", "ml-prod", {}, leakage={"ignoreKeys": ["MIRROR"]})
    assert detect_leakage(allowed, config, ALL) == []
    disabled = env("production", "ml-prod", {}, leakage={"enabled": False})
    assert detect_leakage(disabled, config, ALL) == []


def test_secret_values_are_masked() -> None:
    found = detect_leakage(PRODUCTION, {"TOKEN": "backtest-token-123"}, ALL, secret_keys=["TOKEN"])
    assert found[0].value == "****"
    assert "backtest-token-123" not in found[0].describe()
