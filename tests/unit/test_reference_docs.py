"""The docs' reference pages are generated from the CRDs and the parsers;
the committed pages must be what the code generates today."""

from __future__ import annotations

from modelgate.reference import pages
from tests.conftest import ROOT

REFERENCE = ROOT / "docs" / "reference"


def test_the_committed_reference_pages_are_up_to_date() -> None:
    stale = [
        name
        for name, text in pages().items()
        if not (REFERENCE / name).exists() or (REFERENCE / name).read_text() != text
    ]
    assert stale == [], f"run `make reference` and commit docs/reference ({', '.join(stale)})"


def test_every_field_and_command_has_a_row() -> None:
    release = pages()["modelrelease.md"]
    for field in ("spec.retry.requestedAt", "spec.promotion.rollbacks[].environment",
                  "status.environments[].rolledBackBy", "spec.abort.reason"):  # fmt: skip
        assert f"| `{field}` |" in release, field
    plugin = pages()["kubectl-modelgate.md"]
    for verb in ("get", "approve", "promote", "abort", "retry", "rollback", "reverify", "logs",
                 "diff"):  # fmt: skip
        assert f"### `kubectl modelgate {verb}`" in plugin, verb
    assert "--watch-seconds" not in plugin  # hidden flags stay hidden
