"""A release of a model registered in MLflow, in the pure core: the version
is resolved once from what the registry answered, then an import run (not
a training run) honours the training contract; every registry failure is
classified and said."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from modelgate.api.common import format_time
from modelgate.api.modelrelease import EnvironmentPhase, ModelRelease, ModelReleaseStatus, Phase
from modelgate.backends import manifests
from modelgate.promotion import Observed, Plan, StartTraining, SyncRegistry, reconcile
from modelgate.promotion.conditions import find
from modelgate.promotion.context import Context
from modelgate.promotion.keys import IMPORT_COMMAND
from modelgate.promotion.plan import RegistryObservation
from modelgate.promotion.registry_sync import record_sync, sync_registry
from modelgate.promotion.training import registry_query, training_job
from modelgate.trainer import contract
from tests.unit.test_manifests import SETTINGS
from tests.unit.test_reconcile import NOW, make_env, make_gate, make_release

SERVER = "ghcr.io/modelgate/modelgate:0.1.0"


def registered_release(**mlflow: Any) -> ModelRelease:
    built = make_release(
        training=None,
        serving="ReferenceServer",
        image=None,
        promotion={"environments": ["staging"]},
        mlflow={
            "trackingUri": "http://mlflow.mlops.svc:5000",
            "name": "credit-risk",
            "alias": "candidate",
            "data": {"train": "train.csv", "evaluation": "eval.csv", "target": "y"},
            **mlflow,
        },
    )
    return built.model_copy(update={"metadata": built.metadata.model_copy(update={"uid": "u"})})


def step(release: ModelRelease, answer: RegistryObservation | None, image: str = SERVER) -> Any:
    environments = {"staging": make_env("staging")}
    return reconcile(
        release, make_gate(), environments, Observed(registered=answer), NOW, server_image=image
    )


def test_the_alias_is_asked_for_until_answered_then_never_again() -> None:
    release = registered_release()
    query = registry_query(release)
    assert query is not None
    assert (query.name, query.version, query.alias) == ("credit-risk", None, "candidate")
    waiting = step(release, None)
    trained = find(waiting.status.conditions, "Trained")
    assert trained is not None
    assert (trained.status, trained.reason) == ("Unknown", "ResolvingModel")
    assert waiting.actions == []
    plan = step(release, RegistryObservation(version="7", run_id="r1"))
    assert plan.status.source is not None
    resolved = plan.status.source.mlflow
    assert resolved is not None
    assert (resolved.version, resolved.run_id, resolved.alias) == ("7", "r1", "candidate")
    [start] = plan.actions
    assert isinstance(start, StartTraining)
    assert start.command == IMPORT_COMMAND
    assert start.image == SERVER
    assert start.env[contract.MLFLOW_VERSION] == "7"
    assert start.env[contract.MLFLOW_MODEL] == "credit-risk"
    assert start.env[contract.EVAL_DATA] == "eval.csv"
    assert contract.PARAMS not in start.env
    later = release.model_copy(update={"status": plan.status})
    assert registry_query(later) is None  # resolved once
    assert training_job(later, make_gate()) == start.job_name
    # Whatever the registry would say now, the release carries version 7.
    again = step(later, RegistryObservation(version="8"))
    assert again.status.source == plan.status.source


def test_a_registry_that_is_down_is_asked_again_and_said() -> None:
    plan = step(
        registered_release(), RegistryObservation(error="MLflow did not answer", transient=True)
    )
    trained = find(plan.status.conditions, "Trained")
    assert trained is not None
    assert (trained.status, trained.reason) == ("Unknown", "RegistryUnavailable")
    assert trained.message == "credit-risk@candidate: MLflow did not answer; asking again"
    assert plan.requeue_after == timedelta(seconds=30)
    assert plan.status.phase == Phase.TRAINING


def test_an_unknown_version_stalls_the_release_naming_it() -> None:
    release = registered_release(alias=None, version="99")
    plan = step(release, RegistryObservation(error="MLflow answered 404: not found"))
    trained = find(plan.status.conditions, "Trained")
    stalled = find(plan.status.conditions, "Stalled")
    assert trained is not None
    assert stalled is not None
    assert (trained.status, trained.reason) == ("False", "ModelUnresolved")
    assert trained.message.startswith("credit-risk version 99: MLflow answered 404")
    assert stalled.status == "True"
    assert plan.status.phase == Phase.FAILED
    assert plan.status.source is None


def test_without_a_server_image_there_is_nothing_to_import_with() -> None:
    plan = step(registered_release(), RegistryObservation(version="7"), image="")
    trained = find(plan.status.conditions, "Trained")
    assert trained is not None
    assert trained.reason == "ImporterUnavailable"
    assert "MODELGATE_SERVER_IMAGE" in trained.message
    assert plan.actions == []


def test_the_import_job_reads_the_credentials_from_the_secret() -> None:
    release = registered_release(credentialsSecret={"name": "mlflow", "tokenKey": "token"})
    [start] = step(release, RegistryObservation(version="7")).actions
    assert start.secret_env == ((contract.MLFLOW_TOKEN, "mlflow", "token"),)
    job = manifests.build_training_job(release, start, SETTINGS)
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env[contract.MLFLOW_TOKEN] == {
        "name": contract.MLFLOW_TOKEN,
        "valueFrom": {"secretKeyRef": {"name": "mlflow", "key": "token"}},
    }
    # Sized as the gate's evaluation (it scores the evaluation data), the
    # operator's defaults filling what that does not size (ephemeral storage).
    assert container["resources"] == manifests.sized(
        "training", SETTINGS, release.spec.evaluation.resources.wire()
    )
    assert container["resources"]["limits"]["memory"] == "4Gi"
    basic = registered_release(
        credentialsSecret={"name": "mlflow", "usernameKey": "user", "passwordKey": "pw"}
    )
    [start] = step(basic, RegistryObservation(version="7")).actions
    assert start.secret_env == (
        (contract.MLFLOW_USERNAME, "mlflow", "user"),
        (contract.MLFLOW_PASSWORD, "mlflow", "pw"),
    )


def synced_context(phase: EnvironmentPhase, synced: list[dict[str, Any]]) -> Context:
    release = registered_release(aliases={"staging": "staging-live"})
    status = ModelReleaseStatus.model_validate(
        {
            "source": {
                "mlflow": {"version": "7", "resolvedAt": format_time(NOW), "synced": synced}
            },
            "gate": {
                "outcome": "Passed",
                "evaluatedAt": format_time(NOW),
                "checks": [],
                "inputsHash": "h",
            },
            "environments": [{"name": "staging", "phase": phase, "configHash": "c" * 64}],
        }
    )
    plan = Plan(status=status)
    return Context(release, NOW, status, status, plan, {}, SERVER)


def record(reason: str, state: str, at: datetime) -> dict[str, Any]:
    return {"environment": "staging", "alias": "staging-live", "reason": reason, "state": state,
            "at": format_time(at)}  # fmt: skip


def test_a_live_environment_gives_its_alias_and_tags_once() -> None:
    ctx = synced_context(EnvironmentPhase.DEPLOYED, [])
    sync_registry(ctx)
    [action] = ctx.plan.actions
    assert isinstance(action, SyncRegistry)
    assert (action.alias, action.version, action.rolled_back) == ("staging-live", "7", False)
    assert dict(action.tags) == {
        "modelgate.dev/release": "team/m-1",
        "modelgate.dev/gate": "Passed",
        "modelgate.dev/staging.config-hash": "c" * 64,
    }
    record_sync(ctx.status, action, True, "alias staging-live names version 7", "7", NOW)
    done = synced_context(
        EnvironmentPhase.DEPLOYED, [s.wire() for s in ctx.status.source.mlflow.synced]
    )  # type: ignore[union-attr]
    sync_registry(done)
    assert done.plan.actions == []  # at rest: nothing asked of the registry


def test_a_failed_update_is_tried_again_30_s_later_and_a_rollback_asks_for_its_own() -> None:
    recent = synced_context(
        EnvironmentPhase.DEPLOYED, [record("Live", "Failed", NOW - timedelta(seconds=10))]
    )
    sync_registry(recent)
    assert recent.plan.actions == []
    assert recent.plan.requeue_after == timedelta(seconds=20)
    older = synced_context(
        EnvironmentPhase.DEPLOYED, [record("Live", "Failed", NOW - timedelta(seconds=31))]
    )
    sync_registry(older)
    assert len(older.plan.actions) == 1
    rolled = synced_context(EnvironmentPhase.ROLLED_BACK, [record("Live", "Synced", NOW)])
    sync_registry(rolled)
    [action] = rolled.plan.actions
    assert isinstance(action, SyncRegistry)
    assert action.rolled_back
    assert action.tags == ()
