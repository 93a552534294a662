"""Parity of the three places that judge a Modelgate object: the pydantic
models (``modelgate validate``, local mode, the operator), the real API
server given the generated CRDs (what a GitOps agent meets without the
webhook) and the admission webhook. Every validator of the models has bad
manifests here; each is refused by all three, each naming the same field,
or, for a validator the API server cannot mirror (api/serverside.py lists
it with the reason), accepted by the server and refused by the other two.
A validator with no case here fails the first test."""

from __future__ import annotations

import copy
import json
import re
import ssl
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from kubernetes import client
from pydantic import BaseModel

from modelgate.api.loader import KINDS, ManifestError, parse_resource
from modelgate.api.serverside import WEBHOOK_ONLY
from tests.realcluster.conftest import PLURALS, documents
from tests.realcluster.test_crds_on_apiserver import _ARTIFACT, _DELETE, _MLFLOW, _release
from tests.support.controlplane import ControlPlane
from tests.support.installation import Installation, OperatorProcess

WEBHOOKS = {
    "ModelRelease": "validate-release",
    "Environment": "validate-environment",
    "QualityGate": "validate-qualitygate",
}


def validators() -> set[str]:
    """``Class.method`` of every validator of the three kinds' models."""
    found: set[str] = set()
    seen: set[type] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        decorators = model.__pydantic_decorators__
        for decorator in [
            *decorators.model_validators.values(),
            *decorators.field_validators.values(),
        ]:
            found.add(decorator.func.__qualname__)
        for field in model.model_fields.values():
            for inner in _types(field.annotation):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    walk(inner)

    for kind in KINDS.values():
        walk(kind)
    return found


def _types(annotation: Any) -> Iterator[Any]:
    yield annotation
    for argument in getattr(annotation, "__args__", ()):
        yield from _types(argument)


# ---- the cases -------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    validator: str  # Class.method whose rule the document breaks
    name: str
    document: dict[str, Any]
    field: str  # the path every refusal names ([] for any index)

    @property
    def kind(self) -> str:
        return str(self.document["kind"])


def _gate(**spec: Any) -> dict[str, Any]:
    document = copy.deepcopy(documents("gate.yaml")[0])
    document["spec"].update(spec)
    return document


def _check(check: dict[str, Any], task: str = "binary") -> dict[str, Any]:
    return _gate(task=task, checks=[check])


def _environment(**spec: Any) -> dict[str, Any]:
    document = copy.deepcopy(
        next(d for d in documents("environments.yaml") if d["metadata"]["name"] == "production")
    )
    document["spec"].update(spec)
    return document


def _rule(**rule: Any) -> dict[str, Any]:
    return _environment(configRules=[{"key": "FEATURE_STORE_URL", **rule}])


def _metric(**metric: Any) -> dict[str, Any]:
    """An analysis metric; a None drops the base's value."""
    merged = {"name": "errors", "query": "up", "max": 1, **metric}
    merged = {k: v for k, v in merged.items() if v is not None}
    return _environment(policy={"analysis": {"metrics": [merged]}})


_REQUESTS = 'sum(increase(modelgate_predictions_total{arm="{{arm}}"}[{{window}}]))'
_PRIMARY = {"name": "approvals", "role": "Primary", "statistic": "Proportion",
            "better": "Higher", "count": _REQUESTS, "successes": _REQUESTS,
            "minimumDetectableEffect": 0.02}  # fmt: skip
_EXPERIMENT = {"split": {"champion": 50, "challenger": 50}, "deadline": "1h"}


def _rollout(**rollout: Any) -> dict[str, Any]:
    """An Environment with an experiment; a None drops the base's value."""
    merged = {"strategy": "Experiment", "experiment": _EXPERIMENT, "metrics": [_PRIMARY],
              **rollout}  # fmt: skip
    return _environment(policy={"rollout": {k: v for k, v in merged.items() if v is not None}})


def _primary(**metric: Any) -> dict[str, Any]:
    merged = {k: v for k, v in {**_PRIMARY, **metric}.items() if v is not None}
    return _rollout(metrics=[merged])


def _steps(*weights: int) -> dict[str, Any]:
    guardrail = {**_PRIMARY, "role": "Guardrail", "minimumDetectableEffect": None, "margin": 0.01}
    return _rollout(
        strategy="Canary", experiment=None,
        canary={"steps": [{"weight": w, "duration": "5m"} for w in weights]},
        metrics=[{k: v for k, v in guardrail.items() if v is not None}],
    )  # fmt: skip


def _window(**window: Any) -> dict[str, Any]:
    return _environment(policy={"freezeWindows": [{"name": "holidays", **window}]})


def _promotion(**promotion: Any) -> dict[str, Any]:
    document = _release()
    document["spec"]["promotion"].update(promotion)
    return document


_GIT = {"repository": "https://git.example.com/env.git", "path": "production"}
_SERVED = {"servedPredictions": {}}
_WEEKLY = {"schedule": "0 18 * * 5", "duration": "64h"}
_ABSOLUTE = {"start": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00Z"}
_TRAINED_ELSEWHERE = {"training": _DELETE, "mlflow": _MLFLOW}
_AUC = {"name": "auc", "metric": {"name": "roc_auc", "min": 0.7}}

CASES = [
    Case("ObjectMeta._name_fits_derived_names", "a name of 64 characters",
         {**_gate(), "metadata": {"name": "g" * 64}}, "metadata.name"),
    Case("EnvironmentSpec._unique_config_keys", "a config key twice",
         _environment(config=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]),
         "spec.config"),
    Case("Delivery._git_only_for_gitops", "GitOps without git",
         _environment(delivery={"mode": "GitOps"}), "spec.delivery"),
    Case("Delivery._git_only_for_gitops", "git with Direct",
         _environment(delivery={"mode": "Direct", "git": _GIT}), "spec.delivery"),
    Case("GitTarget._path_stays_inside", "a .. segment",
         _environment(delivery={"mode": "GitOps", "git": {**_GIT, "path": "env/../other"}}),
         "spec.delivery.git.path"),
    Case("GitTarget._path_stays_inside", "into .git",
         _environment(delivery={"mode": "GitOps", "git": {**_GIT, "path": ".git/hooks"}}),
         "spec.delivery.git.path"),
    Case("ConfigRule._range_is_satisfiable", "min over max",
         _rule(min=10, max=1), "spec.configRules[]"),
    Case("ConfigRule._pattern_compiles", "a pattern that is no regex",
         _rule(pattern="^https://([a-z.]+$"), "spec.configRules[].pattern"),
    Case("ConfigRule._forbid_regexes_compile", "a forbidden /regex/ that is no regex",
         _rule(forbid=["/backtest(/"]), "spec.configRules[].forbid"),
    Case("Analysis._unique_names", "a metric name twice",
         _environment(policy={"analysis": {"metrics": [
             {"name": "errors", "query": "up", "max": 1},
             {"name": "errors", "query": "down", "max": 1}]}}),
         "spec.policy.analysis.metrics"),
    Case("AnalysisMetric._bounds_and_length", "no bound",
         _metric(max=None), "spec.policy.analysis.metrics[]"),
    Case("AnalysisMetric._bounds_and_length", "min over max",
         _metric(min=2, max=1), "spec.policy.analysis.metrics[]"),
    Case("AnalysisMetric._bounds_and_length", "count and duration",
         _metric(count=3, duration="5m"), "spec.policy.analysis.metrics[]"),
    Case("AnalysisMetric._bounds_and_length", "an interval under a second",
         _metric(interval="999ms"), "spec.policy.analysis.metrics[]"),
    Case("AnalysisMetric._known_placeholders", "an unknown placeholder",
         _metric(query='up{team="{{ team }}"}'), "spec.policy.analysis.metrics[].query"),
    Case("AnalysisMetric._known_placeholders", "a placeholder one letter off",
         _metric(query='up{model="{{models}}"}'), "spec.policy.analysis.metrics[].query"),
    Case("Split._adds_up", "weights that do not add up",
         _rollout(experiment={**_EXPERIMENT, "split": {"champion": 60, "challenger": 50}}),
         "spec.policy.rollout.experiment.split"),
    Case("CanarySettings._increasing", "weights that go down", _steps(50, 10),
         "spec.policy.rollout.canary.steps"),
    Case("CanarySettings._increasing", "a weight twice", _steps(20, 20),
         "spec.policy.rollout.canary.steps"),
    Case("ExperimentMetric._names_the_arm", "a query without {{arm}}",
         _primary(count="sum(modelgate_predictions_total)"),
         "spec.policy.rollout.metrics[].count"),
    Case("ExperimentMetric._names_the_arm", "a placeholder it cannot fill",
         _primary(successes='up{arm="{{arm}}",team="{{team}}"}'),
         "spec.policy.rollout.metrics[].successes"),
    Case("ExperimentMetric._queries_and_effect", "a proportion without successes",
         _primary(successes=None), "spec.policy.rollout.metrics[]"),
    Case("ExperimentMetric._queries_and_effect", "a mean without sums",
         _primary(statistic="Mean", successes=None), "spec.policy.rollout.metrics[]"),
    Case("ExperimentMetric._queries_and_effect", "a primary without an effect",
         _primary(minimumDetectableEffect=None), "spec.policy.rollout.metrics[]"),
    Case("Rollout._unique_names", "a metric name twice", _rollout(metrics=[_PRIMARY, _PRIMARY]),
         "spec.policy.rollout.metrics"),
    Case("Rollout._settings_fit_strategy", "an experiment without its settings",
         _rollout(experiment=None), "spec.policy.rollout"),
    Case("Rollout._settings_fit_strategy", "canary settings for Replace",
         _rollout(strategy="Replace", experiment=None, metrics=None,
                  canary={"steps": [{"weight": 10, "duration": "1m"}]}),
         "spec.policy.rollout"),
    Case("Rollout._settings_fit_strategy", "an experiment with no primary",
         _rollout(metrics=[]), "spec.policy.rollout"),
    Case("Rollout._settings_fit_strategy", "looks under a second",
         _rollout(interval="999ms"), "spec.policy.rollout"),
    Case("FreezeWindow._absolute_or_recurring", "absolute and recurring",
         _window(**_ABSOLUTE, **_WEEKLY), "spec.policy.freezeWindows[]"),
    Case("FreezeWindow._absolute_or_recurring", "a start without an end",
         _window(start=_ABSOLUTE["start"]), "spec.policy.freezeWindows[]"),
    Case("FreezeWindow._absolute_or_recurring", "a schedule without a duration",
         _window(schedule="0 18 * * 5"), "spec.policy.freezeWindows[]"),
    Case("FreezeWindow._absolute_or_recurring", "an end before the start",
         _window(start=_ABSOLUTE["end"], end=_ABSOLUTE["start"]), "spec.policy.freezeWindows[]"),
    Case("FreezeWindow._absolute_or_recurring", "a thirteenth month",
         _window(start="2026-13-01T00:00:00Z", end=_ABSOLUTE["end"]),
         "spec.policy.freezeWindows[]"),
    Case("FreezeWindow._absolute_or_recurring", "an hour 24",
         _window(schedule="0 24 * * 5", duration="1h"), "spec.policy.freezeWindows[]"),
    Case("FreezeWindow._absolute_or_recurring", "a range backwards",
         _window(schedule="0 18 * * 5-1", duration="1h"), "spec.policy.freezeWindows[]"),
    Case("FreezeWindow._absolute_or_recurring", "a step of 0",
         _window(schedule="*/0 18 * * 5", duration="1h"), "spec.policy.freezeWindows[]"),
    Case("FreezeWindow._absolute_or_recurring", "a 40-day recurring window",
         _window(schedule="0 0 1 12 *", duration="40d"), "spec.policy.freezeWindows[]"),
    Case("Verification._one_kind", "an image and the built-in check",
         _environment(verification={"image": "r.example.com/verify:1", **_SERVED}),
         "spec.verification"),
    Case("Verification._one_kind", "a command for the built-in check",
         _environment(verification={**_SERVED, "command": ["verify"]}), "spec.verification"),
    Case("QualityGateSpec._checks_fit_task", "a classifier's metric for a regression",
         _check(_AUC, task="regression"), "spec.checks"),
    Case("QualityGateSpec._checks_fit_task", "a direction for multiclass labels",
         _check({"name": "age-up", "behavior": {"column": "age", "add": 1, "expect": "increase"}},
                task="multiclass"), "spec.checks"),
    Case("QualityGateSpec._checks_fit_task", "fairness of a regression",
         _check({"name": "fair", "fairness": {"metric": "disparate_impact",
                                              "sensitiveColumn": "region"}},
                task="regression"), "spec.checks"),
    Case("QualityGateSpec._checks_fit_task", "a check name twice",
         _gate(checks=[_AUC, _AUC]), "spec.checks"),
    Case("Check._exactly_one_kind", "no kind", _check({"name": "a"}), "spec.checks[]"),
    Case("Check._exactly_one_kind", "a slice of a data check",
         _check({"name": "a", "data": {"column": "age", "min": 0}, "slice": {"columns": ["r"]}}),
         "spec.checks[]"),
    Case("Check._exactly_one_kind", "a slice and a baseline",
         _check({**_AUC, "slice": {"columns": ["r"]}, "baseline": {"environment": "production"}}),
         "spec.checks[]"),
    Case("Check._exactly_one_kind", "a metric with no bound",
         _check({"name": "a", "metric": {"name": "f1"}}), "spec.checks[]"),
    Case("Bounds._min_not_above_max", "min over max",
         _check({"name": "a", "metric": {"name": "f1", "min": 0.9, "max": 0.1}}),
         "spec.checks[].metric"),
    Case("FairnessCheck._default_bounds", "a difference with no max",
         _check({"name": "a", "fairness": {"metric": "equalized_odds_difference",
                                           "sensitiveColumn": "region"}}),
         "spec.checks[].fairness"),
    Case("DataCheck._something_to_check", "a range with no column",
         _check({"name": "a", "data": {"min": 0}}), "spec.checks[].data"),
    Case("DataCheck._something_to_check", "nothing to check",
         _check({"name": "a", "data": {"column": "age"}}), "spec.checks[].data"),
    Case("ExplainabilityCheck._something_to_check", "nothing to check",
         _check({"name": "a", "explainability": {"column": "age"}}),
         "spec.checks[].explainability"),
    Case("BehaviorCheck._one_perturbation", "add and set",
         _check({"name": "a", "behavior": {"column": "age", "add": 1, "set": "3",
                                           "expect": "invariant"}}),
         "spec.checks[].behavior"),
    Case("ModelReleaseSpec._image_for_serving", "serving Image without an image",
         _release(serving="Image"), "spec"),
    Case("ModelReleaseSpec._image_for_serving", "two sources", _release(mlflow=_MLFLOW), "spec"),
    Case("ModelReleaseSpec._image_for_serving", "no source", _release(training=_DELETE), "spec"),
    Case("ModelReleaseSpec._image_for_serving", "a registered model served by an image",
         _release(**_TRAINED_ELSEWHERE, serving="Image", image="r.example.com/m:1"), "spec"),
    Case("ModelReleaseSpec._image_for_serving", "a stored model served by an image",
         _release(training=_DELETE, artifact=_ARTIFACT, serving="Image", image="m:1"), "spec"),
    Case("ModelReleaseSpec._image_for_serving", "a pickle on the reference server",
         _release(training=_DELETE, artifact={**_ARTIFACT, "format": "Pickle"}), "spec"),
    Case("ModelReleaseSpec._image_for_serving", "its own server without features",
         _release(training=_DELETE, artifact=_ARTIFACT, serving="ModelServer", image="m:1",
                  server={"modelName": "m"}), "spec"),
    Case("ModelReleaseSpec._image_for_serving", "ModelServer without server",
         _release(**_TRAINED_ELSEWHERE, serving="ModelServer", image="m:1"), "spec"),
    Case("ModelReleaseSpec._image_for_serving", "a trained model on its own server",
         _release(serving="ModelServer", image="m:1", server={"modelName": "m"}), "spec"),
    Case("ModelReleaseSpec._image_for_serving", "the server's predictions of an image",
         _release(serving="Image", image="r.example.com/m:1",
                  gate={"name": "credit-gate", "predictionsFrom": "Server"}), "spec"),
    Case("ModelReleaseSpec._image_for_serving", "the trainer's predictions of no training",
         _release(**_TRAINED_ELSEWHERE,
                  gate={"name": "credit-gate", "predictionsFrom": "Trainer"}), "spec"),
    Case("MlflowSource._one_version_or_alias", "a version and an alias",
         _release(training=_DELETE, mlflow={**_MLFLOW, "version": "3"}), "spec.mlflow"),
    Case("MlflowCredentials._token_or_basic", "a token and a user name",
         _release(training=_DELETE, mlflow={**_MLFLOW, "credentialsSecret": {
             "name": "m", "tokenKey": "t", "usernameKey": "u"}}),
         "spec.mlflow.credentialsSecret"),
    Case("GateReference._gate_or_checks", "no gate and no checks", _release(gate={}),
         "spec.gate"),
    Case("GateReference._gate_or_checks", "inline checks without a task",
         _release(gate={"checks": [_AUC]}), "spec.gate"),
    Case("GateReference._gate_or_checks", "a classifier's metric for a regression",
         _release(gate={"task": "regression", "checks": [_AUC]}), "spec.gate.checks"),
    Case("PromotionSpec._overrides_name_listed_environments", "config for no listed environment",
         _promotion(config=[{"environment": "prod", "values": [{"name": "A", "value": "b"}]}]),
         "spec.promotion"),
    Case("PromotionSpec._overrides_name_listed_environments", "a value's key twice",
         _promotion(config=[{"environment": "production", "values": [
             {"name": "A", "value": "b"}, {"name": "A", "value": "c"}]}]),
         "spec.promotion"),
    Case("PromotionSpec._unique_environments", "an environment twice",
         _promotion(environments=["staging", "production", "staging"]),
         "spec.promotion.environments"),
]  # fmt: skip


def _case_id(case: Case) -> str:
    return f"{case.validator}: {case.name}"


def test_every_validator_has_cases_and_the_exceptions_a_reason() -> None:
    found = validators()
    covered = {case.validator for case in CASES}
    assert found - covered == set(), "validators with no parity case here"
    assert covered - found == set(), "cases for validators that do not exist"
    assert set(WEBHOOK_ONLY) <= found
    assert all(len(reason) > 40 for reason in WEBHOOK_ONLY.values())


# ---- what each of the three says -----------------------------------------------

_PATH = r"[A-Za-z][A-Za-z0-9]*(?:\[\d+\])?(?:\.[A-Za-z][A-Za-z0-9]*(?:\[\d+\])?)*"
_SERVER_ERROR = re.compile(
    rf"({_PATH}): (?:Invalid value|Required value|Duplicate value|Unsupported value|Too long"
    r"|Too many|Too short|Forbidden)"
)
_SUBPATH = re.compile(rf"^({_PATH}(?:\[\d+\]|\.)[A-Za-z0-9.\[\]]*): ")


def _generic(path: str) -> str:
    return re.sub(r"\[\d+\]", "[]", path)


def model_paths(problems: list[str]) -> set[str]:
    """The fields ``field.path: message`` lines name: the location, joined
    with a path the message starts with (``spec: checks[0].metric.name: ...``)."""
    found = set()
    for problem in problems:
        location, _, message = problem.partition(": ")
        inner = _SUBPATH.match(message)
        if inner and ("[" in inner.group(1) or "." in inner.group(1)):
            location = f"{location}.{inner.group(1)}"
        found.add(_generic(location))
    return found


def server_paths(message: str) -> set[str]:
    return {_generic(match) for match in _SERVER_ERROR.findall(message)}


def names(paths: set[str], field: str) -> bool:
    return any(p == field or p.startswith((f"{field}.", f"{field}[")) for p in paths)


@pytest.fixture(scope="module")
def parity_namespace(control_plane: ControlPlane, installation: Installation) -> Iterator[str]:
    name = f"parity-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(control_plane.api_client())
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def _server_refusal(plane: ControlPlane, namespace: str, document: dict[str, Any]) -> str | None:
    """The server's refusal of a dry-run create, or None if it takes it."""
    try:
        client.CustomObjectsApi(plane.api_client()).create_namespaced_custom_object(
            "modelgate.dev", "v1alpha1", namespace, PLURALS[document["kind"]],
            copy.deepcopy(document), dry_run="All",
        )  # fmt: skip
    except client.ApiException as refused:
        status, body = refused.status, refused.body
    else:
        return None
    assert status == 422, f"{status}: {body}"
    return str(json.loads(body)["message"])


def _webhook_refusal(
    installation: Installation, namespace: str, document: dict[str, Any]
) -> str | None:
    """What the operator's validating webhook answers, asked as the API
    server asks it (an AdmissionReview over https)."""
    plane = installation.plane
    assert plane.ca is not None
    obj = {**document, "metadata": {**document["metadata"], "namespace": namespace}}
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uuid.uuid4().hex,
            "kind": {"group": "modelgate.dev", "version": "v1alpha1", "kind": document["kind"]},
            "resource": {
                "group": "modelgate.dev",
                "version": "v1alpha1",
                "resource": PLURALS[document["kind"]],
            },
            "name": obj["metadata"]["name"],
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
            "object": obj,
            "oldObject": None,
            "dryRun": True,
        },
    }
    request = urllib.request.Request(
        f"https://127.0.0.1:{installation.webhook_port}/{WEBHOOKS[document['kind']]}",
        data=json.dumps(review).encode(),
        headers={"Content-Type": "application/json"},
    )
    context = ssl.create_default_context(cafile=str(plane.ca.cert_path))
    with urllib.request.urlopen(request, timeout=30, context=context) as answer:
        response = json.loads(answer.read())["response"]
    if response["allowed"]:
        return None
    return str(response["status"]["message"])


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_pydantic_the_api_server_and_the_webhook_refuse_it_naming_the_field(
    case: Case,
    control_plane: ControlPlane,
    installation: Installation,
    operator: OperatorProcess,
    parity_namespace: str,
) -> None:
    with pytest.raises(ManifestError) as refused:
        parse_resource(copy.deepcopy(case.document))
    assert names(model_paths(refused.value.problems), case.field), refused.value.problems

    server = _server_refusal(control_plane, parity_namespace, case.document)
    if case.validator in WEBHOOK_ONLY:
        assert server is None, f"the server refuses what it is said not to enforce: {server}"
    else:
        assert server is not None, "the API server stored what the models refuse"
        assert names(server_paths(server), case.field), server

    webhook = _webhook_refusal(installation, parity_namespace, case.document)
    assert webhook is not None, "the webhook allowed what the models refuse"
    assert names(model_paths(webhook.split("; ")), case.field), webhook


def test_the_cases_bases_are_valid_everywhere(
    control_plane: ControlPlane, installation: Installation, parity_namespace: str
) -> None:
    """The documents the cases break are accepted by all three as they are."""
    for document in (_gate(), _environment(), _release()):
        parse_resource(copy.deepcopy(document))
        assert _server_refusal(control_plane, parity_namespace, document) is None
