"""Which files of a finished training run become its artifacts."""

from __future__ import annotations

import hashlib
from pathlib import Path

from modelgate.backends.local import LocalArtifactStore
from modelgate.backends.outputs import ingest_outputs
from modelgate.trainer import contract


def _write(folder: Path, **files: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def test_predictions_as_csv_are_taken_when_no_parquet_is_written(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _write(
        run,
        **{contract.MODEL_FILE: b"model", contract.PREDICTIONS_CSV_FILE: b"y_true,y_pred\n1,1\n"},
    )
    records = {r.name: r for r in ingest_outputs(LocalArtifactStore(tmp_path / "store"), str(run))}
    assert sorted(records) == ["model", "predictions"]  # no metadata written, none taken
    expected = hashlib.sha256(b"y_true,y_pred\n1,1\n").hexdigest()
    assert records["predictions"].sha256 == expected


def test_parquet_predictions_win_over_a_csv_beside_them(tmp_path: Path) -> None:
    run = tmp_path / "run"
    _write(run, **{contract.PREDICTIONS_FILE: b"PAR1...", contract.PREDICTIONS_CSV_FILE: b"a\n"})
    [record] = ingest_outputs(LocalArtifactStore(tmp_path / "store"), str(run))
    assert record.sha256 == hashlib.sha256(b"PAR1...").hexdigest()


def test_a_run_that_wrote_nothing_yields_no_artifacts(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    assert ingest_outputs(LocalArtifactStore(tmp_path / "store"), str(tmp_path / "run")) == ()
