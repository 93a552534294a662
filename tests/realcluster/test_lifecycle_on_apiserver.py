"""Release lifecycles on the real control plane, the operator authenticated as
the chart's ServiceAccount: the real Job controller completes training and
verification Jobs the test node runs, the real Deployment controller rolls the
model servers out, and every request the operator makes is authorised by the
chart's RBAC (a refused one fails the test)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from kubernetes import client

from modelgate.backends.s3 import S3Settings, make_client
from tests.realcluster.conftest import BUCKET, Team, conditions, documents, grants
from tests.support.cluster import wait_for
from tests.support.installation import (
    SERVER_IMAGE,
    Installation,
    OperatorProcess,
    pruned_writes,
)
from tests.support.node import TestNode
from tests.support.s3server import CREDENTIALS, S3Server


def _deployment(team: Team, environment: str) -> client.V1Deployment:
    apps = client.AppsV1Api(team.api)
    return apps.read_namespaced_deployment(f"credit-risk-{environment}", team.targets[environment])


def _jobs(team: Team, namespace: str) -> list[client.V1Job]:
    return list(client.BatchV1Api(team.api).list_namespaced_job(namespace).items)


def _job_state(job: client.V1Job) -> str:
    for condition in job.status.conditions or []:
        if condition.status == "True" and condition.type in ("Complete", "Failed"):
            return str(condition.type)
    return "Running"


# What every release that reaches production does.
@grants(
    ("batch", "jobs", "create"),
    ("modelgate.dev", "modelreleases", "patch"),
    ("modelgate.dev", "modelreleases/status", "patch"),
    ("modelgate.dev", "environments", "get"),
    ("modelgate.dev", "environments", "patch"),
    ("modelgate.dev", "environments/status", "patch"),
    ("modelgate.dev", "qualitygates", "patch"),
    ("modelgate.dev", "qualitygates/status", "patch"),
    ("apps", "deployments", "get"),
    ("apps", "deployments", "create"),
    ("", "configmaps", "create"),
    ("", "services", "create"),
    ("", "events", "create"),
)
def test_release_trains_is_gated_and_reaches_production_verified(
    team: Team,
    test_node: TestNode,
    installation: Installation,
    operator: OperatorProcess,
    s3: S3Server,
) -> None:
    since = len(installation.requests())
    created = team.create(team.release_document())
    release = team.wait_phase("credit-risk-1-4-0", "Released")
    status = release["status"]
    assert {k: v["status"] for k, v in conditions(release).items()} == {
        "Trained": "True",
        "GatePassed": "True",
        "ConfigValid": "True",
        "Deployed": "True",
        "Verified": "True",
        "Ready": "True",
    }
    assert status["observedGeneration"] == created["metadata"]["generation"]
    assert status["gate"]["outcome"] == "Passed"
    artifacts = {a["name"]: a for a in status["artifacts"]}
    assert all(a["uri"].startswith(f"s3://{BUCKET}/modelgate/sha256/") for a in artifacts.values())
    # The training Job, completed by the real Job controller, owned by the release.
    component = "app.kubernetes.io/component"
    by_kind = {}
    for found in _jobs(team, team.namespace):
        by_kind.setdefault(found.metadata.labels[component], []).append(found)
    assert sorted(by_kind) == ["evaluation", "training"]
    [job] = by_kind["training"]
    # The gate was evaluated by a Job of its own, not in the operator.
    [evaluation] = by_kind["evaluation"]
    assert _job_state(evaluation) == "Complete"
    assert evaluation.metadata.owner_references[0].uid == created["metadata"]["uid"]
    assert evaluation.spec.template.spec.containers[0].command == [
        "python",
        "-m",
        "modelgate.evaluate",
    ]
    assert job.metadata.name == status["training"]["jobName"]
    assert _job_state(job) == "Complete"
    assert job.metadata.owner_references[0].uid == created["metadata"]["uid"]
    assert CREDENTIALS["AWS_SECRET_ACCESS_KEY"] not in str(job.to_dict())
    for environment in ("staging", "production"):
        deployment = _deployment(team, environment)
        # Rolled out by the real Deployment and ReplicaSet controllers: the
        # pod ran on the test node and passed its readiness probe.
        assert deployment.status.available_replicas == 1
        assert deployment.status.observed_generation == deployment.metadata.generation
        assert deployment.spec.template.spec.containers[0].image == SERVER_IMAGE
        # The built-in verification Job reached the server by its Service name.
        verifications = [
            j
            for j in _jobs(team, team.targets[environment])
            if j.metadata.labels.get("app.kubernetes.io/component") == "verification"
        ]
        assert [_job_state(j) for j in verifications] == ["Complete"]
        environment_status = team.environment(environment)["status"]
        assert environment_status["liveRelease"] == "credit-risk-1-4-0"
        assert conditions(team.environment(environment))["Ready"]["status"] == "True"
    served = [p for p in test_node.started if p.startswith(team.targets["production"] + "/")]
    assert any("credit-risk-production" in p for p in served)
    assert any("verify" in p for p in served)
    events = client.CoreV1Api(team.api).list_namespaced_event(team.namespace).items
    reasons = {e.reason for e in events}
    assert {"TrainingStarted", "TrainingSucceeded", "Deployed", "PhaseReleased"} <= reasons
    # What the operator wrote survived the server's pruning: every field of
    # every status and metadata patch is in the object the server stored.
    requests = installation.requests()[since:]
    assert pruned_writes(requests) == []
    annotations = team.get("ModelRelease", "credit-risk-1-4-0")["metadata"]["annotations"]
    assert "modelgate.dev/last-handled-configuration" in annotations
    # Canary: the store's keys are in the operator's environment and in the
    # pods' Secret; they are in no status, Event, log line or stored report.
    published = [json.dumps(team.get("ModelRelease", "credit-risk-1-4-0"))]
    published += [json.dumps(team.environment(e)) for e in ("staging", "production")]
    published += [str(e.to_dict()) for e in events]
    published.append(operator.log.read_text())
    store = make_client(S3Settings(bucket=BUCKET, endpoint_url=s3.endpoint, path_style=True))
    for name in ("gate-report", "gate-report-html", "metadata"):
        key = artifacts[name]["uri"].split(f"s3://{BUCKET}/", 1)[1]
        published.append(store.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode())
    text = "\n".join(published)
    for canary in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID"):
        assert CREDENTIALS[canary] not in text


def test_a_sharded_evaluation_is_an_indexed_job_then_a_merge(team: Team) -> None:
    """spec.evaluation.parallelism: 2: the real Job controller runs an Indexed
    Job whose pods (given JOB_COMPLETION_INDEX by it) each store a shard's
    partial, then the merge Job computes the gate on every row."""
    document = team.release_document()
    document["spec"]["evaluation"] = {"parallelism": 2}
    created = team.create(document)

    def status() -> dict[str, Any]:
        return dict(team.get("ModelRelease", "credit-risk-1-4-0").get("status") or {})

    wait_for(lambda: (status().get("gate") or {}).get("outcome"), 300, "the gate", status)
    release = team.get("ModelRelease", "credit-risk-1-4-0")
    gate = release["status"]["gate"]
    assert gate["outcome"] == "Passed", gate
    auc = next(c for c in gate["checks"] if c["name"] == "auc")
    assert auc["sampleSize"] == 2000  # the sample's evaluation rows, all of them
    evaluations = {
        j.metadata.name: j
        for j in _jobs(team, team.namespace)
        if j.metadata.labels["app.kubernetes.io/component"] == "evaluation"
    }
    [shards] = [j for n, j in evaluations.items() if "-evs-" in n]
    [merge] = [j for n, j in evaluations.items() if "-eval-" in n]
    assert shards.spec.completion_mode == "Indexed"
    assert (_job_state(shards), shards.status.succeeded) == ("Complete", 2)
    assert shards.status.completed_indexes == "0,1"
    assert _job_state(merge) == "Complete"
    for job in (shards, merge):
        assert job.metadata.owner_references[0].uid == created["metadata"]["uid"]


def test_the_backtest_leak_is_stopped_before_production(team: Team) -> None:
    team.create(team.release_document("release-backtest-leak.yaml"))
    name = documents("release-backtest-leak.yaml")[0]["metadata"]["name"]
    release = team.wait_phase(name, "Blocked")
    config = conditions(release)["ConfigValid"]
    assert config["status"] == "False"
    assert "FEATURE_STORE_URL" in config["message"]
    assert "backtest" in config["message"]
    assert conditions(release)["Ready"]["status"] == "False"
    apps = client.AppsV1Api(team.api)
    assert apps.list_namespaced_deployment(team.targets["production"]).items == []
    assert len(apps.list_namespaced_deployment(team.targets["staging"]).items) == 1


def test_a_failing_gate_stops_the_release_naming_the_check(new_team: Callable[..., Team]) -> None:
    gate = copy.deepcopy(documents("gate.yaml")[0])
    gate["spec"]["checks"][0]["metric"]["min"] = 0.999  # auc: no model here reaches it
    team = new_team(gate=gate)
    team.create(team.release_document())
    release = team.wait_phase("credit-risk-1-4-0", "GateFailed")
    passed = conditions(release)["GatePassed"]
    assert passed["status"] == "False"
    assert "auc" in passed["message"]
    apps = client.AppsV1Api(team.api)
    for target in team.targets.values():
        assert apps.list_namespaced_deployment(target).items == []


# Deploying over a live release, then putting it back.
@grants(
    ("apps", "deployments", "patch"),
    ("", "configmaps", "get"),
    ("", "configmaps", "patch"),
    ("", "services", "patch"),
)
def test_a_failed_verification_rolls_production_back(new_team: Callable[..., Team]) -> None:
    team = new_team()
    team.create(team.release_document())
    team.wait_phase("credit-risk-1-4-0", "Released")
    first = _deployment(team, "production")
    first_config = first.metadata.annotations["modelgate.dev/config-hash"]
    # Production now asks for answers faster than any server gives them: the
    # next release's verification fails there, for real.
    production = team.environment("production")
    verification = production["spec"]["verification"]
    verification["servedPredictions"]["maxLatency"] = "1ms"
    team.patch("Environment", "production", {"spec": {"verification": verification}})
    second = team.release_document(name="credit-risk-1-5-0")
    second["spec"]["model"]["version"] = "1.5.0"
    second["spec"]["training"]["params"]["n_estimators"] = 50
    team.create(second)
    release = team.wait_phase("credit-risk-1-5-0", "RolledBack")
    verified = conditions(release)["Verified"]
    assert verified["status"] == "False"
    assert "latency" in verified["message"]
    after = _deployment(team, "production")
    # The first release is back: its config, and the Deployment serves it.
    assert after.metadata.annotations["modelgate.dev/release"].endswith("/credit-risk-1-4-0")
    assert after.metadata.annotations["modelgate.dev/config-hash"] == first_config
    wait_for(
        lambda: _deployment(team, "production").status.available_replicas == 1,
        120,
        "the rolled-back Deployment to be available",
    )
    history = team.environment("production")["status"]["history"]
    [rollback] = [entry for entry in history if entry.get("rolledBack")]
    assert rollback["reason"].startswith("verification failed (")
    assert "latency" in rollback["reason"]
    assert team.environment("production")["status"]["liveRelease"] == "credit-risk-1-4-0"


# Nothing was live before: what the release brought goes.
@grants(
    ("apps", "deployments", "delete"),
    ("", "configmaps", "delete"),
    ("", "services", "delete"),
)
def test_a_failed_first_verification_removes_what_it_deployed(
    new_team: Callable[..., Team],
) -> None:
    environments = copy.deepcopy(documents("environments.yaml"))
    staging = next(e for e in environments if e["metadata"]["name"] == "staging")
    staging["spec"]["verification"]["servedPredictions"]["maxLatency"] = "1ms"
    team = new_team(environments=environments)
    team.create(team.release_document())
    release = team.wait_phase("credit-risk-1-4-0", "RolledBack")
    assert "latency" in conditions(release)["Verified"]["message"]
    # Nothing was live before: the rollback removed the Deployment, its
    # Service and ConfigMap (and the collector the ReplicaSet and pod).
    target = team.targets["staging"]
    api = team.api
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    wait_for(
        lambda: (
            not apps.list_namespaced_deployment(target).items
            and not core.list_namespaced_service(target).items
            and not [
                c
                for c in core.list_namespaced_config_map(target).items
                if c.metadata.name != "kube-root-ca.crt"
            ]
        ),
        60,
        "the staging objects to be removed",
    )
    wait_for(
        lambda: (
            not [
                p for p in core.list_namespaced_pod(target).items if "verify" not in p.metadata.name
            ]
        ),
        60,
        "the model server pod to be collected",
    )
    assert apps.list_namespaced_deployment(team.targets["production"]).items == []
