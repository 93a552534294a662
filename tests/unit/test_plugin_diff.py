"""``kubectl modelgate diff``: the sample's release in staging and production
(the merge and hash the operator uses), and the leaking one caught."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from modelgate.api import Environment, ModelRelease
from modelgate.envconfig import config_hash, merge_config
from modelgate.plugin.diff import config_diff

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "credit-risk"


def _documents(name: str) -> list[dict[str, Any]]:
    found = [d for d in yaml.safe_load_all((SAMPLE / name).read_text()) if d]
    for document in found:
        document["metadata"]["namespace"] = "team"
    return found


def _world(release: str) -> tuple[ModelRelease, dict[str, Environment]]:
    environments = {
        d["metadata"]["name"]: Environment.model_validate(d)
        for d in _documents("environments.yaml")
    }
    return ModelRelease.model_validate(_documents(release)[0]), environments


def test_the_sample_release_differs_where_the_environments_do_and_is_valid_in_both() -> None:
    release, environments = _world("release.yaml")
    chosen = [environments["staging"], environments["production"]]
    text, valid = config_diff(release, chosen, list(environments.values()))
    assert valid, text
    lines = text.splitlines()
    assert lines[0] == "Config of ModelRelease team/credit-risk-1-4-0 (= same, ~ different):"
    rows = {line.split()[1]: line.split() for line in lines[2:5]}
    assert rows["FEATURE_STORE_URL"] == [
        "~", "FEATURE_STORE_URL", "https://features.staging.example.com",
        "https://features.prod.example.com",
    ]  # fmt: skip
    assert rows["LOG_LEVEL"] == ["~", "LOG_LEVEL", "debug", "info"]
    # The hashes are the ones status shows for each environment.
    hashes = [config_hash(merge_config(e, []))[:12] for e in chosen]
    assert lines[5].split() == ["(sha256)", *hashes]
    assert lines[6].startswith("(not trained yet: the model's location joins the config")
    assert "  LOG_LEVEL: one of info, warning, error" in lines
    assert "  FEATURE_STORE_URL: required; type url; URL host in *.example.com" in lines
    assert "  ✓ valid in production" in lines


def test_a_production_config_that_leaks_the_backtest_is_shown_with_its_fix() -> None:
    release, environments = _world("release-backtest-leak.yaml")
    text, valid = config_diff(release, [environments["production"]], list(environments.values()))
    assert not valid
    broken = [line for line in text.splitlines() if line.startswith("  ✗ ")]
    assert broken
    assert all("environment production: FEATURE_STORE_URL=" in line for line in broken), broken
    assert any("fix:" in line for line in broken)
