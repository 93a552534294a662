"""Generate CustomResourceDefinitions from the pydantic models.

pydantic emits JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema:
no ``$ref``, no ``anyOf`` carrying types, a ``type`` on every node, free-form
maps marked ``x-kubernetes-preserve-unknown-fields``. This module does that
translation so the models stay the one source of truth.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from modelgate import GROUP, VERSION
from modelgate.api.common import NAME_MAX_LENGTH
from modelgate.api.environment import Environment
from modelgate.api.modelrelease import ModelRelease
from modelgate.api.qualitygate import QualityGate

CATEGORY = "modelgate"

_READY = '.status.conditions[?(@.type=="Ready")].status'

CRD_INFO: dict[str, dict[str, Any]] = {
    "Environment": {
        "model": Environment,
        "plural": "environments",
        "singular": "environment",
        "short_names": ["mgenv"],
        "columns": [
            {"name": "Tier", "type": "string", "jsonPath": ".spec.tier"},
            {"name": "From", "type": "string", "jsonPath": ".spec.promotesFrom"},
            {"name": "Namespace", "type": "string", "jsonPath": ".spec.namespace"},
            {"name": "Live", "type": "string", "jsonPath": ".status.liveRelease"},
            {"name": "Ready", "type": "string", "jsonPath": _READY},
        ],
    },
    "QualityGate": {
        "model": QualityGate,
        "plural": "qualitygates",
        "singular": "qualitygate",
        "short_names": ["qg"],
        "columns": [
            {"name": "Task", "type": "string", "jsonPath": ".spec.task"},
            {"name": "Checks", "type": "integer", "jsonPath": ".status.checkCount"},
            {"name": "Ready", "type": "string", "jsonPath": _READY},
        ],
    },
    "ModelRelease": {
        "model": ModelRelease,
        "plural": "modelreleases",
        "singular": "modelrelease",
        "short_names": ["mr", "mrel"],
        "columns": [
            {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
            {"name": "Ready", "type": "string", "jsonPath": _READY},
            {"name": "Model", "type": "string", "jsonPath": ".spec.model.name"},
            {"name": "Version", "type": "string", "jsonPath": ".spec.model.version"},
            {"name": "Live", "type": "string", "jsonPath": ".status.liveIn"},
            {
                "name": "Gate",
                "type": "string",
                "jsonPath": ".status.gate.outcome",
                "priority": 1,
            },
        ],
    },
}

# Lists of named sub-objects that Kubernetes should merge by key (server-side
# apply, strategic merge) and keep unique: (owner model path, field) -> keys.
_LIST_MAP_KEYS: dict[str, list[str]] = {
    "conditions": ["type"],
    "checks": ["name"],
    "config": ["name"],
    "values": ["name"],
    "configRules": ["key"],
    "artifacts": ["name"],
    "metrics": ["name"],
}

_DROP_KEYS = {"title", "discriminator"}


class SchemaError(RuntimeError):
    """The models produced a schema shape the generator does not translate."""


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline $ref, collapse Optional, drop nulls and titles, recursively."""
    if isinstance(node, list):
        return [_resolve(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").split("/")[-1]
        target = _resolve(copy.deepcopy(defs[name]), defs)
        # The field's own description wins over the model's docstring.
        return {**target, **{k: _resolve(v, defs) for k, v in node.items()}}
    if "anyOf" in node:
        options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
        if len(options) != 1:
            raise SchemaError(f"cannot express a union of {len(options)} types structurally")
        merged = {**_resolve(options[0], defs), **node}
        if merged.get("default", "unset") is None:
            del merged["default"]
        return _resolve(merged, defs)
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        return _resolve({**inner, **node}, defs)
    if "const" in node:
        node["enum"] = [node.pop("const")]
    result: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "properties":
            result[key] = {name: _resolve(prop, defs) for name, prop in value.items()}
        else:
            result[key] = _resolve(value, defs)
    if result.get("default", "unset") is None:
        del result["default"]
    return result


def _kubernetize(node: dict[str, Any], field: str | None = None, in_status: bool = False) -> None:
    """Make a resolved schema structural and add Kubernetes list semantics."""
    if in_status:
        # Defaults belong to the spec; status is written whole by the operator.
        node.pop("default", None)
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if isinstance(node.get(exclusive), int | float) and not isinstance(node[exclusive], bool):
            # JSON Schema 2020's number is OpenAPI v3.0's bound plus a flag.
            node[bound], node[exclusive] = node[exclusive], True
    if node.get("type") == "object":
        properties = node.get("properties")
        extra = node.get("additionalProperties")
        if properties is None and (extra is True or extra is None):
            node.pop("additionalProperties", None)
            node["x-kubernetes-preserve-unknown-fields"] = True
        elif isinstance(extra, dict):
            _kubernetize(extra, None, in_status)
        elif extra is False:
            # Structural schemas prune unknown fields by themselves.
            node.pop("additionalProperties")
        for name, child in (properties or {}).items():
            if field is None and name == "metadata":
                continue  # the API server validates ObjectMeta itself
            _kubernetize(child, name, in_status or (field is None and name == "status"))
    elif node.get("type") == "array":
        _kubernetize(node["items"], None, in_status)
        keys = _LIST_MAP_KEYS.get(field or "")
        if keys and all(key in node["items"].get("required", []) for key in keys):
            node["x-kubernetes-list-type"] = "map"
            node["x-kubernetes-list-map-keys"] = keys
    elif "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        raise SchemaError(f"schema node for {field!r} has no type: {node}")


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    """The structural openAPIV3Schema of one kind."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema: dict[str, Any] = _resolve(raw, defs)
    # metadata is validated by the API server itself; a CRD may only limit
    # the name further (derived Job and Deployment names must stay valid).
    schema["properties"]["metadata"] = {
        "type": "object",
        "properties": {
            "name": {
                "type": "string",
                "maxLength": NAME_MAX_LENGTH,
                "description": "Name of the object (at most 63 characters: Jobs and "
                "Deployments are named after it).",
            }
        },
    }
    schema["properties"]["kind"] = {"type": "string", "description": "Kind of the object."}
    schema["properties"]["apiVersion"] = {
        "type": "string",
        "description": "API version of the object.",
    }
    schema["required"] = ["spec"]
    schema.pop("default", None)
    _kubernetize(schema)
    return schema


def build_crd(kind: str) -> dict[str, Any]:
    """The CustomResourceDefinition manifest of one kind."""
    info = CRD_INFO[kind]
    columns = [
        *info["columns"],
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{info['plural']}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": "modelgate",
                "app.kubernetes.io/part-of": "modelgate",
            },
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": info["plural"],
                "singular": info["singular"],
                "shortNames": info["short_names"],
                "categories": [CATEGORY],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": openapi_schema(info["model"])},
                }
            ],
        },
    }


def render_crd(kind: str) -> str:
    header = "# Generated by `modelgate crds` from the pydantic models. Do not edit.\n"
    return header + yaml.safe_dump(build_crd(kind), sort_keys=False, width=100)


def crd_filename(kind: str) -> str:
    return f"{GROUP}_{CRD_INFO[kind]['plural']}.yaml"


def render_all() -> dict[str, str]:
    """File name -> content of every CRD."""
    return {crd_filename(kind): render_crd(kind) for kind in CRD_INFO}
