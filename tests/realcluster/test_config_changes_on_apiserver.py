"""Edits after a release, on the real control plane: a leaking override is
refused with production untouched, a valid one rolls out staging then
production (verified again). (The API server's refusal of edits of what
defines the model: test_crds_on_apiserver.py.)"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from tests.realcluster.conftest import Team, conditions
from tests.support.cluster import wait_for

NAME = "credit-risk-1-4-0"


def _config_hash(team: Team, environment: str) -> str:
    deployment = client.AppsV1Api(team.api).read_namespaced_deployment(
        f"credit-risk-{environment}", team.targets[environment]
    )
    return str(deployment.metadata.annotations["modelgate.dev/config-hash"])


def _overrides(**by_environment: dict[str, str]) -> dict[str, Any]:
    config = [
        {"environment": env, "values": [{"name": k, "value": v} for k, v in values.items()]}
        for env, values in by_environment.items()
    ]
    return {"spec": {"promotion": {"config": config}}}


def _settled(team: Team, ready: str, reason: str | None = None) -> dict[str, Any]:
    """The release once its status speaks for its current generation with
    Ready as wanted."""

    def check() -> bool:
        release = team.get("ModelRelease", NAME)
        found = conditions(release).get("Ready", {})
        return (
            release.get("status", {}).get("observedGeneration") == release["metadata"]["generation"]
            and found.get("observedGeneration") == release["metadata"]["generation"]
            and found.get("status") == ready
            and (reason is None or found.get("reason") == reason)
        )

    wait_for(check, 240, f"Ready={ready} {reason or ''}", lambda: team.get("ModelRelease", NAME))
    return team.get("ModelRelease", NAME)


def _verifications(team: Team, environment: str) -> list[client.V1Job]:
    jobs = client.BatchV1Api(team.api).list_namespaced_job(team.targets[environment]).items
    return [
        j for j in jobs if j.metadata.labels.get("app.kubernetes.io/component") == "verification"
    ]


def test_config_edits_after_a_release_are_refused_or_rolled_out_in_order(team: Team) -> None:
    team.create(team.release_document())
    team.wait_phase(NAME, "Released")
    production_before = _config_hash(team, "production")
    staging_before = _config_hash(team, "staging")
    history_before = team.environment("production")["status"]["history"]

    team.patch(
        "ModelRelease",
        NAME,
        _overrides(production={"FEATURE_STORE_URL": "https://features.backtest.example.com"}),
    )
    refused = _settled(team, "False", "ConfigRuleViolated")
    found = conditions(refused)
    assert found["ConfigValid"]["status"] == "False"
    assert found["Stalled"]["status"] == "True"
    assert "backtest" in found["Ready"]["message"]
    assert "production keeps running config" in found["Ready"]["message"]
    assert refused["status"]["phase"] == "Blocked"
    assert _config_hash(team, "production") == production_before
    assert team.environment("production")["status"]["history"] == history_before

    team.patch(
        "ModelRelease",
        NAME,
        _overrides(
            staging={"REQUEST_TIMEOUT": "4s"},
            production={
                "FEATURE_STORE_URL": "https://features.prod.example.com",
                "REQUEST_TIMEOUT": "3s",
            },
        ),
    )
    released = _settled(team, "True", "Released")
    assert released["status"]["phase"] == "Released"
    assert {c: v["status"] for c, v in conditions(released).items()} == {
        "Trained": "True",
        "GatePassed": "True",
        "ConfigValid": "True",
        "Deployed": "True",
        "Verified": "True",
        "Ready": "True",
    }
    assert [(e["name"], e["rollout"]) for e in released["status"]["environments"]] == [
        ("staging", 2),
        ("production", 2),
    ]
    assert _config_hash(team, "staging") != staging_before
    assert _config_hash(team, "production") != production_before
    staging_history = team.environment("staging")["status"]["history"]
    production_history = team.environment("production")["status"]["history"]
    assert staging_history[0]["rollout"] == production_history[0]["rollout"] == 2
    assert staging_history[0]["deployedAt"] <= production_history[0]["deployedAt"]
    # Each environment verified its new config with a Job of its own.
    for environment in ("staging", "production"):
        assert len(_verifications(team, environment)) == 2
    wait_for(
        lambda: (
            client.AppsV1Api(team.api)
            .read_namespaced_deployment("credit-risk-production", team.targets["production"])
            .status.available_replicas
            == 1
        ),
        120,
        "the production rollout to be available",
    )

    # A rule added to production that the live config breaks: said on the
    # Environment and the release; nothing is undeployed.
    live = _config_hash(team, "production")
    production = team.environment("production")
    rules = [
        {**rule, "allowed": ["2s"]} if rule["key"] == "REQUEST_TIMEOUT" else rule
        for rule in production["spec"]["configRules"]
    ]
    team.patch("Environment", "production", {"spec": {"configRules": rules}})

    def environment_says_it() -> bool:
        found = conditions(team.environment("production")).get("ConfigValid", {})
        return found.get("status") == "False"

    wait_for(environment_says_it, 120, "the Environment to judge its live config")
    said = conditions(team.environment("production"))
    assert said["ConfigValid"]["reason"] == "LiveConfigViolatesRules"
    assert f"live release {NAME}" in said["ConfigValid"]["message"]
    assert said["Ready"]["status"] == "False"
    assert conditions(team.environment("staging"))["ConfigValid"]["status"] == "True"
    judged = _settled(team, "False", "ConfigRuleViolated")
    assert "REQUEST_TIMEOUT" in conditions(judged)["ConfigValid"]["message"]
    assert _config_hash(team, "production") == live


def test_a_config_change_that_fails_verification_puts_the_last_config_back(team: Team) -> None:
    team.create(team.release_document())
    team.wait_phase(NAME, "Released")
    first = _config_hash(team, "production")
    # Production now asks for answers faster than any server gives them: the
    # change's verification fails there, for real.
    verification = team.environment("production")["spec"]["verification"]
    verification["servedPredictions"]["maxLatency"] = "1ms"
    team.patch("Environment", "production", {"spec": {"verification": verification}})
    team.patch(
        "ModelRelease",
        NAME,
        _overrides(
            production={
                "FEATURE_STORE_URL": "https://features.prod.example.com",
                "REQUEST_TIMEOUT": "3s",
            }
        ),
    )
    release = team.wait_phase(NAME, "RolledBack")
    production = next(e for e in release["status"]["environments"] if e["name"] == "production")
    assert production["phase"] == "RolledBack"
    assert "latency" in production["message"]
    assert f"config {first[:12]} was put back" in production["message"]
    found = conditions(release)
    assert found["Ready"]["status"] == "False"
    assert found["Stalled"]["status"] == "True"
    assert found["Verified"]["status"] == "False"
    # The release's first config is back on the Deployment, served by it.
    apps = client.AppsV1Api(team.api)
    deployment = apps.read_namespaced_deployment(
        "credit-risk-production", team.targets["production"]
    )
    annotations = deployment.metadata.annotations
    assert annotations["modelgate.dev/config-hash"] == first
    assert annotations["modelgate.dev/release"].endswith(f"/{NAME}")
    assert annotations["modelgate.dev/rollout"] == "1"
    config = client.CoreV1Api(team.api).read_namespaced_config_map(
        "credit-risk-production-config", team.targets["production"]
    )
    assert config.data["REQUEST_TIMEOUT"] == "2s"
    history = team.environment("production")["status"]["history"]
    assert history[0]["rolledBack"] is True
    assert history[0]["configHash"] == first
    # Reconciled again, the failed change is never deployed again.
    wait_for(
        lambda: (
            apps.read_namespaced_deployment(
                "credit-risk-production", team.targets["production"]
            ).status.available_replicas
            == 1
        ),
        120,
        "the restored Deployment to be available",
    )
    assert _config_hash(team, "production") == first
