"""What GitOps promotions write, read by the Go programs that apply it: the
kustomize in kubectl and helm. Config values that look like numbers or
YAML 1.1 booleans (y, 1e3, 0x1F) must reach the model as the strings they
are; written bare by PyYAML, kustomize read ``1e3`` as 1000 and helm ``y``
as true."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import yaml

from modelgate.backends.gitformats import render
from modelgate.settings import OperatorSettings
from tests.support.controlplane import BIN
from tests.support.installation import HELM
from tests.unit.test_gitformats import NOW, action

TRICKY = {
    "FLAG": "y",
    "OTHER_FLAG": "N",
    "THRESHOLD": "1e3",
    "MASK": "0x1F",
    "COUNT": "1_000",
    "LIMIT": ".inf",
    "AT": "12:30",
    "ON": "on",
    "PLAIN": "hello",
}


def _write(files: dict[str, str | None], root: Path) -> None:
    for path, text in files.items():
        assert text is not None
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text)


def test_kustomize_reads_the_manifest_format_config_as_written(tmp_path: Path) -> None:
    deploy = dataclasses.replace(action(), config=TRICKY)
    files = render("manifest", deploy, {}, OperatorSettings(), NOW)
    _write(files, tmp_path)
    names = sorted(Path(p).name for p in files)
    (tmp_path / "model" / "kustomization.yaml").write_text(yaml.safe_dump({"resources": names}))
    built = subprocess.run(
        [str(BIN / "kubectl"), "kustomize", str(tmp_path / "model")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    config = next(d for d in yaml.safe_load_all(built.stdout) if d["kind"] == "ConfigMap")
    assert config["data"] == TRICKY


def test_helm_reads_the_helm_values_format_config_as_written(tmp_path: Path) -> None:
    deploy = dataclasses.replace(action(), config=TRICKY)
    files = render("helm-values", deploy, {}, OperatorSettings(), NOW)
    _write(files, tmp_path)
    chart = tmp_path / "chart"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: model\nversion: 0.1.0\n")
    (chart / "templates" / "config.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: model}\n"
        "data: {{ toJson .Values.config }}\n"
    )
    rendered = subprocess.run(
        [str(HELM), "template", "model", str(chart), "-f", str(tmp_path / "model" / "values.yaml")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert yaml.safe_load(rendered.stdout)["data"] == TRICKY
