"""`modelgate gate evaluate`: the offline gate, its exit codes, JSON and report."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from modelgate.cli import main
from modelgate.trainer import contract
from modelgate.trainer.train import train
from tests.conftest import EXAMPLES
from tests.unit.test_trainer import contract_env

GATE = EXAMPLES / "credit-risk" / "gate.yaml"
TRAIN = EXAMPLES / "credit-risk" / "data" / "train.csv"
CONTRACT_KEYS = {
    "name",
    "kind",
    "metric",
    "slice",
    "value",
    "threshold",
    "baselineValue",
    "sampleSize",
    "severity",
    "outcome",
    "message",
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    output = tmp_path_factory.mktemp("trained")
    tests = [
        {
            "name": "late-payments-raise-risk",
            "column": "late_payments",
            "add": 1.0,
            "expect": "increase",
            "tolerance": 0.02,
        },
        {
            "name": "credit-lines-irrelevant",
            "column": "credit_lines",
            "add": 1.0,
            "expect": "invariant",
            "tolerance": 0.1,
        },
    ]
    env = contract_env(
        output,
        MODELGATE_PARAMS=json.dumps(
            {
                "estimator": "sklearn.ensemble.RandomForestClassifier",
                "n_estimators": 100,
                "min_samples_leaf": 20,
                "exclude": ["gender"],
            }
        ),
        MODELGATE_BEHAVIOR_TESTS=json.dumps(tests),
    )
    train(env)
    return output


def evaluate(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["gate", "evaluate", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def full_args(trained: Path) -> list[str | Path]:
    return [
        "--gate",
        GATE,
        "--predictions",
        trained / contract.PREDICTIONS_FILE,
        "--reference",
        TRAIN,
        "--metadata",
        trained / "metadata.json",
        "--id-column",
        "id",
    ]


def test_every_check_kind_passes_through_the_cli(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = evaluate(
        capsys, *full_args(trained), "--output", "json", "--report-dir", tmp_path
    )
    assert code == 0
    result = json.loads(out)
    assert result["outcome"] == "Passed"
    checks = {c["name"]: c for c in result["checks"]}
    assert {c["kind"] for c in checks.values()} == {
        "metric",
        "slice",
        "fairness",
        "data",
        "drift",
        "behavior",
        "explainability",
        "baseline",
    }
    for check in checks.values():
        assert set(check) >= CONTRACT_KEYS
    assert checks["recall-by-region"]["slice"] == {"region": "north"}
    assert checks["recall-by-region"]["threshold"] == {"min": 0.6, "max": None}
    assert len(checks["recall-by-region"]["slices"]) == 4
    assert checks["auc"]["metric"] == "roc_auc"
    assert checks["auc"]["sampleSize"] == 2000
    assert checks["no-regression"]["outcome"] == "Inconclusive"
    assert checks["no-regression"]["severity"] == "warning"
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["gate"] == "credit-gate"
    assert "<html" in (tmp_path / "report.html").read_text()


def test_baseline_file_is_compared(trained: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = evaluate(
        capsys,
        *full_args(trained),
        "--baseline",
        trained / contract.PREDICTIONS_FILE,
        "--output",
        "json",
    )
    assert code == 0
    check = next(c for c in json.loads(out)["checks"] if c["name"] == "no-regression")
    assert check["outcome"] == "Passed"
    assert check["baselineValue"] == pytest.approx(check["value"])


def write_gate(tmp_path: Path, checks: str) -> Path:
    gate = tmp_path / "gate.yaml"
    gate.write_text(
        "apiVersion: modelgate.dev/v1alpha1\nkind: QualityGate\nmetadata: {name: g}\n"
        f"spec:\n  task: binary\n  checks:\n{checks}"
    )
    return gate


def test_exit_1_on_failure_and_3_on_inconclusive(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    predictions = trained / contract.PREDICTIONS_FILE
    strict = write_gate(tmp_path, "  - {name: auc, metric: {name: roc_auc, min: 0.99}}\n")
    code, out, _ = evaluate(capsys, "--gate", strict, "--predictions", predictions)
    assert code == 1
    assert "gate g: Failed" in out
    unknown = write_gate(
        tmp_path,
        "  - name: parity\n    fairness: {metric: demographic_parity_difference, "
        "sensitiveColumn: nope, max: 0.1}\n",
    )
    code, out, _ = evaluate(capsys, "--gate", unknown, "--predictions", predictions)
    assert code == 3
    assert "has no column 'nope'" in out
    # A warning never blocks, whatever its outcome.
    warning = write_gate(
        tmp_path, "  - {name: auc, severity: warning, metric: {name: roc_auc, min: 0.99}}\n"
    )
    assert evaluate(capsys, "--gate", warning, "--predictions", predictions)[0] == 0


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing-gate", "gate file not found"),
        ("bad-gate", "spec.checks[0].metric.name: Input should be"),
        ("missing-predictions", "predictions file not found"),
        ("no-y-true", "no y_true column"),
        ("garbage-predictions", "cannot read predictions"),
        ("bad-metadata", "not a readable JSON metadata file"),
    ],
)
def test_input_errors_exit_2_naming_the_file(
    setup: str, message: str, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gate, predictions = GATE, trained / contract.PREDICTIONS_FILE
    extra: list[str | Path] = []
    if setup == "missing-gate":
        gate = tmp_path / "nope.yaml"
    elif setup == "bad-gate":
        gate = write_gate(tmp_path, "  - {name: auc, metric: {name: rocauc, min: 0.9}}\n")
    elif setup == "missing-predictions":
        predictions = tmp_path / "nope.csv"
    elif setup == "no-y-true":
        predictions = tmp_path / "p.csv"
        predictions.write_text("a,b\n1,2\n")
    elif setup == "garbage-predictions":
        predictions = tmp_path / "p.csv"
        predictions.write_text("a,b\n1,2,3,4\n")
    elif setup == "bad-metadata":
        bad = tmp_path / "metadata.json"
        bad.write_text("{not json")
        extra = ["--metadata", bad]
    code, _, err = evaluate(capsys, "--gate", gate, "--predictions", predictions, *extra)
    assert code == 2
    assert message in err
    assert str(tmp_path) in err or str(GATE) in err or str(trained) in err


def test_hostile_category_names_are_escaped_in_the_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    rows = 400
    hostile = ["<script>alert(1)</script>", "=cmd|' /C calc'!A0", "normal"]
    y = rng.integers(0, 2, rows)
    table = pa.table(
        {
            "y_true": y,
            "y_pred": np.where(rng.random(rows) < 0.8, y, 1 - y),
            "y_score": rng.random(rows),
            "region": rng.choice(hostile, rows),
        }
    )
    predictions = tmp_path / "p.csv"
    pacsv.write_csv(table, predictions)
    gate = write_gate(
        tmp_path,
        "  - name: acc-by-region\n    metric: {name: accuracy, min: 0.5}\n"
        "    slice: {columns: [region], minSize: 10}\n",
    )
    report = tmp_path / "report"
    evaluate(capsys, "--gate", gate, "--predictions", predictions, "--report-dir", report)
    page = (report / "report.html").read_text()
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "=cmd|&#x27; /C calc&#x27;!A0" in page


def png_has_content(data: bytes) -> bool:
    """A PNG whose pixel data is not a single flat colour."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, idat = 8, b""
    while position < len(data):
        length = int.from_bytes(data[position : position + 4], "big")
        kind = data[position + 4 : position + 8]
        if kind == b"IDAT":
            idat += data[position + 8 : position + 8 + length]
        position += 12 + length
    pixels = zlib.decompress(idat)
    return len(set(pixels[:: max(1, len(pixels) // 200_000)])) > 16


def chromium(*args: str, user_data: Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("chromium")
    assert binary, "headless Chromium is required (make tools installs Debian's chromium)"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={user_data}",
    ]
    return subprocess.run(
        [binary, *flags, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_report_renders_in_headless_chromium(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    evaluate(capsys, *full_args(trained), "--report-dir", tmp_path)
    url = (tmp_path / "report.html").as_uri()
    shot = tmp_path / "shot.png"
    result = chromium(
        "--window-size=1300,2400", f"--screenshot={shot}", url, user_data=tmp_path / "profile"
    )
    assert shot.exists(), result.stderr
    assert shot.stat().st_size > 20_000
    assert png_has_content(shot.read_bytes())
    dom = chromium("--dump-dom", url, user_data=tmp_path / "profile2").stdout
    assert "<title>Quality gate credit-gate</title>" in dom
    assert 'id="outcome"' in dom
    assert ">Passed</span>" in dom
    assert dom.count("<svg") >= 5  # curves, slices, groups, drift, importance
    # Numbers on the curves' axes (both axes of ROC, PR and calibration).
    assert dom.count('font-size="10">0.25</text>') >= 6
    # Each drift bar says which values it holds (quantile edges of training).
    assert re.search(r">&lt; [0-9]{2},[0-9]{3} training<", dom), dom[:2000]
    assert re.search(r">\[[0-9]{2},[0-9]{3}, [0-9]{2},[0-9]{3}\) evaluation<", dom)
    assert re.search(r">&gt;= [0-9]{2},[0-9]{3} training<", dom)
    assert ">bin 1 " not in dom
