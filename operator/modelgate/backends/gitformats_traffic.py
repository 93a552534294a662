"""What a judged rollout (policy.rollout) writes into a GitOps repository.
Pure: files in, files out.

One directory beside the model's, ``<environment path>/<model>-traffic/``,
holds how callers reach the model and the challenger beside it:

- ``httproute.yaml``: the model's HTTPRoute on the Gateway
  (policy.rollout.traffic.gateway): the live model's Service alone, the two
  arms by weight, or Modelgate's router. It stays when the challenger goes,
  with the live model alone.
- ``challenger.yaml``: the challenger's ConfigMap, Deployment and Service
  while it is judged; its Deployment's annotations carry the weight the
  route gives it (what the operator reads back from the cluster).
- ``router.yaml``: the router's Deployment and Service while a mirror or a
  sticky split needs it.
- ``kustomization.yaml`` (format kustomize) listing them; the environment's
  kustomization lists the directory.

A directory of its own, not the model's: the model's kustomization sets its
image by name (``images:``), which would give the challenger the live
model's image; and a rollback reverts a promotion's commit, which then never
touches a split.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import yaml

from modelgate.api.environment import GitFormat
from modelgate.backends import challenger_manifests as arms
from modelgate.backends.gitformats import (
    KUSTOMIZATION,
    Files,
    FormatError,
    dump_yaml,
    is_generated,
    load_mapping,
    mark_generated,
)
from modelgate.backends.manifests import ANNOTATION_PREFIX
from modelgate.promotion.plan import Deploy, SetTraffic
from modelgate.settings import OperatorSettings

CHALLENGER = "challenger.yaml"
ROUTER = "router.yaml"
ROUTE = "httproute.yaml"
PARTS = (ROUTE, CHALLENGER, ROUTER)
RELEASE = f"{ANNOTATION_PREFIX}release"


def traffic_dir(model: str) -> str:
    return f"{model}-traffic"


def traffic_files(model: str) -> tuple[str, ...]:
    """Paths (relative to the environment's directory) a split may touch."""
    folder = traffic_dir(model)
    return (KUSTOMIZATION, f"{folder}/{KUSTOMIZATION}", *(f"{folder}/{p}" for p in PARTS))


def router_path(model: str) -> str:
    return f"{traffic_dir(model)}/{ROUTER}"


def unsupported(fmt: GitFormat | str) -> str | None:
    """Why a split cannot be committed in this format, or None."""
    if fmt == GitFormat.HELM_VALUES:
        return (
            "with delivery.git.format helm-values the challenger and its route would need the "
            "team's chart to render them: use format kustomize or manifest, whose files "
            "Modelgate writes whole"
        )
    return None


def committed_challenger(existing: Mapping[str, str | None], model: str) -> dict[str, Any] | None:
    """The challenger's Deployment as committed, or None."""
    for document in _documents(existing, f"{traffic_dir(model)}/{CHALLENGER}"):
        if document.get("kind") == "Deployment":
            return document
    return None


def committed_release(existing: Mapping[str, str | None], model: str) -> str | None:
    deployment = committed_challenger(existing, model)
    if deployment is None:
        return None
    return ((deployment.get("metadata") or {}).get("annotations") or {}).get(RELEASE)


def render_challenger(
    fmt: GitFormat | str,
    action: Deploy,
    existing: Mapping[str, str | None],
    settings: OperatorSettings,
    now: datetime,
) -> Files:
    """The challenger beside the live model, with no traffic; one of another
    release committed there is replaced (its split undone with it)."""
    _supported(fmt)
    model = action.model
    files: Files = {}
    current = committed_challenger(existing, model)
    current_release = committed_release(existing, model)
    if current is not None and current_release != action.release:
        files.update(render_removal(fmt, model, action.environment, existing))
        current = None
    config, deployment, service = arms.build_challenger(action, settings, now)
    if current is not None:
        # Committed again (a config edit): the split it has stays.
        kept = current.get("metadata", {}).get("annotations") or {}
        for key in (arms.WEIGHT, arms.MIRROR, arms.TRAFFIC):
            if key in kept:
                deployment["metadata"]["annotations"][key] = kept[key]
    files[_path(model, CHALLENGER)] = _dump_all([config, deployment, service])
    return _listed(fmt, files, existing, model, action.namespace)


def render_router(
    fmt: GitFormat | str,
    action: SetTraffic,
    existing: Mapping[str, str | None],
    settings: OperatorSettings,
) -> Files:
    """The router alone (the route still sends callers where it did): it
    starts before any caller is sent to it."""
    _supported(fmt)
    files: Files = {
        _path(action.model, ROUTER): _dump_all(list(arms.build_router(action, settings)))
    }
    return _listed(fmt, files, existing, action.model, action.namespace)


def render_split(
    fmt: GitFormat | str,
    action: SetTraffic,
    existing: Mapping[str, str | None],
    settings: OperatorSettings,
    how: str,
) -> Files:
    """The route as the split wants it, the challenger's Deployment
    annotated with the weight, the router kept only if the split needs it."""
    _supported(fmt)
    model = action.model
    if action.gateway is None:
        raise FormatError(
            "a split committed to Git is an HTTPRoute: set policy.rollout.traffic.gateway"
        )
    documents = _documents(existing, _path(model, CHALLENGER))
    if not any(d.get("kind") == "Deployment" for d in documents):
        raise FormatError(
            f"{_path(model, CHALLENGER)} holds no challenger Deployment to split traffic to; "
            "it was removed by hand: the challenger is committed again on the next look"
        )
    for document in documents:
        if document.get("kind") == "Deployment":
            document["metadata"].setdefault("annotations", {}).update(
                {
                    arms.WEIGHT: str(action.weight),
                    arms.MIRROR: str(action.mirror).lower(),
                    arms.TRAFFIC: how,
                }
            )
    files: Files = {
        _path(model, CHALLENGER): _dump_all(documents),
        _path(model, ROUTE): dump_yaml(mark_generated(arms.build_httproute(action))),
    }
    if arms.needs_router(action):
        files[_path(model, ROUTER)] = _dump_all(list(arms.build_router(action, settings)))
    else:
        files[_path(model, ROUTER)] = None
    return _listed(fmt, files, existing, model, action.namespace)


def render_removal(
    fmt: GitFormat | str, model: str, environment: str, existing: Mapping[str, str | None]
) -> Files:
    """The challenger and the router gone; the route, if there is one, sends
    every caller to the live model."""
    files: Files = {_path(model, CHALLENGER): None, _path(model, ROUTER): None}
    namespace = ""
    for document in _documents(existing, _path(model, ROUTE)):
        if document.get("kind") == "HTTPRoute":
            files[_path(model, ROUTE)] = dump_yaml(
                mark_generated(arms.build_route_alone(document, model, environment))
            )
            namespace = document["metadata"].get("namespace", "")
    return _listed(fmt, files, existing, model, namespace)


# -- shared ---------------------------------------------------------------------


def _supported(fmt: GitFormat | str) -> None:
    why = unsupported(fmt)
    if why is not None:
        raise FormatError(why)
    if fmt not in (GitFormat.KUSTOMIZE, GitFormat.MANIFEST):
        raise FormatError(f"unknown GitOps format {fmt!r}; use kustomize or manifest")


def _path(model: str, part: str) -> str:
    return f"{traffic_dir(model)}/{part}"


def _documents(existing: Mapping[str, str | None], path: str) -> list[dict[str, Any]]:
    text = existing.get(path)
    if text is None:
        return []
    if not is_generated(text):
        raise FormatError(
            f"{path} was not written by Modelgate; Modelgate owns {traffic_dir('<model>')}/ "
            "during a judged rollout: move the file"
        )
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


def _dump_all(documents: list[dict[str, Any]]) -> str:
    return "---\n".join(dump_yaml(mark_generated(d)) for d in documents)


def _listed(
    fmt: GitFormat | str,
    files: Files,
    existing: Mapping[str, str | None],
    model: str,
    namespace: str,
) -> Files:
    """``files`` with the kustomizations that list what will be there
    (format kustomize; plain manifests are applied as a directory)."""
    if fmt != GitFormat.KUSTOMIZE:
        return files
    folder = traffic_dir(model)
    present = [
        part
        for part in PARTS
        if (
            files[_path(model, part)]
            if _path(model, part) in files
            else existing.get(_path(model, part))
        )
        is not None
    ]
    own = f"{folder}/{KUSTOMIZATION}"
    parent = load_mapping(KUSTOMIZATION, existing.get(KUSTOMIZATION)) or {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
    }
    listed = [r for r in parent.get("resources") or [] if r not in (folder, f"{folder}/")]
    if present:
        kustomization = load_mapping(own, existing.get(own)) or {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
        }
        if namespace:
            kustomization["namespace"] = namespace
        kustomization["resources"] = present
        files[own] = dump_yaml(kustomization)
        listed = sorted([*listed, folder])
    else:
        files[own] = None
    if listed != list(parent.get("resources") or []):
        parent["resources"] = listed
        files[KUSTOMIZATION] = dump_yaml(parent)
    return files
