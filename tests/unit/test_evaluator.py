"""The gate evaluator (``python -m modelgate.evaluate``): what the operator's
evaluation Job and local mode's evaluator process run, and how their output
is read back (bounded, hash-verified) onto a release."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from modelgate import evaluate
from modelgate.api.modelrelease import ArtifactRecord, GateStatus, ModelReleaseStatus
from modelgate.api.qualitygate import Check, Task
from modelgate.backends.evaluation_job import (
    SUMMARY_NAME,
    evaluation_from_payload,
    evaluation_job_name,
    evaluation_payload,
    gate_status,
    parse_outputs,
    record_evaluation_outputs,
    record_failed_evaluation,
)
from modelgate.backends.local import LocalArtifactStore
from modelgate.gates.engine import GateInputs, evaluate_gate
from modelgate.gates.table import read_table
from modelgate.promotion import EvaluateGate
from tests.unit.test_reconcile import make_release

NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)
ROWS = "y_true,y_pred,y_score,region\n" + "".join(
    f"{i % 2},{i % 2 if i % 5 else 1 - i % 2},{0.9 if i % 2 else 0.1},{'nw'[(i // 2) % 2]}\n"
    for i in range(200)
)


def summary_time(summary: GateStatus) -> datetime:
    assert summary.evaluated_at is not None
    return datetime.fromisoformat(summary.evaluated_at.replace("Z", "+00:00"))


def action(predictions: ArtifactRecord, data: Path, **checks: float) -> EvaluateGate:
    minimum = checks.get("accuracy", 0.7)
    return EvaluateGate(
        inputs_hash="abc123",
        gate_name="gate",
        task=Task.BINARY,
        positive_label="1",
        checks=(
            Check.model_validate({"name": "acc", "metric": {"name": "accuracy", "min": minimum}}),
            Check.model_validate(
                {
                    "name": "auc",
                    "metric": {"name": "roc_auc", "min": 0.5},
                    "slice": {"columns": ["region"], "minSize": 50},
                }
            ),
        ),
        predictions=predictions,
        metadata=None,
        train_data=str(data),
        evaluation_data=str(data),
        id_column=None,
        baselines={"production": None},
    )


@pytest.fixture
def store(tmp_path: Path) -> LocalArtifactStore:
    return LocalArtifactStore(tmp_path / "store")


@pytest.fixture
def predictions(store: LocalArtifactStore) -> ArtifactRecord:
    return store.put_bytes(ROWS.encode(), "predictions")


def env(store: LocalArtifactStore, evaluation: EvaluateGate, output: Path) -> dict[str, str]:
    return {
        evaluate.EVALUATION: json.dumps(evaluation_payload(evaluation)),
        evaluate.RELEASE: "team/m-1",
        evaluate.OUTPUT_URI: str(output),
        evaluate.STORE_DIR: str(store.root),
    }


def test_the_payload_is_the_action(predictions: ArtifactRecord, tmp_path: Path) -> None:
    original = action(predictions, tmp_path / "data.csv")
    assert evaluation_from_payload(json.loads(json.dumps(evaluation_payload(original)))) == original


def test_a_changed_gate_is_a_new_evaluation_job(
    predictions: ArtifactRecord, tmp_path: Path
) -> None:
    first = evaluation_job_name("m-1", action(predictions, tmp_path / "d.csv"))
    again = evaluation_job_name("m-1", action(predictions, tmp_path / "d.csv"))
    stricter = evaluation_job_name("m-1", action(predictions, tmp_path / "d.csv", accuracy=0.9))
    assert first == again
    assert first != stricter
    assert first.startswith("m-1-eval-")
    assert len(evaluation_job_name("m" * 80, action(predictions, tmp_path / "d.csv"))) <= 63


def test_the_evaluator_gives_the_in_process_result(
    store: LocalArtifactStore, predictions: ArtifactRecord, tmp_path: Path
) -> None:
    data = tmp_path / "data.csv"
    data.write_text(ROWS)
    evaluation = action(predictions, data)
    manifest = evaluate.run(env(store, evaluation, tmp_path / "out"), NOW)
    records = parse_outputs((tmp_path / "out" / evaluate.OUTPUTS_FILE).read_bytes())
    assert [r.wire() for r in records] == manifest["artifacts"]
    assert {r.name for r in records} == {"gate-report", "gate-report-html", SUMMARY_NAME}
    by_job = make_release().model_copy(update={"status": ModelReleaseStatus()})
    summary = record_evaluation_outputs(by_job, evaluation, records, store)
    # The reference: the in-memory engine on the same tables.
    table = read_table(data, "predictions")
    reference = evaluate_gate(
        list(evaluation.checks),
        GateInputs(task=Task.BINARY, predictions=table, training=table, evaluation=table),
    )
    assert by_job.status is not None
    assert summary == gate_status(evaluation, reference, summary_time(summary))
    assert summary.outcome == "Passed", [c.message for c in summary.checks]
    assert summary.passed == 2
    assert {a.name for a in by_job.status.artifacts} == {"gate-report", "gate-report-html"}


def test_unreadable_predictions_are_inconclusive_checks_not_a_failed_run(
    store: LocalArtifactStore, tmp_path: Path
) -> None:
    missing = ArtifactRecord(name="predictions", uri="file:///nowhere", sha256="0" * 64, size=1)
    evaluation = action(missing, tmp_path / "data.csv")
    manifest = evaluate.run(env(store, evaluation, tmp_path / "out"), NOW)
    records = [ArtifactRecord.model_validate(a) for a in manifest["artifacts"]]
    release = make_release().model_copy(update={"status": ModelReleaseStatus()})
    summary = record_evaluation_outputs(release, evaluation, records, store)
    assert summary.outcome == "Inconclusive"
    assert all("predictions unreadable" in c.message for c in summary.checks)


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        (evaluate.EVALUATION, "not json", "MODELGATE_EVALUATION is not an evaluation"),
        (evaluate.EVALUATION, '{"task": "binary"}', "the evaluation has no 'inputsHash'"),
        (evaluate.EVALUATION, "", "MODELGATE_EVALUATION is not set"),
        (evaluate.STORE_DIR, "", "set MODELGATE_STORE_DIR (a local store) or MODELGATE_S3_BUCKET"),
    ],
)
def test_a_misconfigured_evaluator_exits_2_saying_what_is_wrong(
    store: LocalArtifactStore,
    predictions: ArtifactRecord,
    tmp_path: Path,
    variable: str,
    value: str,
    said: str,
) -> None:
    settings = env(store, action(predictions, tmp_path / "d.csv"), tmp_path / "out")
    settings[variable] = value
    done = subprocess.run(
        [sys.executable, "-m", "modelgate.evaluate"],
        env={"PATH": "/usr/bin:/bin", **settings},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 2
    assert said in done.stderr
    assert not (tmp_path / "out" / evaluate.OUTPUTS_FILE).exists()


def test_the_operator_refuses_outputs_it_should_not_trust(
    store: LocalArtifactStore, predictions: ArtifactRecord, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="over"):
        parse_outputs(b" " * (70 * 1024))
    with pytest.raises(ValueError, match="lacks gate-report, gate-report-html, gate-summary"):
        parse_outputs(json.dumps({"artifacts": []}).encode())
    data = tmp_path / "data.csv"
    data.write_text(ROWS)
    manifest = evaluate.run(env(store, action(predictions, data), tmp_path / "out"), NOW)
    records = [ArtifactRecord.model_validate(a) for a in manifest["artifacts"]]
    other = action(predictions, data)
    other = EvaluateGate(**{**other.__dict__, "inputs_hash": "other"})
    release = make_release().model_copy(update={"status": ModelReleaseStatus()})
    with pytest.raises(ValueError, match="other inputs"):
        record_evaluation_outputs(release, other, records, store)


def test_a_failed_evaluation_fails_closed_with_its_reason(
    predictions: ArtifactRecord, tmp_path: Path
) -> None:
    release = make_release().model_copy(update={"status": ModelReleaseStatus()})
    summary = record_failed_evaluation(
        release, action(predictions, tmp_path / "d.csv"), "OOMKilled (exit 137)", NOW
    )
    assert summary.outcome == "Inconclusive"
    assert [c.outcome for c in summary.checks] == ["Inconclusive", "Inconclusive"]
    assert all("evaluation failed: OOMKilled (exit 137)" in c.message for c in summary.checks)
