"""Config merge order and every config rule, with the messages users see."""

from __future__ import annotations

from typing import Any

import pytest

from modelgate.api import Environment, NameValue
from modelgate.envconfig import config_hash, merge_config, validate_config


def environment(rules: list[dict[str, Any]], config: dict[str, str] | None = None) -> Environment:
    return Environment.model_validate(
        {
            "metadata": {"name": "production"},
            "spec": {
                "tier": "production",
                "namespace": "ml-prod",
                "config": [{"name": k, "value": v} for k, v in (config or {}).items()],
                "configRules": rules,
            },
        }
    )


def test_release_overrides_win_over_environment_config() -> None:
    env = environment([], {"A": "env", "B": "env"})
    merged = merge_config(
        env, [NameValue(name="B", value="release"), NameValue(name="C", value="x")]
    )
    assert merged == {"A": "env", "B": "release", "C": "x"}


def test_config_hash_is_order_independent_and_value_sensitive() -> None:
    assert config_hash({"A": "1", "B": "2"}) == config_hash({"B": "2", "A": "1"})
    assert config_hash({"A": "1"}) != config_hash({"A": "2"})


CASES = [
    ({"key": "URL", "required": True}, {}, "required", "the key is required but missing or empty"),
    ({"key": "URL", "required": True}, {"URL": ""}, "required", "the key is required"),
    (
        {"key": "URL", "pattern": r"^https://[a-z.]+\.prod\.example\.com$"},
        {"URL": "https://features.backtest.example.com"},
        "pattern",
        "does not match",
    ),
    (
        {"key": "URL", "forbid": ["backtest"]},
        {"URL": "https://features.BACKTEST.example.com"},
        "forbid=backtest",
        "contains the forbidden 'backtest'",
    ),
    (
        {"key": "URL", "forbid": ["/stag(e|ing)/"]},
        {"URL": "https://staging.example.com"},
        "forbid=/stag(e|ing)/",
        "forbidden",
    ),
    ({"key": "MODE", "allowed": ["a", "b"]}, {"MODE": "c"}, "allowed", "not one of ['a', 'b']"),
    ({"key": "N", "min": 1, "max": 10}, {"N": "0"}, "min", "0 is below 1"),
    ({"key": "N", "min": 1, "max": 10}, {"N": "11"}, "max", "11 is above 10"),
    ({"key": "N", "max": 10}, {"N": "ten"}, "range", "not a number"),
    (
        {"key": "URL", "urlHosts": ["*.prod.example.com"]},
        {"URL": "https://features.staging.example.com/x"},
        "urlHosts",
        "host 'features.staging.example.com' is not in the allow-list",
    ),
    ({"key": "N", "type": "int"}, {"N": "1.5"}, "type=int", "does not parse as int"),
    ({"key": "F", "type": "float"}, {"F": "nan"}, "type=float", "not a finite number"),
    ({"key": "B", "type": "bool"}, {"B": "yes"}, "type=bool", "not true or false"),
    ({"key": "U", "type": "url"}, {"U": "features"}, "type=url", "not an absolute URL"),
    ({"key": "D", "type": "duration"}, {"D": "5 seconds"}, "type=duration", "does not parse"),
]


@pytest.mark.parametrize(("rule", "config", "rule_name", "message"), CASES)
def test_each_rule_reports_key_rule_value_and_fix(
    rule: dict[str, Any], config: dict[str, str], rule_name: str, message: str
) -> None:
    env = environment([rule])
    violations = validate_config(
        env, merge_config(env, [NameValue(name=k, value=v) for k, v in config.items()])
    )
    assert len(violations) == 1
    violation = violations[0]
    assert violation.rule == rule_name
    assert violation.key == rule["key"]
    assert message in violation.message
    assert violation.environment == "production"
    text = violation.describe()
    assert text.startswith(f"environment production: {rule['key']}=")
    assert "fix: " in text


@pytest.mark.parametrize(
    ("rule", "value"),
    [
        ({"key": "URL", "urlHosts": ["*.prod.example.com"]}, "https://a.prod.example.com/x"),
        (
            {"key": "URL", "urlHosts": ["features.prod.example.com"]},
            "https://features.prod.example.com",
        ),
        ({"key": "N", "min": 1, "max": 10, "type": "int"}, "10"),
        ({"key": "D", "type": "duration"}, "1h30m"),
        ({"key": "B", "type": "bool"}, "True"),
        ({"key": "URL", "forbid": ["backtest"], "required": True}, "https://prod.example.com"),
    ],
)
def test_valid_values_pass(rule: dict[str, Any], value: str) -> None:
    env = environment([rule], {rule["key"]: value})
    assert validate_config(env, merge_config(env, [])) == []


def test_wildcard_host_does_not_allow_the_bare_parent_or_lookalikes() -> None:
    env = environment([{"key": "U", "urlHosts": ["*.prod.example.com"]}])
    for value in ("https://prod.example.com", "https://evilprod.example.com"):
        assert validate_config(env, {"U": value}), value


def test_secret_values_are_masked() -> None:
    env = environment([{"key": "TOKEN", "pattern": "^tok-[a-z]+$", "secret": True}])
    violations = validate_config(env, {"TOKEN": "hunter2"})
    assert violations[0].value == "****"
    assert "hunter2" not in violations[0].describe()


def test_optional_key_absent_is_fine() -> None:
    env = environment([{"key": "URL", "pattern": "^https://"}])
    assert validate_config(env, {}) == []


def test_invalid_forbid_regex_is_rejected_at_parse_time() -> None:
    with pytest.raises(ValueError, match=r"forbid entry '/\(/' is not a valid regex"):
        environment([{"key": "URL", "forbid": ["/(/"]}])
