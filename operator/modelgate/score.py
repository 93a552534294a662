"""Scoring through a model server: ``python -m modelgate.score``.

Sends the evaluation rows to a running server through the Open Inference
Protocol and writes the predictions file the gate evaluates, so the gate
judges what will be served. What the model takes and answers comes from the
release's metadata.json (hash-checked). Settings from the environment:
MODELGATE_SCORE_URL, MODELGATE_MODEL_NAME, MODELGATE_EVAL_DATA (a CSV or
Parquet file or a directory of them), MODELGATE_TARGET,
MODELGATE_METADATA_URI/_SHA256, MODELGATE_OUTPUT_DIR, and optionally
MODELGATE_SCORE_BATCH_ROWS and MODELGATE_SCORE_READY_TIMEOUT. Exit 0 scored,
2 not (the last line says why).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from modelgate.api.common import parse_duration
from modelgate.serving.artifacts import read_artifact, verified
from modelgate.serving.scoring import DEFAULT_BATCH_ROWS, ScoreSettings, score
from modelgate.serving.served import Served
from modelgate.trainer.contract import PREDICTIONS_FILE

EXIT_SCORED, EXIT_ERROR = 0, 2
REQUIRED = (
    "MODELGATE_SCORE_URL",
    "MODELGATE_MODEL_NAME",
    "MODELGATE_EVAL_DATA",
    "MODELGATE_TARGET",
    "MODELGATE_METADATA_URI",
    "MODELGATE_METADATA_SHA256",
    "MODELGATE_OUTPUT_DIR",
)


def settings_from(env: Mapping[str, str]) -> tuple[ScoreSettings, Served]:
    missing = [name for name in REQUIRED if not env.get(name)]
    if missing:
        raise ValueError(f"missing environment variables: {', '.join(missing)}")
    metadata = verified(
        read_artifact(env["MODELGATE_METADATA_URI"]), env["MODELGATE_METADATA_SHA256"], "metadata"
    )
    ready = env.get("MODELGATE_SCORE_READY_TIMEOUT")
    output = Path(env["MODELGATE_OUTPUT_DIR"])
    output.mkdir(parents=True, exist_ok=True)
    settings = ScoreSettings(
        url=env["MODELGATE_SCORE_URL"],
        model_name=env["MODELGATE_MODEL_NAME"],
        data=Path(env["MODELGATE_EVAL_DATA"]),
        target=env["MODELGATE_TARGET"],
        output=output / PREDICTIONS_FILE,
        batch_rows=int(env.get("MODELGATE_SCORE_BATCH_ROWS") or DEFAULT_BATCH_ROWS),
        ready_timeout_seconds=parse_duration(ready).total_seconds() if ready else 120.0,
    )
    return settings, Served.from_metadata(json.loads(metadata))


def main(env: Mapping[str, str] | None = None) -> int:
    try:
        settings, served = settings_from(os.environ if env is None else env)
        result = score(settings, served)
    except Exception as error:  # any failure to score is reported, never a traceback
        print(f"scoring could not run: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_ERROR
    print(
        json.dumps(
            {
                "rows": result.rows,
                "requests": result.requests,
                "seconds": round(result.seconds, 3),
                "predictions": str(settings.output),
            },
            sort_keys=True,
        )
    )
    return EXIT_SCORED


if __name__ == "__main__":
    sys.exit(main())
