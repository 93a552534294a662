"""CRDs are generated from the models, structural, valid, and up to date."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from modelgate.api import parse_resource
from modelgate.api.crdgen import CRD_INFO, build_crd, crd_filename, render_all
from tests.conftest import EXAMPLES, ROOT

# The oldest Kubernetes we support and the newest kubernetes-validate bundles.
KUBERNETES_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]


@pytest.mark.parametrize("folder", ["crds", "charts/modelgate/files/crds"])
def test_committed_crds_match_the_generator(folder: str) -> None:
    directory = ROOT / folder
    stale = [
        name
        for name, content in render_all().items()
        if not (directory / name).is_file()
        or (directory / name).is_symlink()
        or (directory / name).read_text() != content
    ]
    assert stale == [], f"{folder}/ is stale for {stale}: run `make crds` and commit the result"
    extra = {p.name for p in directory.glob("*.yaml")} - set(render_all())
    assert extra == set(), f"{folder}/ has files the generator does not write: {extra}"


@pytest.mark.parametrize("kind", sorted(CRD_INFO))
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_crd_validates_strictly(kind: str, version: str) -> None:
    kubernetes_validate.validate(build_crd(kind), version, strict=True)


def _walk(node: dict[str, Any], path: str, problems: list[str]) -> None:
    for forbidden in ("$ref", "anyOf", "oneOf", "allOf", "not", "title", "$defs", "const"):
        if forbidden in node:
            problems.append(f"{path}: has {forbidden}")
    if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        problems.append(f"{path}: has no type")
    for name, child in node.get("properties", {}).items():
        if name not in {"metadata", "apiVersion", "kind"} and not child.get("description"):
            problems.append(f"{path}.{name}: has no description")
        _walk(child, f"{path}.{name}", problems)
    if isinstance(node.get("items"), dict):
        _walk(node["items"], f"{path}[]", problems)
    if isinstance(node.get("additionalProperties"), dict):
        _walk(node["additionalProperties"], f"{path}{{}}", problems)
    if "default" in node and node["default"] is None:
        problems.append(f"{path}: null default")


@pytest.mark.parametrize("kind", sorted(CRD_INFO))
def test_crd_schema_is_structural_and_described(kind: str) -> None:
    crd = build_crd(kind)
    version = crd["spec"]["versions"][0]
    problems: list[str] = []
    _walk(version["schema"]["openAPIV3Schema"], kind, problems)
    assert problems == []
    assert version["subresources"] == {"status": {}}
    assert crd["spec"]["names"]["categories"] == ["modelgate"]
    assert crd["spec"]["names"]["shortNames"]
    columns = {c["name"] for c in version["additionalPrinterColumns"]}
    assert {"Ready", "Age"} <= columns


def test_modelrelease_columns_show_phase_model_version_and_live() -> None:
    version = build_crd("ModelRelease")["spec"]["versions"][0]
    paths = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert paths["Phase"] == ".status.phase"
    assert paths["Model"] == ".spec.model.name"
    assert paths["Version"] == ".spec.model.version"
    assert paths["Live"] == ".status.liveIn"


def test_named_lists_merge_by_key() -> None:
    schema = build_crd("ModelRelease")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    gate = build_crd("QualityGate")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert gate["properties"]["spec"]["properties"]["checks"]["x-kubernetes-list-map-keys"] == [
        "name"
    ]


def jsonschema_from_crd(schema: dict[str, Any]) -> dict[str, Any]:
    """What the API server enforces, as JSON Schema: no x-kubernetes-* keys,
    objects closed unless they preserve unknown fields (pruning + strict
    field validation reject unknown fields)."""
    node = copy.deepcopy(schema)
    preserve = node.get("x-kubernetes-preserve-unknown-fields", False)
    for key in [k for k in node if k.startswith("x-kubernetes-")]:
        del node[key]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if node.get(exclusive) is True:  # OpenAPI v3.0's flag; JSON Schema's number
            node[exclusive] = node.pop(bound)
    if node.get("type") == "object" and "properties" in node and not preserve:
        node["additionalProperties"] = False
        node["properties"] = {k: jsonschema_from_crd(v) for k, v in node["properties"].items()}
    if isinstance(node.get("items"), dict):
        node["items"] = jsonschema_from_crd(node["items"])
    if isinstance(node.get("additionalProperties"), dict):
        node["additionalProperties"] = jsonschema_from_crd(node["additionalProperties"])
    return node


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and str(document.get("apiVersion", "")).startswith("modelgate.dev/"):
                found.append((f"{path.relative_to(ROOT)}:{document['metadata']['name']}", document))
    return found


EXAMPLE_DOCUMENTS = example_documents()


def test_examples_exist() -> None:
    kinds = {document["kind"] for _, document in EXAMPLE_DOCUMENTS}
    assert kinds == {"QualityGate", "Environment", "ModelRelease"}


@pytest.mark.parametrize(("source", "document"), EXAMPLE_DOCUMENTS, ids=lambda v: str(v)[:60])
def test_example_validates_against_crd_and_model(source: str, document: dict[str, Any]) -> None:
    kind = document["kind"]
    schema = build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    jsonschema.validate(document, jsonschema_from_crd(schema))
    parse_resource(document, source)


def test_crd_schema_rejects_what_the_model_rejects() -> None:
    schema = jsonschema_from_crd(
        build_crd("QualityGate")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    )
    bad = {
        "apiVersion": "modelgate.dev/v1alpha1",
        "kind": "QualityGate",
        "metadata": {"name": "g"},
        "spec": {"task": "binary", "checks": [{"name": "a", "mertic": {}}]},
    }
    with pytest.raises(jsonschema.ValidationError, match="mertic"):
        jsonschema.validate(bad, schema)
    bad["spec"] = {"task": "ranking", "checks": []}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def test_crd_file_names() -> None:
    assert crd_filename("ModelRelease") == "modelgate.dev_modelreleases.yaml"
    assert Path(ROOT / "crds" / crd_filename("Environment")).exists()
