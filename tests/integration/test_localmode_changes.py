"""Local mode after a release: edits of the promotion config roll out or are
refused, what defines the model cannot change, and the exit code follows Ready."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.api import Environment
from modelgate.backends.local import LocalServers
from modelgate.cli import main
from modelgate.envconfig import validate_config
from tests.integration.test_localmode import (
    ENVS,
    GATE,
    RELEASE,
    SAMPLE,
    conditions,
    copy_state,
    gitops_production,
    items,
    released_state,
    run_json,
)
from tests.support.gitops_agent import git

__all__ = ["released_state"]  # the module fixture, shared with test_localmode


def edited(tmp_path: Path, change: Any) -> Path:
    """The sample release with ``change`` applied, next to the sample's data."""
    [document] = [d for d in yaml.safe_load_all(RELEASE.read_text()) if d]
    change(document["spec"])
    folder = tmp_path / "edited"
    folder.mkdir(exist_ok=True)
    if not (folder / "data").exists():
        (folder / "data").symlink_to(SAMPLE / "data")
    path = folder / "release.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def set_override(environment: str, name: str, value: str) -> Any:
    def change(spec: dict[str, Any]) -> None:
        config = spec["promotion"].setdefault("config", [])
        entry = next((c for c in config if c["environment"] == environment), None)
        if entry is None:
            entry = {"environment": environment, "values": []}
            config.append(entry)
        entry["values"] = [v for v in entry["values"] if v["name"] != name]
        entry["values"].append({"name": name, "value": value})

    return change


def both(*changes: Any) -> Any:
    def change(spec: dict[str, Any]) -> None:
        for each in changes:
            each(spec)

    return change


def test_config_edits_after_a_release_are_refused_or_rolled_out_in_order(
    released_state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = copy_state(released_state, tmp_path)
    code, before = run_json(capsys, GATE, ENVS, RELEASE, "--state-dir", state)
    assert code == 0
    production_before = items(before, "Environment")["production"]["status"]

    # A leaking production override: refused, production keeps its config.
    leak = edited(
        tmp_path,
        set_override("production", "FEATURE_STORE_URL", "https://features.backtest.example.com"),
    )
    code, listing = run_json(capsys, GATE, ENVS, leak, "--state-dir", state)
    assert code == 1
    release = items(listing, "ModelRelease")["credit-risk-1-4-0"]
    found = conditions(release)
    assert (found["Ready"]["status"], found["Ready"]["reason"]) == ("False", "ConfigRuleViolated")
    assert found["ConfigValid"]["status"] == "False"
    assert found["Stalled"]["status"] == "True"
    assert "violates rule forbid=backtest" in found["Ready"]["message"]
    assert "production keeps running config" in found["Ready"]["message"]
    assert release["status"]["observedGeneration"] == release["metadata"]["generation"]
    production = items(listing, "Environment")["production"]["status"]
    assert production["configHash"] == production_before["configHash"]
    assert production["history"] == production_before["history"]

    # A valid edit of both environments: staging first, then production.
    valid = edited(
        tmp_path,
        both(
            set_override("staging", "REQUEST_TIMEOUT", "4s"),
            set_override("production", "REQUEST_TIMEOUT", "3s"),
        ),
    )
    code = main(["run", str(GATE), str(ENVS), str(valid), "--state-dir", str(state)])
    output = capsys.readouterr().out
    assert code == 0, output
    deploys = [line for line in output.splitlines() if "] deploy: " in line and "->" in line]
    assert [line.split("-> ")[1].split()[0] for line in deploys] == ["staging", "production"]
    code, listing = run_json(capsys, GATE, ENVS, valid, "--state-dir", state)
    assert code == 0
    release = items(listing, "ModelRelease")["credit-risk-1-4-0"]
    assert conditions(release)["Ready"]["status"] == "True"
    assert [(e["name"], e["phase"], e["rollout"]) for e in release["status"]["environments"]] == [
        ("staging", "Deployed", 2),
        ("production", "Deployed", 2),
    ]
    production = items(listing, "Environment")["production"]["status"]
    assert production["configHash"] != production_before["configHash"]
    assert len(production["history"]) == len(production_before["history"]) + 1
    assert production["history"][0]["rollout"] == 2
    # Verified again after the change, by the reference server's new config.
    assert conditions(release)["Verified"]["status"] == "True"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda s: s["training"]["params"].update(n_estimators=300), "spec.training"),
        (lambda s: s["model"].update(version="1.4.1"), "spec.model"),
        (lambda s: s.update(serving="Image", image="registry.example.com/m:2"), "spec.serving"),
    ],
)
def test_what_defines_the_model_cannot_be_edited(
    released_state: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: Any,
    field: str,
) -> None:
    state = copy_state(released_state, tmp_path)
    path = edited(tmp_path, change)
    code = main(["run", str(GATE), str(ENVS), str(path), "--state-dir", str(state)])
    captured = capsys.readouterr()
    assert code == 1
    assert f"error: ModelRelease default/credit-risk-1-4-0: {field} is immutable" in captured.err
    assert "create a new ModelRelease" in captured.err
    assert "TrainingStarted" not in captured.out
    assert "Deploying" not in captured.out
    # Nothing was taken: the original spec still runs to rest, released.
    assert main(["run", str(GATE), str(ENVS), str(RELEASE), "--state-dir", str(state)]) == 0


def test_gitops_config_edits_are_a_commit_per_rollout_and_none_when_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    remote, environments = gitops_production(tmp_path)
    state = tmp_path / "state"
    assert main(["run", str(GATE), str(environments), str(RELEASE), "--state-dir", str(state)]) == 0
    first = git(remote, "rev-parse", "main").strip()

    leak = edited(
        tmp_path,
        set_override("production", "FEATURE_STORE_URL", "https://features.backtest.example.com"),
    )
    assert main(["run", str(GATE), str(environments), str(leak), "--state-dir", str(state)]) == 1
    assert git(remote, "rev-parse", "main").strip() == first  # no commit for a refused edit

    valid = edited(tmp_path, set_override("production", "REQUEST_TIMEOUT", "3s"))
    capsys.readouterr()
    code, listing = run_json(capsys, GATE, environments, valid, "--state-dir", state)
    assert code == 0
    head = git(remote, "rev-parse", "main").strip()
    assert git(remote, "rev-list", "--count", f"{first}..{head}").strip() == "1"
    message = git(remote, "log", "-1", "--format=%B", "main")
    assert "Modelgate-Rollout: 2" in message
    release = items(listing, "ModelRelease")["credit-risk-1-4-0"]
    production = next(e for e in release["status"]["environments"] if e["name"] == "production")
    assert (production["phase"], production["rollout"], production["revision"]) == (
        "Deployed",
        2,
        head,
    )
    assert production["configHash"] in message
    # Re-running is idempotent: no second commit for the same rollout.
    assert main(["run", str(GATE), str(environments), str(valid), "--state-dir", str(state)]) == 0
    assert git(remote, "rev-parse", "main").strip() == head


# Edits a team makes after a release, for the random sequences below.
EDITS = {
    "production-leak": set_override(
        "production", "FEATURE_STORE_URL", "https://features.backtest.example.com"
    ),
    "production-valid": set_override("production", "REQUEST_TIMEOUT", "3s"),
    "production-valid-2": set_override("production", "REQUEST_TIMEOUT", "4s"),
    "production-bad-level": set_override("production", "LOG_LEVEL", "debug"),
    "staging-valid": set_override("staging", "REQUEST_TIMEOUT", "6s"),
    "staging-invalid": set_override("staging", "REQUEST_TIMEOUT", "soon"),
}


@settings(
    max_examples=3,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(sequence=st.lists(st.sampled_from(sorted(EDITS)), min_size=2, max_size=3))
def test_random_edit_sequences_keep_local_mode_truthful(
    released_state: Path, capsys: pytest.CaptureFixture[str], sequence: list[str]
) -> None:
    """The state machine's promises, in local mode for real: the exit code is
    Ready, Ready never claims an unmet condition, every live config passes the
    rules, and rollout numbers only grow."""
    environments = {
        d["metadata"]["name"]: Environment.model_validate(d)
        for d in yaml.safe_load_all(ENVS.read_text())
        if d
    }
    with tempfile.TemporaryDirectory() as folder:
        tmp_path = Path(folder)
        state = copy_state(released_state, tmp_path)
        try:
            for step in sequence:
                release_file = edited(tmp_path, EDITS[step])
                capsys.readouterr()
                code, listing = run_json(capsys, GATE, ENVS, release_file, "--state-dir", state)
                release = items(listing, "ModelRelease")["credit-risk-1-4-0"]
                found = conditions(release)
                ready = found["Ready"]["status"] == "True"
                assert code == (0 if ready else 1), (step, found["Ready"])
                if ready:
                    for kind in ("Trained", "GatePassed", "ConfigValid", "Deployed", "Verified"):
                        assert found[kind]["status"] == "True", (step, kind)
                elif "invalid" in step or "leak" in step or "bad" in step:
                    assert found["ConfigValid"]["status"] == "False", step
                    assert found["Stalled"]["status"] == "True", step
                for name in ("staging", "production"):
                    record = json.loads(
                        (state / "environments" / "default" / f"{name}.json").read_text()
                    )
                    live = {
                        k: v
                        for k, v in record["live"]["config"].items()
                        if k in {"FEATURE_STORE_URL", "LOG_LEVEL", "REQUEST_TIMEOUT"}
                    }
                    env = environments[name]
                    assert validate_config(env, live, environments.values()) == [], (step, live)
                    deploys = [h for h in record["history"] if not h.get("rolledBack")]
                    numbers = [h.get("rollout") or 1 for h in deploys][::-1]
                    assert numbers == sorted(set(numbers)), (name, numbers)
        finally:
            LocalServers(state).stop_all()
