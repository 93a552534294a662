"""What a judged rollout commits in GitOps mode, per format (pure; real Git,
kustomize and an agent applying it to the API server are in realcluster)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import yaml

from modelgate.backends import gitformats_traffic as traffic
from modelgate.backends.challenger_manifests import ARM_LABEL, MIRROR, TRAFFIC, WEIGHT
from modelgate.backends.gitformats import FormatError, render
from modelgate.promotion.plan import SetTraffic
from modelgate.settings import OperatorSettings
from tests.unit.test_gitformats import DIGEST, NOW, action

SETTINGS = OperatorSettings(server_image=f"registry.example.com/modelgate@{DIGEST}")
GATEWAY = ("public", "gateways", None)
FOLDER = "model-traffic"


def challenger(release: str = "team/model-2") -> Any:
    return dataclasses.replace(
        action(f"registry.example.com/team/model@sha256:{'e' * 64}"),
        release=release,
        challenger=True,
    )


def split(weight: int, **changes: Any) -> SetTraffic:
    return dataclasses.replace(
        SetTraffic(
            environment="production", namespace="ml-prod", model="model",
            champion="team/model-1", challenger="team/model-2", weight=weight,
            gateway=GATEWAY, hostnames=("model.example.com",),
        ),
        **changes,
    )  # fmt: skip


def applied(existing: dict[str, str | None], files: dict[str, str | None]) -> dict:
    """``existing`` after ``files`` are written (None deletes)."""
    merged = {**existing, **files}
    return {p: t for p, t in merged.items() if t is not None}


def documents(text: str | None) -> dict[str, dict[str, Any]]:
    assert text is not None
    return {d["kind"]: d for d in yaml.safe_load_all(text) if d}


def backends(files: dict[str, str | None]) -> list[tuple[str, int]]:
    route = documents(files[f"{FOLDER}/httproute.yaml"])["HTTPRoute"]
    return [(b["name"], b["weight"]) for b in route["spec"]["rules"][0]["backendRefs"]]


def test_a_challenger_its_splits_and_its_removal_in_a_directory_of_their_own() -> None:
    live = render("kustomize", action(), {}, SETTINGS, NOW)
    repository = applied({}, live)
    files = traffic.render_challenger("kustomize", challenger(), repository, SETTINGS, NOW)
    repository = applied(repository, files)
    # Not in the model's kustomization: its images entry would give the
    # challenger the live model's image.
    assert "model/kustomization.yaml" not in files
    objects = documents(repository[f"{FOLDER}/challenger.yaml"])
    assert sorted(objects) == ["ConfigMap", "Deployment", "Service"]
    deployment = objects["Deployment"]
    assert deployment["metadata"]["name"] == "model-production-challenger"
    assert deployment["spec"]["template"]["metadata"]["labels"][ARM_LABEL] == "challenger"
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"].endswith("e" * 64)
    assert deployment["metadata"]["annotations"][WEIGHT] == "0"
    assert yaml.safe_load(repository["kustomization.yaml"])["resources"] == ["model", FOLDER]
    assert yaml.safe_load(repository[f"{FOLDER}/kustomization.yaml"]) == {
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "namespace": "ml-prod", "resources": ["challenger.yaml"],
    }  # fmt: skip

    # A weighted split: the route's weights, and the weight on the Deployment.
    files = traffic.render_split("kustomize", split(20), repository, SETTINGS, "20% by route")
    repository = applied(repository, files)
    assert backends(repository) == [
        ("model-production", 80), ("model-production-challenger", 20),
    ]  # fmt: skip
    annotations = documents(repository[f"{FOLDER}/challenger.yaml"])["Deployment"]["metadata"][
        "annotations"
    ]
    assert (annotations[WEIGHT], annotations[MIRROR], annotations[TRAFFIC]) == (
        "20", "false", "20% by route",
    )  # fmt: skip
    assert yaml.safe_load(repository[f"{FOLDER}/kustomization.yaml"])["resources"] == [
        "httproute.yaml", "challenger.yaml",
    ]  # fmt: skip

    # Committed again with a new config: the split it has stays.
    again = dataclasses.replace(challenger(), config={"A": "3"}, config_hash="k" * 64)
    files = traffic.render_challenger("kustomize", again, repository, SETTINGS, NOW)
    kept = documents(files[f"{FOLDER}/challenger.yaml"])["Deployment"]["metadata"]["annotations"]
    assert kept[WEIGHT] == "20"
    assert f"{FOLDER}/httproute.yaml" not in files

    # Removed: the route sends everyone to the live model; the folder keeps it.
    files = traffic.render_removal("kustomize", "model", "production", repository)
    repository = applied(repository, files)
    assert f"{FOLDER}/challenger.yaml" not in repository
    assert backends(repository) == [("model-production", 100)]
    route = documents(repository[f"{FOLDER}/httproute.yaml"])["HTTPRoute"]
    assert route["spec"]["hostnames"] == ["model.example.com"]
    assert route["spec"]["parentRefs"][0]["name"] == "public"
    assert yaml.safe_load(repository[f"{FOLDER}/kustomization.yaml"])["resources"] == [
        "httproute.yaml"
    ]


def test_a_sticky_split_starts_the_router_then_routes_everyone_to_it() -> None:
    repository = applied({}, render("manifest", action(), {}, SETTINGS, NOW))
    repository = applied(
        repository, traffic.render_challenger("manifest", challenger(), repository, SETTINGS, NOW)
    )
    sticky = split(50, sticky_header="x-user-id")
    files = traffic.render_router("manifest", sticky, repository, SETTINGS)
    # Plain manifests: no kustomization is written; the route is untouched.
    assert sorted(files) == [f"{FOLDER}/router.yaml"]
    router = documents(files[f"{FOLDER}/router.yaml"])["Deployment"]
    args = router["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--sticky-header") + 1] == "x-user-id"
    assert args[args.index("--weight") + 1] == "50"
    repository = applied(repository, files)
    repository = applied(
        repository, traffic.render_split("manifest", sticky, repository, SETTINGS, "router")
    )
    assert backends(repository) == [("model-production-router", 100)]
    # The canary's next split needs no router: it goes with that commit.
    files = traffic.render_split("manifest", split(50), repository, SETTINGS, "route")
    assert files[f"{FOLDER}/router.yaml"] is None
    assert backends(applied(repository, files))[1] == ("model-production-challenger", 50)


def test_a_challenger_of_another_release_replaces_the_one_there_and_its_split() -> None:
    repository = applied(
        {}, traffic.render_challenger("kustomize", challenger(), {}, SETTINGS, NOW)
    )
    repository = applied(
        repository,
        traffic.render_split("kustomize", split(0, mirror=True), repository, SETTINGS, "mirror"),
    )
    assert f"{FOLDER}/router.yaml" in repository
    files = traffic.render_challenger(
        "kustomize", challenger("team/model-3"), repository, SETTINGS, NOW
    )
    repository = applied(repository, files)
    assert traffic.committed_release(repository, "model") == "team/model-3"
    assert f"{FOLDER}/router.yaml" not in repository
    assert backends(repository) == [("model-production", 100)]


def test_what_cannot_be_committed_is_refused_naming_the_fix() -> None:
    with pytest.raises(FormatError, match=r"helm-values .* use format kustomize or manifest"):
        traffic.render_challenger("helm-values", challenger(), {}, SETTINGS, NOW)
    with pytest.raises(FormatError, match=r"set policy.rollout.traffic.gateway"):
        traffic.render_split("kustomize", split(20, gateway=None), {}, SETTINGS, "x")
    with pytest.raises(FormatError, match=r"holds no challenger Deployment"):
        traffic.render_split("kustomize", split(20), {}, SETTINGS, "x")
    # A file of the team's in Modelgate's folder is never overwritten.
    theirs = {f"{FOLDER}/challenger.yaml": "kind: Deployment\nmetadata: {name: theirs}\n"}
    with pytest.raises(FormatError, match=r"was not written by Modelgate"):
        traffic.render_challenger("kustomize", challenger(), theirs, SETTINGS, NOW)
    # Nothing to remove: only the listing (unchanged) is there to write.
    files = traffic.render_removal("manifest", "model", "production", {})
    assert files == {f"{FOLDER}/challenger.yaml": None, f"{FOLDER}/router.yaml": None}
