"""The reference pages of the docs site, generated from what defines them:
the CRDs (built from the pydantic models) and the command-line parsers.
``modelgate reference --output-dir docs/reference`` writes them (the CLI
imports this package when asked, as it imports the CLI); a test fails when
the committed pages are stale."""

from __future__ import annotations

from pathlib import Path

from modelgate.cli import build_parser
from modelgate.plugin.cli import parser as plugin_parser
from modelgate.reference.commands import commands_page
from modelgate.reference.crds import crd_page

KINDS = ("ModelRelease", "QualityGate", "Environment")


def pages() -> dict[str, str]:
    """File name (under the reference folder) -> its Markdown."""
    found = {f"{kind.lower()}.md": crd_page(kind) for kind in KINDS}
    found["modelgate-cli.md"] = commands_page(
        "The modelgate command",
        "Local mode, offline gates, validation and the operator itself.",
        build_parser(),
    )
    found["kubectl-modelgate.md"] = commands_page(
        "kubectl modelgate",
        "The kubectl plugin: where each model stands, and the verbs that move it, with your "
        "kubeconfig and identity.",
        plugin_parser(),
    )
    return found


def write_pages(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in pages().items():
        path = directory / name
        path.write_text(text)
        written.append(path)
    return written
