"""Crash consistency: release lifecycles with the operator SIGKILLed at a random
instant and restarted (`make crash`, default 50 trials).

    python benchmarks/crash_trials.py [--trials 50] [--seed 7] [--json out.json]
                                      [--control-plane emulator|real]

Each trial runs the real operator process against the Kubernetes emulator, a
moto S3 server and a real Git repository (staging Direct, production GitOps
with verification; every third trial's verification fails and is rolled
back), kills it with SIGKILL after a uniformly random 0.3-8 s and restarts it.
Reported: releases ending in the expected state, staging Deployments rolled
out more than once, GitOps promotion or revert commits duplicated, releases
stuck, and the time from restart to the final state.

--control-plane real runs the trials on the real etcd, kube-apiserver and
kube-controller-manager (`make controlplane`) with the test node running the
pods, the operator authenticated as the chart's ServiceAccount; production's
verification is the built-in check against the served model (a failing
trial asks for a 1 ms latency), and the kill comes within 0.3-20 s (a real
lifecycle takes longer than the emulator's).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.crash import crash_world, real_crash_world, run_real_trial, run_trial


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write every trial as JSON here")
    parser.add_argument("--control-plane", choices=("emulator", "real"), default="emulator")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    results = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="modelgate-crash-") as tmp:
        if args.control_plane == "real":
            with real_crash_world(Path(tmp)) as real:
                for trial in range(args.trials):
                    result = run_real_trial(real, trial, rng)
                    results.append(result)
                    print(json.dumps(result.row()), flush=True)
                errors = list(real.world.controller_errors)
        else:
            with crash_world(Path(tmp)) as world:
                for trial in range(args.trials):
                    result = run_trial(world, trial, rng)
                    results.append(result)
                    print(json.dumps(result.row()), flush=True)
                errors = list(world.controller_errors)
    correct = sum(r.correct for r in results)
    duplicated = sum(r.duplicated for r in results)
    stuck = sum(r.final not in {"Released", "RolledBack", "GateFailed", "Failed"} for r in results)
    recoveries = [r.recovery_seconds for r in results if r.recovery_seconds is not None]
    phases = Counter(r.phase_at_kill or "(no status yet)" for r in results)
    print()
    print(
        f"trials                         {len(results)} on the {args.control_plane} control plane "
        f"(seed {args.seed}, "
        f"{time.monotonic() - started:.0f} s)"
    )
    print(f"killed while                   {dict(phases)}")
    print(f"ended in the expected state    {correct}/{len(results)}")
    print(f"duplicated deploys or commits  {duplicated}")
    print(f"stuck (no final state)         {stuck}")
    if recoveries:
        print(
            f"restart -> final state         p50 {statistics.median(recoveries):.1f} s, "
            f"max {max(recoveries):.1f} s"
        )
    print(f"controller errors              {len(errors)}")
    if args.json:
        args.json.write_text(json.dumps([r.row() for r in results], indent=2))
    return 0 if correct == len(results) and duplicated == 0 and stuck == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
