"""Built-in post-deployment verification: ``python -m modelgate.verify``.

Compares the deployed model's answers with the predictions that passed the
gate (train/serve skew) and checks latency. Run by the operator as the
verification Job of an Environment with ``verification.servedPredictions``,
and by local mode as a process; exit 0 verified, 1 skew or too slow, 2 the
check itself could not run (the message says why; it is tried again). Settings come from the
environment the verification step is given (MODELGATE_VERIFY_*).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping

from modelgate.api.common import parse_duration
from modelgate.api.environment import SERVED_MODEL_NAME, VERIFICATION_FAILED_EXIT_CODE
from modelgate.serving.verify import VerifySettings, verify

EXIT_VERIFIED, EXIT_SKEW, EXIT_ERROR = 0, VERIFICATION_FAILED_EXIT_CODE, 2

# Variables of the built-in verification (next to MODELGATE_VERIFY_URL,
# MODELGATE_MODEL_NAME, MODELGATE_PREDICTIONS_URI/_SHA256 and
# MODELGATE_METADATA_URI/_SHA256, which every verification gets).
SERVED_NAME = SERVED_MODEL_NAME
SAMPLE = "MODELGATE_VERIFY_SAMPLE"
MAX_MISMATCH_RATE = "MODELGATE_VERIFY_MAX_MISMATCH_RATE"
SCORE_TOLERANCE = "MODELGATE_VERIFY_SCORE_TOLERANCE"
MAX_LATENCY = "MODELGATE_VERIFY_MAX_LATENCY"
READY_TIMEOUT = "MODELGATE_VERIFY_READY_TIMEOUT"


def settings_from(env: Mapping[str, str]) -> VerifySettings:
    missing = [
        name
        for name in (
            "MODELGATE_VERIFY_URL",
            "MODELGATE_PREDICTIONS_URI",
            "MODELGATE_PREDICTIONS_SHA256",
            "MODELGATE_METADATA_URI",
            "MODELGATE_METADATA_SHA256",
        )
        if not env.get(name)
    ]
    model_name = env.get(SERVED_NAME) or env.get("MODELGATE_MODEL_NAME")
    if not model_name:
        missing.append("MODELGATE_MODEL_NAME")
    if missing:
        raise ValueError(f"missing environment variables: {', '.join(missing)}")
    latency = env.get(MAX_LATENCY)
    ready = env.get(READY_TIMEOUT)
    return VerifySettings(
        url=env["MODELGATE_VERIFY_URL"],
        predictions_uri=env["MODELGATE_PREDICTIONS_URI"],
        predictions_sha256=env["MODELGATE_PREDICTIONS_SHA256"],
        metadata_uri=env["MODELGATE_METADATA_URI"],
        metadata_sha256=env["MODELGATE_METADATA_SHA256"],
        model_name=str(model_name),
        sample_size=int(env.get(SAMPLE) or 200),
        max_mismatch_rate=float(env.get(MAX_MISMATCH_RATE) or 0.0),
        score_tolerance=float(env.get(SCORE_TOLERANCE) or 1e-6),
        max_latency_seconds=parse_duration(latency).total_seconds() if latency else None,
        ready_timeout_seconds=parse_duration(ready).total_seconds() if ready else 120.0,
    )


def main(env: Mapping[str, str] | None = None) -> int:
    try:
        settings = settings_from(os.environ if env is None else env)
        result = verify(settings)
    except Exception as error:  # any failure to check is reported, never a traceback
        print(f"verification could not run: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_ERROR
    record = {
        "rows": result.rows,
        "mismatches": len(result.mismatches),
        "mismatchRate": result.mismatch_rate,
        "latencyP50Seconds": result.percentile(0.5) if result.latencies else None,
        "latencyP99Seconds": result.percentile(0.99) if result.latencies else None,
        "model": result.model,
        "passed": result.passed(settings),
    }
    print(json.dumps(record, sort_keys=True))
    # The last line is what a failed run reports (Job termination message,
    # local mode's run record): the summary, first mismatch included.
    print(("verified: " if record["passed"] else "skew: ") + result.summary(settings))
    return EXIT_VERIFIED if record["passed"] else EXIT_SKEW


if __name__ == "__main__":
    sys.exit(main())
