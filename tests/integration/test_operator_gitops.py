"""The operator promoting production by Git commits, on the emulator.

Staging is Direct; production is GitOps into a real bare repository. A GitOps
agent played by the test (tests/support/gitops_agent.py) builds the committed
kustomization with kubectl and applies it; the operator sees the rollout only
through what the agent applied.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tests.integration.test_operator import BUCKET, SAMPLE, _documents, conditions, release_document
from tests.support.cluster import (
    SERVER_IMAGE,
    Controllers,
    api_client,
    create,
    get,
    operator_environment,
    patched_environ,
    running_operator,
    seed_sample_data,
    start_controllers,
    wait_for,
)
from tests.support.emulator import ARGO_APPLICATION, RunningEmulator, running_emulator
from tests.support.gitops_agent import GitOpsAgent, bare_repository, git
from tests.support.s3server import running_s3

NAMESPACE = "team-gitops"
PATH = "clusters/prod/credit-risk-team"
ARGO_NAMESPACE = "team-argo"
ARGO_PATH = "clusters/prod/argo-team"
APPLICATION = "credit-risk-prod"


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningEmulator, client.ApiClient, Controllers, GitOpsAgent, GitOpsAgent]]:
    tmp = tmp_path_factory.mktemp("gitops")
    remote = bare_repository(tmp)
    settings = {"MODELGATE_GIT_CACHE": str(tmp / "cache"), "MODELGATE_GIT_FETCH_SECONDS": "0"}
    with running_s3(tmp / "moto.log") as s3:
        seed_sample_data(s3, BUCKET, SAMPLE / "data")
        with (
            running_emulator(ARGO_APPLICATION) as emulator,
            operator_environment(emulator, s3, BUCKET),
            patched_environ(settings),
        ):
            api = api_client(emulator)
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                "argoproj.io",
                "v1alpha1",
                "argocd",
                "applications",
                {
                    "apiVersion": "argoproj.io/v1alpha1",
                    "kind": "Application",
                    "metadata": {"name": APPLICATION, "namespace": "argocd"},
                    "spec": {"source": {"repoURL": f"file://{remote}", "path": ARGO_PATH}},
                },
            )
            controllers = start_controllers(api, s3)
            agent = GitOpsAgent(api, remote, PATH, tmp / "agent").start()
            argo = GitOpsAgent(
                api,
                remote,
                ARGO_PATH,
                tmp / "argo",
                application=("argocd", APPLICATION),
                healthy=False,
            ).start()
            try:
                with running_operator():
                    _environments(api, NAMESPACE, "ml-prod-git", PATH, remote)
                    _environments(
                        api,
                        ARGO_NAMESPACE,
                        "ml-prod-argo",
                        ARGO_PATH,
                        remote,
                        argo={"name": APPLICATION, "namespace": "argocd"},
                    )
                    yield emulator, api, controllers, agent, argo
            finally:
                agent.stop()
                argo.stop()
                controllers.stop()
                assert controllers.errors == []
                assert agent.errors == []
                assert argo.errors == []


def _environments(
    api: client.ApiClient,
    namespace: str,
    target: str,
    path: str,
    remote: Path,
    argo: dict[str, str] | None = None,
) -> None:
    """The sample's gate and environments; production delivered by GitOps."""
    for document in _documents("gate.yaml") + _documents("environments.yaml"):
        spec = document.get("spec", {})
        if document["metadata"]["name"] == "staging":
            spec.pop("verification", None)  # only production's can fail here
        if document["metadata"]["name"] == "production":
            spec["namespace"] = target
            spec["delivery"] = {
                "mode": "GitOps",
                "git": {"repository": f"file://{remote}", "path": path},
            }
            if argo is not None:
                spec["delivery"]["argoCD"] = argo
            spec["verification"] = {"image": "verify:1", "command": ["verify"]}
        create(api, document, namespace)


def _phase(api: client.ApiClient, name: str) -> str | None:
    return (get(api, "ModelRelease", NAMESPACE, name).get("status") or {}).get("phase")


def _log(remote: Path, path: str = PATH) -> list[tuple[str, str]]:
    """(sha, message) of the commits on main that touch ``path``, newest first
    (both tests' environments share the remote, in either order)."""
    out = git(remote, "log", "--format=%H%x1f%B%x1e", "main", "--", path)
    entries = [e.strip().split("\x1f", 1) for e in out.split("\x1e") if e.strip()]
    return [(sha, message) for sha, message in entries]


def _production(status: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in status["environments"] if e["name"] == "production")


def test_promotion_is_a_commit_and_a_failed_verification_reverts_it(
    world: tuple[RunningEmulator, client.ApiClient, Controllers, GitOpsAgent, GitOpsAgent],
) -> None:
    emulator, api, controllers, agent, _ = world
    remote = agent.repository
    good = release_document(**{"metadata.name": "credit-risk-good"})
    create(api, good, NAMESPACE)
    wait_for(
        lambda: _phase(api, "credit-risk-good") == "Released",
        300,
        "Released through GitOps",
        lambda: get(api, "ModelRelease", NAMESPACE, "credit-risk-good").get("status"),
    )
    [(promoted, message), *_] = _log(remote)
    assert message.splitlines()[0] == "Promote credit-risk 1.4.0 to production"
    assert f"Modelgate-Release: {NAMESPACE}/credit-risk-good" in message
    assert "Modelgate-Gate: credit-gate Passed" in message
    status = get(api, "ModelRelease", NAMESPACE, "credit-risk-good")["status"]
    assert _production(status)["revision"] == promoted
    assert _production(status)["phase"] == "Deployed"
    assert (
        conditions(get(api, "ModelRelease", NAMESPACE, "credit-risk-good"))["Verified"]["status"]
        == "True"
    )
    # The operator wrote nothing to ml-prod-git itself: the agent applied the commit.
    assert promoted in agent.synced
    [deployment] = emulator.objects("deployments", "ml-prod-git")
    assert deployment["metadata"]["annotations"]["modelgate.dev/generated"] == "true"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == SERVER_IMAGE  # the good release, served by the reference server
    # Resyncs and repeated reconciles added no second commit.
    promotions = [m for _, m in _log(remote) if "Modelgate-Promotion:" in m]
    assert len(promotions) == 1
    history = get(api, "Environment", NAMESPACE, "production")["status"]["history"]
    assert history[0]["revision"] == promoted

    controllers.fail_verifications.add("credit-risk-bad")
    bad = release_document(
        **{
            "metadata.name": "credit-risk-bad",
            "spec.model.version": "1.6.0",
            "spec.image": "registry.example.com/credit-risk@sha256:" + "e" * 64,
        }
    )
    create(api, bad, NAMESPACE)
    wait_for(
        lambda: _phase(api, "credit-risk-bad") == "RolledBack",
        300,
        "RolledBack",
        lambda: get(api, "ModelRelease", NAMESPACE, "credit-risk-bad").get("status"),
    )
    [(reverted, revert_message), (bad_commit, bad_message), *_] = _log(remote)
    assert f"Modelgate-Release: {NAMESPACE}/credit-risk-bad" in bad_message
    assert revert_message.splitlines()[0] == "Roll back credit-risk in production"
    assert f"This reverts commit {bad_commit}." in revert_message
    # Why, in the commit and in the environment's history.
    assert f"Release {NAMESPACE}/credit-risk-bad: verification failed (" in revert_message
    # Git matches what runs: the revert restored the good release's files...
    assert git(remote, "diff", "--stat", promoted, reverted).strip() == ""
    # ...and the agent put the good image back in the cluster.
    wait_for(lambda: reverted in agent.synced, 30, "the agent to apply the revert")
    [deployment] = emulator.objects("deployments", "ml-prod-git")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == SERVER_IMAGE  # the good release, served by the reference server
    history = get(api, "Environment", NAMESPACE, "production")["status"]["history"]
    assert history[0]["rolledBack"] is True
    assert history[0]["revision"] == reverted
    assert history[0]["release"] == "credit-risk-good"
    assert history[0]["reason"].startswith("verification failed (")
    # The good release is live again in production, by Git's record.
    wait_for(
        lambda: (
            _production(get(api, "ModelRelease", NAMESPACE, "credit-risk-good")["status"])["phase"]
            == "Deployed"
        ),
        30,
        "credit-risk-good live again",
    )
    assert len([m for _, m in _log(remote) if "Modelgate-Promotion:" in m]) == 2


def test_argo_cd_sync_and_health_decide_when_production_is_live(
    world: tuple[RunningEmulator, client.ApiClient, Controllers, GitOpsAgent, GitOpsAgent],
) -> None:
    _, api, _, _, argo = world
    name = "credit-risk-argo"
    create(api, release_document(**{"metadata.name": name}), ARGO_NAMESPACE)

    def production() -> dict[str, Any]:
        status = get(api, "ModelRelease", ARGO_NAMESPACE, name).get("status") or {}
        entries = [e for e in status.get("environments", []) if e["name"] == "production"]
        return entries[0] if entries else {}

    # Committed and applied, but Argo CD reports the app still Progressing.
    wait_for(
        lambda: "is Synced/Progressing" in (production().get("message") or ""),
        300,
        "production waiting on Argo CD health",
        production,
    )
    assert production()["phase"] == "Deploying"
    assert (
        production()["message"] == f"Argo CD Application argocd/{APPLICATION} is Synced/Progressing"
    )
    assert production()["revision"] in argo.synced
    argo.healthy = True
    argo.report()
    wait_for(
        lambda: (
            (get(api, "ModelRelease", ARGO_NAMESPACE, name).get("status") or {}).get("phase")
            == "Released"
        ),
        180,
        "Released once Argo CD reports Healthy",
        production,
    )
