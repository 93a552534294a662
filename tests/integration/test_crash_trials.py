"""Five crash trials (the benchmark runs 50): SIGKILL the operator at a random
instant of a release's lifecycle, restart it, and check that nothing was
deployed or committed twice and the release still ends where it should."""

from __future__ import annotations

import random
from pathlib import Path

from tests.support.crash import crash_world, run_trial


def test_five_crash_trials(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    with crash_world(tmp_path) as world:
        results = [run_trial(world, trial, rng) for trial in range(5)]
        errors = list(world.controller_errors)
    rows = [r.row() for r in results]
    assert [r.final for r in results] == [r.expected for r in results], rows
    assert not any(r.duplicated for r in results), rows
    assert errors == []
    for result in results:
        # Each environment deployed, a Rollback only where verification
        # failed, one promotion commit; no operator run repeated an action
        # (a kill may interrupt one before it reaches the API: the restarted
        # run tries again, and the rollouts and commits above stay single).
        assert result.deploys["Deploy:staging"] >= 1, rows
        assert result.deploys["Deploy:production"] >= 1, rows
        rolled_back = bool(result.deploys["Rollback:production"])
        assert rolled_back == (result.expected == "RolledBack"), rows
        assert result.promotion_commits == 1, rows
        assert result.repeated == [], rows
