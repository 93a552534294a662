"""--log-format json: action lines carry release and environment as keys."""

from __future__ import annotations

import io
import json
import logging

from kopf._core.actions.loggers import ObjectJsonFormatter

from modelgate.api import ModelRelease, load_documents
from modelgate.handlers import log_action, logger
from modelgate.promotion import Rollback
from tests.conftest import EXAMPLES


def test_action_lines_are_json_with_release_and_environment() -> None:
    [document] = load_documents((EXAMPLES / "credit-risk" / "release.yaml").read_text())
    document["metadata"]["namespace"] = "team"
    release = ModelRelease.model_validate(document)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    # The formatter kopf installs for --log-format json.
    handler.setFormatter(ObjectJsonFormatter())
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        log_action(release, Rollback("production", "ml-prod", "team/credit-risk-1-4-0", "m"))
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    line = json.loads(stream.getvalue())
    assert line["message"] == "Rollback team/credit-risk-1-4-0 in production"
    assert line["release"] == "team/credit-risk-1-4-0"
    assert line["environment"] == "production"
    assert line["action"] == "Rollback"
    assert line["severity"] == "info"
