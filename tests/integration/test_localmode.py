"""Local mode end to end: the sample releases through the CLI, for real."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from modelgate.cli import main
from modelgate.trainer import contract
from tests.conftest import EXAMPLES, ROOT
from tests.support.gitops_agent import bare_repository, git
from tests.support.model_server import call

SAMPLE = EXAMPLES / "credit-risk"
GATE, ENVS = SAMPLE / "gate.yaml", SAMPLE / "environments.yaml"
RELEASE, LEAK = SAMPLE / "release.yaml", SAMPLE / "release-backtest-leak.yaml"
# The sample's data, as a release of a model trained elsewhere names it.
SAMPLE_DATA = {
    "train": str(SAMPLE / "data" / "train.csv"),
    "evaluation": str(SAMPLE / "data" / "eval.csv"),
    "target": "default",
    "idColumn": "id",
}


def run_json(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, dict[str, Any]]:
    code = main(["run", *map(str, args), "--output", "json"])
    return code, json.loads(capsys.readouterr().out)


def items(listing: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {i["metadata"]["name"]: i for i in listing["items"] if i["kind"] == kind}


def conditions(obj: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in obj["status"]["conditions"]}


@pytest.fixture(scope="module")
def released_state(tmp_path_factory: pytest.TempPathFactory) -> Path:
    state = tmp_path_factory.mktemp("state")
    assert main(["run", str(GATE), str(ENVS), str(RELEASE), "--state-dir", str(state)]) == 0
    return state


def copy_state(source: Path, tmp_path: Path) -> Path:
    """A copy to run on; without the original's server records, so the
    copy starts (and its test stops) servers of its own."""
    target = tmp_path / "state"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("servers"))
    return target


def test_sample_release_is_released_in_both_environments(
    released_state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = copy_state(released_state, tmp_path)
    code, listing = run_json(capsys, GATE, ENVS, RELEASE, "--state-dir", state)
    assert code == 0
    release = items(listing, "ModelRelease")["credit-risk-1-4-0"]
    status = release["status"]
    assert status["phase"] == "Released"
    assert [(e["name"], e["phase"]) for e in status["environments"]] == [
        ("staging", "Deployed"),
        ("production", "Deployed"),
    ]
    assert {c: v["status"] for c, v in conditions(release).items()} == {
        "Trained": "True",
        "GatePassed": "True",
        "ConfigValid": "True",
        "Deployed": "True",
        "Verified": "True",
        "Ready": "True",
    }
    gate = status["gate"]
    assert gate["outcome"] == "Passed"
    assert {c["name"]: c["outcome"] for c in gate["checks"]}["no-regression"] == "Inconclusive"
    artifacts = {a["name"]: a for a in status["artifacts"]}
    assert set(artifacts) == {"model", "predictions", "metadata", "gate-report", "gate-report-html"}
    for record in artifacts.values():
        path = Path(record["uri"].removeprefix("file://"))
        assert path.name == record["sha256"]
        assert path.stat().st_size == record["size"]
    report = json.loads(Path(artifacts["gate-report"]["uri"].removeprefix("file://")).read_text())
    slices = next(c for c in report["checks"] if c["name"] == "recall-by-region")["slices"]
    assert {s["slice"] for s in slices} == {
        f"region={r}" for r in ("north", "south", "east", "west")
    }
    environments = items(listing, "Environment")
    for name in ("staging", "production"):
        assert environments[name]["status"]["liveRelease"] == "credit-risk-1-4-0"
        assert environments[name]["status"]["history"][0]["release"] == "credit-risk-1-4-0"
    config = (state / "environments" / "default" / "production.env").read_text()
    assert "FEATURE_STORE_URL=https://features.prod.example.com\n" in config


def test_rerun_is_idempotent(
    released_state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = copy_state(released_state, tmp_path)
    runs = sorted(p.name for p in (state / "runs").iterdir())
    history = json.loads((state / "environments" / "default" / "production.json").read_text())[
        "history"
    ]
    assert main(["run", str(GATE), str(ENVS), str(RELEASE), "--state-dir", str(state)]) == 0
    output = capsys.readouterr().out
    assert "TrainingStarted" not in output
    assert "Deploying" not in output
    assert sorted(p.name for p in (state / "runs").iterdir()) == runs
    after = json.loads((state / "environments" / "default" / "production.json").read_text())[
        "history"
    ]
    assert after == history


def test_backtest_leak_is_stopped_before_production(
    released_state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = copy_state(released_state, tmp_path)
    code, listing = run_json(capsys, GATE, ENVS, LEAK, "--state-dir", state)
    assert code == 1
    release = items(listing, "ModelRelease")["credit-risk-1-5-0"]
    status = release["status"]
    assert status["phase"] == "Blocked"
    assert status["liveIn"] == "staging"
    production = {e["name"]: e for e in status["environments"]}["production"]
    assert production["phase"] == "Blocked"
    config_valid = conditions(release)["ConfigValid"]
    assert config_valid["status"] == "False"
    assert config_valid["reason"] == "ConfigRuleViolated"
    message = config_valid["message"]
    assert "FEATURE_STORE_URL='https://features.backtest.example.com'" in message
    assert "violates rule forbid=backtest" in message
    assert "violates rule pattern" in message
    assert conditions(release)["Stalled"]["status"] == "True"
    # Production still runs the release that passed; nothing leaked through.
    live = items(listing, "Environment")["production"]["status"]["liveRelease"]
    assert live == "credit-risk-1-4-0"
    # With 1.4.0 live in production, the baseline check now has a baseline.
    checks = {c["name"]: c for c in status["gate"]["checks"]}
    assert checks["no-regression"]["outcome"] in {"Passed", "Failed"}
    assert checks["no-regression"]["baseline"] is not None


def test_corrupted_artifact_fails_closed_on_re_evaluation(
    released_state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = copy_state(released_state, tmp_path)
    stored = json.loads(
        (state / "objects" / "ModelRelease" / "default" / "credit-risk-1-4-0.json").read_text()
    )
    predictions = next(a for a in stored["status"]["artifacts"] if a["name"] == "predictions")
    path = Path(predictions["uri"].removeprefix("file://"))
    # The copied state points at the original store: corrupt the copy's own.
    path = state / path.relative_to(released_state)
    os.chmod(path, 0o644)
    path.write_text("y_true,y_pred\n1,1\n")
    for record in stored["status"]["artifacts"]:
        record["uri"] = record["uri"].replace(str(released_state), str(state))
    (state / "objects" / "ModelRelease" / "default" / "credit-risk-1-4-0.json").write_text(
        json.dumps(stored)
    )
    stricter = tmp_path / "gate.yaml"
    stricter.write_text(GATE.read_text().replace("min: 0.8}", "min: 0.81}", 1))
    code, listing = run_json(capsys, stricter, ENVS, RELEASE, "--state-dir", state)
    assert code == 1
    status = items(listing, "ModelRelease")["credit-risk-1-4-0"]["status"]
    assert status["phase"] == "GateFailed"
    assert status["gate"]["outcome"] == "Inconclusive"
    assert "refusing to use it" in status["gate"]["checks"][0]["message"]
    assert sorted(p.name for p in (state / "runs").iterdir()) == sorted(
        p.name for p in (released_state / "runs").iterdir()
    ), "re-evaluation must not retrain"


def test_invalid_manifest_exits_1_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "gate.yaml"
    bad.write_text(GATE.read_text().replace("name: roc_auc", "name: rocauc"))
    assert main(["run", str(bad), str(ENVS), str(RELEASE), "--state-dir", str(tmp_path / "s")]) == 1
    err = capsys.readouterr().err
    assert "spec.checks[0].metric.name: Input should be 'accuracy'" in err


def test_validate_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(GATE), str(ENVS), str(RELEASE)]) == 0
    assert "valid: 5 resources" in capsys.readouterr().out
    assert main(["validate", str(SAMPLE)]) == 1
    out = capsys.readouterr().out
    assert (
        "ModelRelease default/credit-risk-1-5-0: environment production: FEATURE_STORE_URL=" in out
    )


def test_crds_command_writes_the_committed_files(tmp_path: Path) -> None:
    assert main(["crds", "--output-dir", str(tmp_path)]) == 0
    for path in (ROOT / "crds").glob("*.yaml"):
        assert (tmp_path / path.name).read_text() == path.read_text()


def test_sample_data_is_reproducible(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(SAMPLE / "generate_data.py"), str(tmp_path)], check=True)
    for name in ("train.csv", "eval.csv"):
        assert (tmp_path / name).read_bytes() == (SAMPLE / "data" / name).read_bytes()


def test_console_script_runs_the_demo(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "modelgate"
    result = subprocess.run(
        [str(script), "run", str(GATE), str(ENVS), str(RELEASE), "--state-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "credit-risk-1-4-0  credit-risk  1.4.0    Released  Passed  production" in result.stdout


def test_backtest_leak_is_caught_in_local_mode_without_rules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    documents = list(yaml.safe_load_all(ENVS.read_text()))
    for document in documents:
        document["spec"].pop("configRules", None)
    environments = tmp_path / "environments.yaml"
    environments.write_text(yaml.safe_dump_all(documents))
    code, listing = run_json(capsys, GATE, environments, LEAK, "--state-dir", tmp_path / "s")
    assert code == 1
    release = items(listing, "ModelRelease")["credit-risk-1-5-0"]
    assert release["status"]["phase"] == "Blocked"
    message = conditions(release)["ConfigValid"]["message"]
    assert "violates rule leakage:backtest" in message
    assert "violates rule pattern" not in message  # no rules were written


def test_config_check_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", "--environments", str(ENVS), "--release", str(RELEASE)]) == 0
    assert "valid: credit-risk-1-4-0 -> production" in capsys.readouterr().out
    code = main(
        [
            "config",
            "check",
            "--environments",
            str(ENVS),
            "--release",
            str(LEAK),
            "--environment",
            "production",
        ]
    )
    assert code == 1
    assert "leakage:backtest" in capsys.readouterr().out
    assert (
        main(
            [
                "config",
                "check",
                "--environments",
                str(ENVS),
                "--release",
                str(LEAK),
                "--environment",
                "nope",
            ]
        )
        == 2
    )
    assert "environments not found" in capsys.readouterr().err


def gitops_production(tmp_path: Path) -> tuple[Path, Path]:
    """A bare repository, and the sample environments with production
    delivered through it (GitOps) written next to it."""
    remote = bare_repository(tmp_path)
    documents = [d for d in yaml.safe_load_all(ENVS.read_text()) if d]
    for document in documents:
        if document["metadata"]["name"] == "production":
            document["spec"]["delivery"] = {
                "mode": "GitOps",
                "git": {"repository": f"file://{remote}", "path": "envs/production"},
            }
    environments = tmp_path / "environments.yaml"
    environments.write_text(yaml.safe_dump_all(documents))
    return remote, environments


def test_gitops_production_commits_in_local_mode(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Local mode drives GitOps delivery too: a real commit, idempotent on re-runs."""
    remote, environments = gitops_production(tmp_path)
    state = tmp_path / "state"
    code, listing = run_json(capsys, GATE, environments, RELEASE, "--state-dir", state)
    assert code == 0
    release = items(listing, "ModelRelease")["credit-risk-1-4-0"]
    production = next(e for e in release["status"]["environments"] if e["name"] == "production")
    head = git(remote, "rev-parse", "main").strip()
    assert production["revision"] == head
    message = git(remote, "log", "-1", "--format=%B", "main")
    assert "Modelgate-Release: default/credit-risk-1-4-0" in message
    assert items(listing, "Environment")["production"]["status"]["liveRelease"] == (
        "credit-risk-1-4-0"
    )
    # Staging stayed Direct (local files); production has none.
    assert (state / "environments" / "default" / "staging.env").exists()
    assert not (state / "environments" / "default" / "production.env").exists()
    assert main(["run", str(GATE), str(environments), str(RELEASE), "--state-dir", str(state)]) == 0
    assert git(remote, "rev-parse", "main").strip() == head


def test_local_run_writes_prometheus_metrics(tmp_path: Path) -> None:
    textfile = tmp_path / "modelgate.prom"
    state = tmp_path / "state"
    args = [str(GATE), str(ENVS), str(RELEASE), "--state-dir", str(state)]
    assert main(["run", *args, "--metrics-textfile", str(textfile)]) == 0
    text = textfile.read_text()
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=text, text=True, capture_output=True, check=False
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    production = (
        ("environment", "production"),
        ("model", "credit-risk"),
        ("namespace", "default"),
    )
    assert samples[("modelgate_deployments_total", production)] == 1
    gate = (("gate", "credit-gate"), ("namespace", "default"), ("outcome", "Passed"))
    assert samples[("modelgate_gate_evaluations_total", gate)] == 1
    # A second run changes nothing, so it records nothing new.
    assert main(["run", *args, "--metrics-textfile", str(textfile)]) == 0
    again = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(textfile.read_text())
        for s in family.samples
    }
    assert ("modelgate_deployments_total", production) not in again


def served(state: Path, environment: str) -> str:
    record = json.loads((state / "servers" / "default" / f"{environment}.json").read_text())
    assert record["state"] == "ready", record
    return str(record["url"])


def test_the_released_sample_serves_predictions(released_state: Path) -> None:
    """After `modelgate run`, each environment's model answers over HTTP:
    rows get predictions and scores, a negative age or an unknown region a
    422 naming the column."""
    url = served(released_state, "production")
    row = {
        "age": 42,
        "income": 52000,
        "debt_ratio": 0.3,
        "credit_lines": 4,
        "late_payments": 1,
        "region": "north",
    }
    status, answer = call(f"{url}/v1/predict", json.dumps({"instances": [row]}).encode())
    assert status == 200
    assert answer["predictions"][0] in {"0", "1"}
    assert 0.0 <= answer["scores"][0] <= 1.0
    assert answer["model"]["version"] == "1.4.0"
    environments = json.loads(
        (released_state / "environments" / "default" / "production.json").read_text()
    )
    assert answer["model"]["sha256"] == environments["live"]["config"]["MODELGATE_MODEL_SHA256"]
    for column, value in (("age", -3), ("region", "mars")):
        status, refused = call(
            f"{url}/v1/predict", json.dumps({"instances": [{**row, column: value}]}).encode()
        )
        assert status == 422
        assert refused["column"] == column


SWAPPING_TRAINER = """
import json, os, shutil, sys, tempfile
from pathlib import Path
from modelgate.trainer import contract
from modelgate.trainer.train import train

# A training job with a bug: it saves a different model than the one whose
# predictions it hands to the gate (here: a shallow tree over the forest).
train(dict(os.environ))
other = tempfile.mkdtemp()
params = {"estimator": "sklearn.tree.DecisionTreeClassifier", "max_depth": 2,
          "exclude": ["gender"], "importance_repeats": 0}
train({**os.environ, contract.OUTPUT_DIR: other, contract.PARAMS: json.dumps(params)})
output = Path(os.environ[contract.OUTPUT_DIR])
shutil.copy(Path(other) / contract.MODEL_FILE, output / contract.MODEL_FILE)
"""


def test_a_served_model_that_differs_from_the_gated_one_is_rolled_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Train/serve skew: the gate passed on the forest's predictions, the
    artifact is a different model. Staging's verification compares the
    answers, fails, and puts the previous state back; production is never
    reached."""
    trainer = tmp_path / "swapping_trainer.py"
    trainer.write_text(SWAPPING_TRAINER)
    [document] = [d for d in yaml.safe_load_all(RELEASE.read_text()) if d]
    document["spec"]["training"]["command"] = ["python", str(trainer)]
    data = document["spec"]["training"]["data"]
    data["train"], data["evaluation"] = (
        str(SAMPLE / data["train"]),
        str(SAMPLE / data["evaluation"]),
    )
    release = tmp_path / "release.yaml"
    release.write_text(yaml.safe_dump(document))
    code, listing = run_json(capsys, GATE, ENVS, release, "--state-dir", tmp_path / "state")
    assert code == 1
    status = items(listing, "ModelRelease")["credit-risk-1-4-0"]["status"]
    assert status["phase"] == "RolledBack"
    assert status["gate"]["outcome"] == "Passed"  # the gate saw nothing wrong
    [staging] = [e for e in status["environments"] if e["name"] == "staging"]
    assert staging["phase"] == "RolledBack"
    assert "served answers differ from the gated predictions" in staging["message"]
    assert all(e["phase"] != "Deployed" for e in status["environments"])
    assert items(listing, "Environment")["staging"]["status"].get("liveRelease") is None


def test_a_sharded_evaluation_gives_the_one_process_gate(
    released_state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """spec.evaluation.parallelism: 3 runs three shard processes and a merge,
    as the operator runs an Indexed Job and a merge Job: the same gate."""
    document = yaml.safe_load(RELEASE.read_text())
    data = document["spec"]["training"]["data"]
    for key in ("train", "evaluation"):
        data[key] = str(SAMPLE / data[key])
    document["spec"]["evaluation"] = {"parallelism": 3}
    sharded = tmp_path / "release.yaml"
    sharded.write_text(yaml.safe_dump(document))
    code, listing = run_json(capsys, GATE, ENVS, sharded, "--state-dir", tmp_path / "state")
    assert code == 0
    gate = items(listing, "ModelRelease")["credit-risk-1-4-0"]["status"]["gate"]
    stored = json.loads(
        (
            released_state / "objects" / "ModelRelease" / "default" / "credit-risk-1-4-0.json"
        ).read_text()
    )
    one = stored["status"]["gate"]
    for summary in (gate, one):
        summary.pop("evaluatedAt")
    assert gate["outcome"] == "Passed"
    assert gate == one
    partials = list((tmp_path / "state" / "evaluations").glob("*/partials/*.json"))
    assert sorted(p.name for p in partials) == ["0.json", "1.json", "2.json"]


CSV_TRAINER = """
import os
from pathlib import Path
import pandas as pd
from modelgate.trainer import contract
from modelgate.trainer.train import train

# A trainer of another image: its predictions are one CSV file.
train(dict(os.environ))
output = Path(os.environ[contract.OUTPUT_DIR])
parquet = output / contract.PREDICTIONS_FILE
pd.read_parquet(parquet).to_csv(output / contract.PREDICTIONS_CSV_FILE, index=False)
parquet.unlink()
"""


def test_predictions_written_as_csv_by_another_trainer_are_gated_alike(
    released_state: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trainer = tmp_path / "csv_trainer.py"
    trainer.write_text(CSV_TRAINER)
    document = yaml.safe_load(RELEASE.read_text())
    document["spec"]["training"]["command"] = ["python", str(trainer)]
    data = document["spec"]["training"]["data"]
    for key in ("train", "evaluation"):
        data[key] = str(SAMPLE / data[key])
    release = tmp_path / "release.yaml"
    release.write_text(yaml.safe_dump(document))
    code, listing = run_json(capsys, GATE, ENVS, release, "--state-dir", tmp_path / "state")
    assert code == 0
    status = items(listing, "ModelRelease")["credit-risk-1-4-0"]["status"]
    [predictions] = [a for a in status["artifacts"] if a["name"] == "predictions"]
    run = tmp_path / "state" / "runs"
    [written] = list(run.glob(f"*/output/{contract.PREDICTIONS_CSV_FILE}"))
    assert predictions["sha256"] == hashlib.sha256(written.read_bytes()).hexdigest()
    stored = json.loads(
        (
            released_state / "objects" / "ModelRelease" / "default" / "credit-risk-1-4-0.json"
        ).read_text()
    )
    assert status["gate"]["outcome"] == "Passed"
    assert status["gate"]["checks"] == stored["status"]["gate"]["checks"]
