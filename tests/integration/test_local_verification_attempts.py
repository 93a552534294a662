"""Local mode keeps the verification's exit-code contract as a Job's pod
failure policy does: a run that could not check is tried again, the model
failing the check is final at once."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from modelgate.backends.local import LocalArtifactStore, LocalProcessRunner
from modelgate.promotion import StartVerification
from tests.support.exits import EXITS_IN_TURN


def _verify(tmp_path: Path, codes: str, attempts: int) -> tuple[dict[str, object], int]:
    runner = LocalProcessRunner(tmp_path / "state", LocalArtifactStore(tmp_path / "store"))
    counter = tmp_path / "runs"
    action = StartVerification(
        job_name="m-1-verify-0123abcd",
        environment="production",
        namespace="team",
        release="team/m-1",
        model="m",
        image="",
        command=("python", "-c", EXITS_IN_TURN),
        args=(),
        timeout=timedelta(minutes=1),
        predictions=None,
        env=(("COUNTER", str(counter)), ("CODES", codes)),
        attempts=attempts,
    )
    runner.start_verification(action, endpoint="http://127.0.0.1:9")
    observed = runner.observe(action.job_name)
    assert observed is not None
    return {"state": observed.state, "message": observed.message}, int(counter.read_text())


def test_a_run_that_could_not_check_is_tried_again_until_it_checks(tmp_path: Path) -> None:
    result, runs = _verify(tmp_path, "2,2,0", attempts=3)
    assert result == {"state": "Succeeded", "message": None}
    assert runs == 3


def test_the_attempts_are_bounded_and_the_message_says_how_many(tmp_path: Path) -> None:
    result, runs = _verify(tmp_path, "2", attempts=2)
    assert runs == 2
    assert result["state"] == "Failed"
    assert result["message"] == "exit code 2: run 2: exit 2 (after 2 attempts)"


@pytest.mark.parametrize("attempts", [1, 3])
def test_the_model_failing_the_check_is_final_at_once(tmp_path: Path, attempts: int) -> None:
    result, runs = _verify(tmp_path, "1,0", attempts=attempts)
    assert runs == 1
    assert result["state"] == "Failed"
    assert result["message"] == "exit code 1: run 1: exit 1"
