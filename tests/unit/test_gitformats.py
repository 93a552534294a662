"""What GitOps promotions write, per format (pure; real Git is in integration)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
import yaml

from modelgate.backends.gitformats import FormatError, ImageRef, model_files, render
from modelgate.promotion import Deploy
from modelgate.settings import OperatorSettings

NOW = datetime(2026, 11, 22, tzinfo=UTC)
DIGEST = "sha256:" + "d" * 64


def action(image: str = f"registry.example.com:5000/team/model@{DIGEST}") -> Deploy:
    return Deploy(
        environment="production",
        namespace="ml-prod",
        release="team/model-1",
        model="model",
        image=image,
        config={"B": "2", "A": "1"},
        config_hash="h" * 64,
        predictions=None,
    )


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("nginx", ImageRef("nginx", None, None)),
        ("nginx:1.27", ImageRef("nginx", "1.27", None)),
        ("host:5000/team/m", ImageRef("host:5000/team/m", None, None)),
        ("host:5000/team/m:v2", ImageRef("host:5000/team/m", "v2", None)),
        (f"host:5000/m:v2@{DIGEST}", ImageRef("host:5000/m", "v2", DIGEST)),
        (f"m@{DIGEST}", ImageRef("m", None, DIGEST)),
    ],
)
def test_image_references_parse(image: str, expected: ImageRef) -> None:
    assert ImageRef.parse(image) == expected


def test_same_image_by_digest_ignores_the_tag() -> None:
    assert ImageRef.parse(f"m:v1@{DIGEST}").same_as(ImageRef.parse(f"m@{DIGEST}"))
    assert not ImageRef.parse("m:v1").same_as(ImageRef.parse("m:v2"))


def test_kustomize_sets_digest_and_sorted_literals() -> None:
    files = render("kustomize", action(), {}, OperatorSettings(), NOW)
    kustomization = yaml.safe_load(files["model/kustomization.yaml"] or "")
    assert kustomization["images"] == [
        {"name": "registry.example.com:5000/team/model", "digest": DIGEST}
    ]
    [generator] = kustomization["configMapGenerator"]
    assert generator["literals"] == ["A=1", "B=2"]
    assert yaml.safe_load(files["kustomization.yaml"] or "")["resources"] == ["model"]


def test_tagged_image_uses_new_tag() -> None:
    files = render("kustomize", action("registry.example.com/m:2.0"), {}, OperatorSettings(), NOW)
    kustomization = yaml.safe_load(files["model/kustomization.yaml"] or "")
    assert kustomization["images"] == [{"name": "registry.example.com/m", "newTag": "2.0"}]


def test_existing_model_directory_leaves_the_parent_alone() -> None:
    existing: dict[str, str | None] = {"kustomization.yaml": "resources: [model, other]\n"}
    files = render("kustomize", action(), existing, OperatorSettings(), NOW)
    assert "kustomization.yaml" not in files


def test_broken_yaml_is_a_clear_error() -> None:
    existing: dict[str, str | None] = {"model/kustomization.yaml": "images: [unclosed\n"}
    with pytest.raises(FormatError, match=r"model/kustomization.yaml is not valid YAML"):
        render("kustomize", action(), existing, OperatorSettings(), NOW)
    existing = {"model/values.yaml": "- a list\n"}
    with pytest.raises(FormatError, match="must hold a YAML mapping"):
        render("helm-values", action(), existing, OperatorSettings(), NOW)


def test_manifest_format_never_overwrites_a_team_file() -> None:
    existing: dict[str, str | None] = {"model/deployment.yaml": "kind: Deployment\nmetadata: {}\n"}
    with pytest.raises(FormatError, match="was not written by Modelgate"):
        render("manifest", action(), existing, OperatorSettings(), NOW)


def test_unknown_format_names_the_choices() -> None:
    with pytest.raises(FormatError, match="use kustomize, helm-values or manifest"):
        render("jsonnet", action(), {}, OperatorSettings(), NOW)


def test_the_reference_server_command_reaches_every_format() -> None:
    served = dataclasses.replace(action(), command=("python", "-m", "modelgate.server"))
    files = render("helm-values", served, {"model/values.yaml": None}, OperatorSettings(), NOW)
    assert yaml.safe_load(files["model/values.yaml"])["command"] == list(served.command)
    plain = render("helm-values", action(), {"model/values.yaml": files["model/values.yaml"]},
                   OperatorSettings(), NOW)  # fmt: skip
    assert "command" not in yaml.safe_load(plain["model/values.yaml"])  # back to an image
    for fmt in ("kustomize", "manifest"):
        files = render(fmt, served, dict.fromkeys(model_files("model")), OperatorSettings(), NOW)
        deployment = yaml.safe_load(files["model/deployment.yaml"])
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"] == ["python", "-m", "modelgate.server"], fmt
