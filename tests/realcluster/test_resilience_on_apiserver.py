"""Deletion, crashes and restarts on the real control plane: the finalizer
runs (ending a challenger's split) and the real garbage collector removes
what the release owned; the
operator SIGKILLed mid-promotion and the API server restarted mid-release
still end Released, with every Job and Deployment created once (counted in the
API server's audit log) and every Deployment rolled out once."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from typing import Any

from kubernetes import client

from modelgate.backends.kube import KubeClients, KubeDeployer
from modelgate.backends.kube_challengers import KubeChallengers
from modelgate.promotion.plan import Deploy, SetTraffic
from modelgate.settings import OperatorSettings
from tests.realcluster.conftest import Team, grants
from tests.support.cluster import wait_for
from tests.support.controlplane import ControlPlane
from tests.support.installation import Installation, OperatorProcess

RELEASE = "credit-risk-1-4-0"


def _created(events: list[dict[str, Any]], resource: str) -> Counter[str]:
    """Successful creates of ``resource`` by name (201 from the server)."""
    created: Counter[str] = Counter()
    for event in events:
        ref = event.get("objectRef") or {}
        status = (event.get("responseStatus") or {}).get("code")
        if event.get("verb") == "create" and ref.get("resource") == resource and status == 201:
            created[f"{ref.get('namespace')}/{ref.get('name')}"] += 1
    return created


def _assert_each_created_once(installation: Installation, since: int, team: Team) -> None:
    events = installation.requests()[since:]
    jobs, deployments = _created(events, "jobs"), _created(events, "deployments")
    ours = (team.namespace, *team.targets.values())
    jobs = Counter({k: v for k, v in jobs.items() if k.split("/")[0] in ours})
    deployments = Counter({k: v for k, v in deployments.items() if k.split("/")[0] in ours})
    assert jobs
    assert set(jobs.values()) == {1}, jobs
    assert sorted(deployments) == sorted(
        f"{team.targets[e]}/credit-risk-{e}" for e in ("staging", "production")
    )
    assert set(deployments.values()) == {1}, deployments
    apps = client.AppsV1Api(team.api)
    for environment in ("staging", "production"):
        deployment = apps.read_namespaced_deployment(
            f"credit-risk-{environment}", team.targets[environment]
        )
        # Rolled out once: no second spec write after a restart.
        assert deployment.metadata.generation == 1, environment


def _challenger_beside_production(team: Team) -> str:
    """A challenger of the release beside production's live model, its
    traffic split by replicas, as the operator leaves it mid-judgement;
    returns the live model's Service's selector it widened."""
    namespace = team.targets["production"]
    apps, core = client.AppsV1Api(team.api), client.CoreV1Api(team.api)
    live = apps.read_namespaced_deployment("credit-risk-production", namespace)
    [container] = live.spec.template.spec.containers
    config = core.read_namespaced_config_map("credit-risk-production-config", namespace)
    challengers = KubeChallengers(KubeDeployer(KubeClients(team.api), OperatorSettings()))
    challengers.deploy(
        Deploy(
            environment="production", namespace=namespace,
            release=f"{team.namespace}/{RELEASE}", model="credit-risk", image=container.image,
            config=dict(config.data), config_hash="c" * 64, predictions=None,
            # Its pod only has to be there (it never gets ready).
            command=("python", "-c", "import time; time.sleep(600)"), challenger=True,
        ),
        datetime.now(UTC),
    )  # fmt: skip
    challengers.set_traffic(
        SetTraffic(
            environment="production", namespace=namespace, model="credit-risk",
            champion="", challenger=f"{team.namespace}/{RELEASE}", weight=50,
        )
    )  # fmt: skip
    return str(core.read_namespaced_service("credit-risk-production", namespace).spec.selector)


# The finalizer deletes the release's Jobs, and its challenger.
@grants(
    ("batch", "jobs", "list"),
    ("batch", "jobs", "delete"),
    ("apps", "deployments", "delete"),
    ("", "services", "delete"),
    ("", "configmaps", "delete"),
)
def test_deleting_a_release_runs_the_finalizer_and_the_collector_removes_its_jobs(
    team: Team,
) -> None:
    created = team.create(team.release_document())
    team.wait_phase(RELEASE, "Released")
    # Deleted mid-judgement: nothing would be left to end its split.
    shared = _challenger_beside_production(team)
    assert "modelgate.dev/environment" in shared
    batch, core = client.BatchV1Api(team.api), client.CoreV1Api(team.api)
    jobs = batch.list_namespaced_job(team.namespace).items
    kinds = sorted(j.metadata.labels["app.kubernetes.io/component"] for j in jobs)
    assert kinds == ["evaluation", "training"]
    for job in jobs:
        assert job.metadata.owner_references[0].uid == created["metadata"]["uid"]
        selector = f"job-name={job.metadata.name}"
        assert core.list_namespaced_pod(team.namespace, label_selector=selector)
    team.delete_and_wait_gone("ModelRelease", RELEASE, "the finalizer to let the release go")
    wait_for(
        lambda: not batch.list_namespaced_job(team.namespace).items,
        60,
        "the training and evaluation Jobs to be deleted",
    )
    wait_for(
        lambda: not core.list_namespaced_pod(team.namespace).items,
        60,
        "their pods to be collected",
        lambda: [p.metadata.name for p in core.list_namespaced_pod(team.namespace).items],
    )
    # Serving stays: deleting a release must not take production down.
    apps = client.AppsV1Api(team.api)
    production = team.targets["production"]
    live = apps.read_namespaced_deployment("credit-risk-production", production)
    assert live.status.available_replicas == 1
    # Its challenger went, and the live model's Service selects its own pods again.
    names = [d.metadata.name for d in apps.list_namespaced_deployment(production).items]
    assert names == ["credit-risk-production"]
    selector = core.read_namespaced_service("credit-risk-production", production).spec.selector
    assert selector == {
        "app.kubernetes.io/instance": "credit-risk-production",
        "modelgate.dev/model": "credit-risk",
    }


# A restarted operator lists and watches all it reads, and rejoins the peering.
@grants(
    ("apiextensions.k8s.io", "customresourcedefinitions", "list"),
    ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ("kopf.dev", "clusterkopfpeerings", "list"),
    ("kopf.dev", "clusterkopfpeerings", "watch"),
    ("kopf.dev", "clusterkopfpeerings", "patch"),
    ("modelgate.dev", "modelreleases", "list"),
    ("modelgate.dev", "modelreleases", "watch"),
    ("modelgate.dev", "qualitygates", "list"),
    ("modelgate.dev", "qualitygates", "watch"),
    ("modelgate.dev", "environments", "list"),
    ("modelgate.dev", "environments", "watch"),
    ("batch", "jobs", "watch"),
    ("apps", "deployments", "list"),
    ("apps", "deployments", "watch"),
)
def test_the_operator_killed_mid_promotion_finishes_once_restarted(
    team: Team, installation: Installation, operator: OperatorProcess
) -> None:
    since = len(installation.requests())
    team.create(team.release_document())
    # Staging is being deployed or verified: production is next.
    wait_for(
        lambda: any(
            e.get("name") == "staging"
            for e in (team.get("ModelRelease", RELEASE).get("status") or {}).get("environments", [])
        ),
        180,
        "the release to reach staging",
        lambda: team.get("ModelRelease", RELEASE).get("status"),
    )
    operator.kill()
    killed_in = team.phase(RELEASE)
    operator.start().wait_ready()
    released = team.wait_phase(RELEASE, "Released")
    assert killed_in in {"Promoting", "Released"}
    assert released["status"]["observedGeneration"] == released["metadata"]["generation"]
    _assert_each_created_once(installation, since, team)


def test_a_restarted_api_server_does_not_make_anything_happen_twice(
    control_plane: ControlPlane, team: Team, installation: Installation
) -> None:
    since = len(installation.requests())
    team.create(team.release_document())
    wait_for(
        lambda: team.phase(RELEASE) in ("Training", "Evaluating", "Promoting"),
        120,
        "the release to be under way",
    )
    control_plane.restart_apiserver()
    released = team.wait_phase(RELEASE, "Released")
    assert released["status"]["observedGeneration"] == released["metadata"]["generation"]
    _assert_each_created_once(installation, since, team)
