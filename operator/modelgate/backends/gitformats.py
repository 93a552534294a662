"""What a GitOps promotion writes into the repository, per format. Pure.

Each model gets a directory ``<environment path>/<model>/``; promotions of
different models therefore never touch the same file, and reverting one
model's promotion cannot conflict with another model's.

- ``kustomize``: ``<model>/kustomization.yaml`` with an ``images:`` entry (by
  digest when the image has one) and a ``configMapGenerator`` entry holding the
  merged config; Deployment and Service manifests are generated next to it
  unless the team wrote its own (files without the generated marker are never
  overwritten). The environment's ``kustomization.yaml`` lists each model
  directory.
- ``helm-values``: ``<model>/values.yaml`` with ``image``, ``config`` and a
  ``modelgate`` block; other keys the team keeps there are preserved.
- ``manifest``: plain Deployment, Service and ConfigMap manifests.

Files are YAML written by PyYAML: comments in files Modelgate edits are not
kept (keys and their order are).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import yaml

from modelgate.api.environment import GitFormat
from modelgate.backends import manifests
from modelgate.promotion import Deploy
from modelgate.settings import OperatorSettings

GENERATED = f"{manifests.ANNOTATION_PREFIX}generated"
KUSTOMIZATION = "kustomization.yaml"
VALUES = "values.yaml"

Files = dict[str, str | None]  # path relative to the environment's directory -> text (None: delete)


class FormatError(ValueError):
    """A file Modelgate must edit is not what it expects (e.g. not YAML)."""


@dataclass(frozen=True)
class ImageRef:
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, image: str) -> ImageRef:
        rest, _, digest = image.partition("@")
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            return cls(rest[:colon], rest[colon + 1 :], digest or None)
        return cls(rest, None, digest or None)

    def same_as(self, other: ImageRef) -> bool:
        """Same image: by digest when both have one, else by the full reference."""
        if self.digest and other.digest:
            return self.repository == other.repository and self.digest == other.digest
        return self == other


# YAML 1.1 booleans Go's readers take (go-yaml v2 in kubectl, helm and Argo
# CD) that PyYAML writes bare: a config value "y" would arrive as true.
_GO_BOOLEANS = frozenset({"y", "Y", "n", "N"})


def _ambiguous_for_go(text: str) -> bool:
    """A string a Go YAML reader would take for a number or a boolean when
    written bare (PyYAML quotes what its own reader would mistake)."""
    if text in _GO_BOOLEANS:
        return True
    plain = text.replace("_", "")
    for parse in (float, lambda t: int(t, 0)):
        try:
            parse(plain)
        except ValueError:
            continue
        return True
    return False


class _GoSafeDumper(yaml.SafeDumper):
    """Writes every string so that Go's YAML readers read it as a string
    too: kustomize turned a bare ``1e3`` into ``1000``."""


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = "'" if _ambiguous_for_go(text) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_GoSafeDumper.add_representer(str, _represent_str)


def dump_yaml(document: Any) -> str:
    return yaml.dump(document, Dumper=_GoSafeDumper, sort_keys=False, default_flow_style=False)


def load_mapping(path: str, text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise FormatError(f"{path} is not valid YAML ({error}); fix or remove it") from error
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise FormatError(f"{path} must hold a YAML mapping; fix or remove it")
    return document


def is_generated(text: str | None) -> bool:
    """Ours to (re)write: missing, or written by Modelgate earlier."""
    if text is None:
        return True
    try:
        documents = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError:
        return False
    return bool(documents) and all(
        (d.get("metadata", {}).get("annotations") or {}).get(GENERATED) == "true" for d in documents
    )


def mark_generated(document: dict[str, Any]) -> dict[str, Any]:
    document["metadata"].setdefault("annotations", {})[GENERATED] = "true"
    return document


def model_files(model: str) -> tuple[str, ...]:
    """Paths (relative to the environment's directory) a promotion may touch."""
    return (
        KUSTOMIZATION,
        f"{model}/{KUSTOMIZATION}",
        f"{model}/deployment.yaml",
        f"{model}/service.yaml",
        f"{model}/configmap.yaml",
        f"{model}/{VALUES}",
    )


def render(
    fmt: GitFormat | str,
    action: Deploy,
    existing: Mapping[str, str | None],
    settings: OperatorSettings,
    now: datetime,
) -> Files:
    """The files to write for ``action``; ``existing`` holds the current text of
    the paths ``model_files`` names (None where absent)."""
    if fmt == GitFormat.KUSTOMIZE:
        return _kustomize(action, existing, settings, now)
    if fmt == GitFormat.HELM_VALUES:
        return _helm_values(action, existing)
    if fmt == GitFormat.MANIFEST:
        return _manifest(action, existing, settings, now)
    raise FormatError(f"unknown GitOps format {fmt!r}; use kustomize, helm-values or manifest")


def _manifest(
    action: Deploy, existing: Mapping[str, str | None], settings: OperatorSettings, now: datetime
) -> Files:
    files: Files = {}
    documents = {
        "deployment.yaml": manifests.build_deployment(action, settings, now),
        "service.yaml": manifests.build_service(action, settings),
        "configmap.yaml": manifests.build_configmap(action),
    }
    for name, document in documents.items():
        path = f"{action.model}/{name}"
        if not is_generated(existing.get(path)):
            raise FormatError(
                f"{path} was not written by Modelgate; with format manifest Modelgate owns "
                "the model's directory: move the file, or use format kustomize"
            )
        files[path] = dump_yaml(mark_generated(document))
    return files


def _kustomize(
    action: Deploy, existing: Mapping[str, str | None], settings: OperatorSettings, now: datetime
) -> Files:
    model = action.model
    files: Files = {}
    image = ImageRef.parse(action.image)
    path = f"{model}/{KUSTOMIZATION}"
    kustomization = load_mapping(path, existing.get(path)) or {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
    }
    kustomization["namespace"] = action.namespace
    resources = list(kustomization.get("resources") or [])
    generated = {
        "deployment.yaml": manifests.build_deployment(action, settings, now),
        "service.yaml": manifests.build_service(action, settings),
    }
    for name, document in generated.items():
        if is_generated(existing.get(f"{model}/{name}")):
            if name == "deployment.yaml":
                # kustomize's images entry sets the reference; the generator
                # names the ConfigMap (with a content hash, so pods roll).
                container = document["spec"]["template"]["spec"]["containers"][0]
                container["image"] = image.repository
                container["envFrom"] = [{"configMapRef": {"name": _config_name(action)}}]
            files[f"{model}/{name}"] = dump_yaml(mark_generated(document))
            if name not in resources:
                resources.append(name)
    kustomization["resources"] = resources
    entry: dict[str, Any] = {"name": image.repository}
    if image.digest:
        entry["digest"] = image.digest
    elif image.tag:
        entry["newTag"] = image.tag
    images = [i for i in kustomization.get("images") or [] if i.get("name") != image.repository]
    kustomization["images"] = [*images, entry]
    generator = {
        "name": _config_name(action),
        "literals": [f"{key}={value}" for key, value in sorted(action.config.items())],
        "options": {
            "annotations": {f"{manifests.ANNOTATION_PREFIX}config-hash": action.config_hash},
            "labels": {manifests.MODEL_LABEL: model},
        },
    }
    generators = [
        g
        for g in kustomization.get("configMapGenerator") or []
        if g.get("name") != generator["name"]
    ]
    kustomization["configMapGenerator"] = [*generators, generator]
    files[path] = dump_yaml(kustomization)
    # The environment's own kustomization lists every model directory.
    parent = load_mapping(KUSTOMIZATION, existing.get(KUSTOMIZATION)) or {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
    }
    listed = list(parent.get("resources") or [])
    if model not in listed and f"{model}/" not in listed:
        parent["resources"] = sorted([*listed, model])
        files[KUSTOMIZATION] = dump_yaml(parent)
    return files


def _config_name(action: Deploy) -> str:
    return manifests.dns_name(manifests.serving_name(action.model, action.environment), "config")


def _helm_values(action: Deploy, existing: Mapping[str, str | None]) -> Files:
    path = f"{action.model}/{VALUES}"
    values = load_mapping(path, existing.get(path))
    image = ImageRef.parse(action.image)
    image_values: dict[str, Any] = {"repository": image.repository}
    if image.tag:
        image_values["tag"] = image.tag
    if image.digest:
        image_values["digest"] = image.digest
    values["image"] = image_values
    if action.command:
        values["command"] = list(action.command)  # the reference server
    else:
        values.pop("command", None)
    values["config"] = dict(sorted(action.config.items()))
    values["modelgate"] = {
        "release": action.release,
        "environment": action.environment,
        "modelVersion": action.model_version,
        "configHash": action.config_hash,
    }
    return {path: dump_yaml(values)}
