"""The generated CRDs on the real kube-apiserver: accepted (structural, CEL
compiled), explained, listed with their printer columns, waited on, and every
schema and CEL rule enforced by the server itself with a message naming the
field.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client

from modelgate.api.crdgen import CRD_INFO, build_crd
from tests.conftest import EXAMPLES
from tests.support.controlplane import ControlPlane

GROUP, VERSION = "modelgate.dev", "v1alpha1"
PLURALS = {
    "ModelRelease": "modelreleases",
    "QualityGate": "qualitygates",
    "Environment": "environments",
}


def example_documents() -> list[tuple[str, dict[str, Any]]]:
    """Every Modelgate object in examples/, with the file it came from."""
    found = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict) and document.get("kind") in PLURALS:
                found.append((str(path.relative_to(EXAMPLES)), document))
    return found


@pytest.fixture(scope="module")
def crds(control_plane: ControlPlane) -> ControlPlane:
    control_plane.install_crds()
    return control_plane


def _namespace(plane: ControlPlane) -> Iterator[str]:
    name = f"crd-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(plane.api_client())
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def namespace(crds: ControlPlane) -> Iterator[str]:
    """A namespace of the test's own."""
    yield from _namespace(crds)


@pytest.fixture(scope="module")
def dry_run_namespace(crds: ControlPlane) -> Iterator[str]:
    """Where the refusal cases dry-run their creates (nothing is stored)."""
    yield from _namespace(crds)


def test_crds_are_established_and_structural(crds: ControlPlane) -> None:
    api = client.ApiextensionsV1Api(crds.api_client())
    for kind, info in CRD_INFO.items():
        crd = api.read_custom_resource_definition(f"{PLURALS[kind]}.{GROUP}")
        conditions = {c.type: c.status for c in crd.status.conditions}
        assert conditions.get("Established") == "True", (kind, conditions)
        assert conditions.get("NamesAccepted") == "True", (kind, conditions)
        # A non-structural schema would be reported here and pruning would
        # be off; the server accepted the CEL rules when it stored the CRD.
        assert "NonStructuralSchema" not in conditions, (kind, conditions)
        assert crd.spec.names.categories == ["modelgate"]
        assert info is not None


def test_kubectl_explain_reads_the_descriptions(crds: ControlPlane) -> None:
    promotion = crds.kubectl("explain", "modelrelease.spec.promotion").stdout
    described = build_crd("ModelRelease")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    words = described["properties"]["spec"]["properties"]["promotion"]["description"]
    assert words.split(".")[0][:40] in " ".join(promotion.split())
    tier = crds.kubectl("explain", "environment.spec.tier").stdout
    assert "preproduction" in tier
    assert "production" in tier


def test_every_example_is_accepted_and_listed_by_category(
    crds: ControlPlane, namespace: str
) -> None:
    documents = example_documents()
    assert len(documents) >= 6
    for source, original in documents:
        document = copy.deepcopy(original)
        document["metadata"].pop("namespace", None)
        done = crds.kubectl(
            "apply", "-n", namespace, "-f", "-", stdin=yaml.safe_dump(document), check=False
        )
        assert done.returncode == 0, f"{source}: {done.stderr}"
    listed = crds.kubectl("get", "modelgate", "-n", namespace, "-o", "name").stdout.split()
    for _, document in documents:
        kind, name = document["kind"].lower(), document["metadata"]["name"]
        assert f"{kind}.modelgate.dev/{name}" in listed
    short = crds.kubectl("get", "mr,qg,mgenv", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(short) == sorted(listed)


def _release_named(namespace: str, name: str) -> dict[str, Any]:
    document = copy.deepcopy(
        next(d for s, d in example_documents() if s == "credit-risk/release.yaml")
    )
    document["metadata"] = {"name": name, "namespace": namespace}
    return document


def test_printer_columns_and_kubectl_wait_follow_the_status(
    crds: ControlPlane, namespace: str
) -> None:
    custom = client.CustomObjectsApi(crds.api_client())
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, "modelreleases", _release_named(namespace, "cols")
    )
    generation = created["metadata"]["generation"]
    status = {
        "observedGeneration": generation,
        "phase": "Released",
        "liveIn": "staging,production",
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Released",
                "message": "live in staging, production",
                "lastTransitionTime": "2026-12-01T00:00:00Z",
                "observedGeneration": generation,
            }
        ],
    }
    crds.kubectl(
        "patch",
        "modelrelease",
        "cols",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )
    table = crds.kubectl("get", "modelreleases", "-n", namespace).stdout.splitlines()
    header = table[0].split()
    columns = [
        c["name"].upper()
        for c in build_crd("ModelRelease")["spec"]["versions"][0]["additionalPrinterColumns"]
        if not c.get("priority")
    ]
    assert header == ["NAME", *columns]
    row = dict(zip(header, table[1].split(), strict=False))
    assert row["PHASE"] == "Released"
    assert row["READY"] == "True"
    assert row["LIVE"] == "staging,production"
    assert row["MODEL"] == created["spec"]["model"]["name"]
    waited = crds.kubectl(
        "wait", "--for=condition=Ready", "modelrelease/cols", "-n", namespace, "--timeout=10s"
    )
    assert "condition met" in waited.stdout
    after = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, "modelreleases", "cols")
    # A status write changes neither the spec nor the generation.
    assert after["spec"] == created["spec"]
    assert after["metadata"]["generation"] == generation
    not_ready = crds.kubectl(
        "wait",
        "--for=condition=Ready=False",
        "modelrelease/cols",
        "-n",
        namespace,
        "--timeout=1s",
        check=False,
    )
    assert not_ready.returncode != 0


# ---- every rule, enforced by the server ---------------------------------------


def _path(parts: tuple[str | int, ...]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _schema_mutations(
    schema: dict[str, Any], value: Any, parts: tuple[str | int, ...]
) -> Iterator[tuple[str, tuple[str | int, ...], Any]]:
    """(rule, path, bad value) for each schema rule that applies where the
    example has a value: enum, pattern, bounds, lengths, required, type."""
    if "enum" in schema:
        yield "enum", parts, "NoSuchValue"
    if "pattern" in schema and isinstance(value, str):
        bad = "!! not this !!"
        assert not re.search(schema["pattern"], bad)
        yield "pattern", parts, bad
    if "minimum" in schema and isinstance(value, int | float) and not isinstance(value, bool):
        yield "minimum", parts, schema["minimum"] - 1
    if "maximum" in schema and isinstance(value, int | float) and not isinstance(value, bool):
        yield "maximum", parts, schema["maximum"] + 1
    if schema.get("minLength") and isinstance(value, str):
        yield "minLength", parts, ""
    if "maxLength" in schema and isinstance(value, str):
        yield "maxLength", parts, "x" * (schema["maxLength"] + 1)
    if schema.get("minItems") and isinstance(value, list):
        yield "minItems", parts, []
    if schema.get("type") == "integer" and isinstance(value, int):
        yield "type", parts, "twelve"
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key in value:
                yield "required", (*parts, key), _DELETE
        for key, child in schema.get("properties", {}).items():
            if key in value:
                yield from _schema_mutations(child, value[key], (*parts, key))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict) and value:
        yield from _schema_mutations(schema["items"], value[0], (*parts, 0))


_DELETE = object()


def _mutated(document: dict[str, Any], parts: tuple[str | int, ...], bad: Any) -> dict[str, Any]:
    result = copy.deepcopy(document)
    target: Any = result
    for part in parts[:-1]:
        target = target[part]
    if bad is _DELETE:
        del target[parts[-1]]
    else:
        target[parts[-1]] = bad
    return result


def schema_cases() -> list[tuple[str, str, dict[str, Any], str]]:
    """(id, kind, document, field path) for every schema rule on every example."""
    cases: dict[tuple[str, str, str], tuple[str, str, dict[str, Any], str]] = {}
    for source, document in example_documents():
        kind = document["kind"]
        schema = build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        spec_schema = schema["properties"]["spec"]
        for rule, parts, bad in _schema_mutations(spec_schema, document["spec"], ("spec",)):
            path = _path(parts)
            key = (kind, rule, re.sub(r"\[\d+\]", "[]", path))
            if key not in cases:
                case_id = f"{kind}:{rule}:{path} ({source})"
                cases[key] = (case_id, kind, _mutated(document, parts, bad), path)
    return sorted(cases.values(), key=lambda case: case[0])


SCHEMA_CASES = schema_cases()


def _refusal(plane: ControlPlane, namespace: str, document: dict[str, Any]) -> str:
    """The server's refusal of a dry-run create (fails the test if accepted)."""
    custom = client.CustomObjectsApi(plane.api_client())
    document = copy.deepcopy(document)
    document["metadata"] = {"name": document["metadata"]["name"], "namespace": namespace}
    with pytest.raises(client.ApiException) as refused:
        custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[document["kind"]], document, dry_run="All"
        )
    assert refused.value.status == 422, f"{refused.value.status}: {refused.value.body}"
    message: str = json.loads(refused.value.body)["message"]
    return message


def test_there_is_a_case_for_every_kind_of_schema_rule() -> None:
    rules = {case_id.split(":")[1] for case_id, *_ in SCHEMA_CASES}
    assert {"enum", "pattern", "minimum", "required", "minLength", "type"} <= rules
    assert len(SCHEMA_CASES) >= 40


@pytest.mark.parametrize(
    ("kind", "document", "path"),
    [case[1:] for case in SCHEMA_CASES],
    ids=[case[0] for case in SCHEMA_CASES],
)
def test_the_server_refuses_each_schema_violation_naming_the_field(
    crds: ControlPlane, dry_run_namespace: str, kind: str, document: dict[str, Any], path: str
) -> None:
    message = _refusal(crds, dry_run_namespace, document)
    assert f"{path}:" in message or f"{path} " in message, message
    assert kind in message


def _example(source: str) -> dict[str, Any]:
    return copy.deepcopy(next(d for s, d in example_documents() if s == source))


def _gate_with(check: dict[str, Any]) -> dict[str, Any]:
    document = _example("credit-risk/gate.yaml")
    document["spec"]["checks"] = [check]
    return document


def _release_gate_with(check: dict[str, Any]) -> dict[str, Any]:
    document = _example("credit-risk/release.yaml")
    document["spec"]["gate"] = {"name": "credit-gate", "checks": [check]}
    return document


def _environment(**spec: Any) -> dict[str, Any]:
    document = next(d for s, d in example_documents() if s == "credit-risk/environments.yaml")
    document = copy.deepcopy(document)
    document["spec"].update(spec)
    return document


def _release(**spec: Any) -> dict[str, Any]:
    document = _example("credit-risk/release.yaml")
    for key, value in spec.items():
        if value is _DELETE:
            document["spec"].pop(key, None)
        else:
            document["spec"][key] = value
    return document


# A stored model file, as a release's source.
_ARTIFACT = {
    "uri": "s3://models/credit-risk/model.skops",
    "sha256": "ab" * 32,
    "data": {"train": "s3://d/train.csv", "evaluation": "s3://d/eval.csv", "target": "default"},
}

# A model registered in MLflow, as a release's source.
_MLFLOW = {
    "trackingUri": "http://mlflow.mlops.svc:5000",
    "name": "credit-risk",
    "alias": "candidate",
    "data": {"train": "data/train.csv", "evaluation": "data/eval.csv", "target": "default"},
}

_MIN_OVER_MAX = {
    "metric": {"name": "f1", "min": 0.9, "max": 0.1},
    "fairness": {
        "metric": "demographic_parity_difference",
        "sensitiveColumn": "gender",
        "min": 0.9,
        "max": 0.1,
    },
    "data": {"column": "age", "min": 10, "max": 1},
    "explainability": {"column": "age", "min": 0.9, "max": 0.1},
}
_CHECK_CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("checks[0]", "set exactly one", {"name": "a"}),
    (
        "checks[0]",
        "slice and baseline apply",
        {"name": "a", "data": {"column": "x", "min": 0}, "slice": {"columns": ["r"]}},
    ),
    (
        "checks[0]",
        "combine either slice or baseline",
        {
            "name": "a",
            "metric": {"name": "f1", "min": 0.5},
            "slice": {"columns": ["r"]},
            "baseline": {"environment": "production"},
        },
    ),
    ("checks[0]", "a metric check needs min or max", {"name": "a", "metric": {"name": "f1"}}),
    (
        "checks[0].behavior",
        "set exactly one perturbation",
        {
            "name": "a",
            "behavior": {"column": "age", "expect": "invariant", "add": 1, "set": "2"},
        },
    ),
    *[
        (f"checks[0].{kind}", "min is greater than max", {"name": "a", kind: value})
        for kind, value in _MIN_OVER_MAX.items()
    ],
    (
        "checks[0].fairness",
        "a fairness metric that is a difference needs max",
        {
            "name": "a",
            "fairness": {"metric": "equalized_odds_difference", "sensitiveColumn": "region"},
        },
    ),
    ("checks[0].data", "type, maxMissingRate, allowed, min and max need a column",
     {"name": "a", "data": {"min": 0}}),
    ("checks[0].data", "nothing to check", {"name": "a", "data": {"column": "age"}}),
    ("checks[0].explainability", "set notInTopK, min or max",
     {"name": "a", "explainability": {"column": "age"}}),
]  # fmt: skip
# The checks a task does not define, judged on the whole list (fieldPath .checks).
_TASK_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("regression", {"name": "auc", "metric": {"name": "roc_auc", "min": 0.7}},
     "checks[].metric.name: a metric that is not defined for the task"),
    ("multiclass", {"name": "up", "behavior": {"column": "age", "add": 1, "expect": "increase"}},
     "checks[].behavior.expect: multiclass predictions are labels"),
    ("regression", {"name": "fair", "fairness": {"metric": "disparate_impact",
                                                 "sensitiveColumn": "region"}},
     "checks[].fairness: fairness checks need task binary"),
]  # fmt: skip


def cel_cases() -> list[tuple[str, dict[str, Any], str, str]]:
    """(id, document, field path, message start): one violation per CEL rule."""
    cases = []
    for path, message, check in _CHECK_CASES:
        cases.append(
            (f"QualityGate {message} at {path}", _gate_with(check), f"spec.{path}", message)
        )
        cases.append(
            (
                f"ModelRelease {message} at gate.{path}",
                _release_gate_with(check),
                f"spec.gate.{path}",
                message,
            )
        )
    for task, check, message in _TASK_CASES:
        gate = _gate_with(check)
        gate["spec"]["task"] = task
        cases.append((f"QualityGate {message} ({task})", gate, "spec.checks", message))
        release = _example("credit-risk/release.yaml")
        release["spec"]["gate"] = {"task": task, "checks": [check]}
        cases.append((f"ModelRelease {message} ({task})", release, "spec.gate.checks", message))
    git = {"repository": "https://git.example.com/env.git"}
    window = {"name": "holidays"}
    absolute = {"start": "2026-12-24T00:00:00Z", "end": "2026-12-27T00:00:00Z"}
    cases += [
        *(
            (
                f"Environment GitOps path {path}",
                _environment(delivery={"mode": "GitOps", "git": {**git, "path": path}}),
                "spec.delivery.git.path",
                message,
            )
            for path, message in (
                ("env/../other", "path must not contain '.' or '..' segments"),
                (".git/hooks", "path must not point into .git"),
            )
        ),
        (
            "Environment analysis interval under a second",
            _environment(
                policy={"analysis": {"metrics": [{"name": "m", "query": "up", "max": 1,
                                                  "interval": "500ms"}]}}
            ),
            "spec.policy.analysis.metrics[0].interval",
            "interval is shorter than 1s",
        ),
        (
            "Environment analysis query with an unknown placeholder",
            _environment(
                policy={"analysis": {"metrics": [{"name": "m", "query": "up{x='{{ team }}'}",
                                                  "max": 1}]}}
            ),
            "spec.policy.analysis.metrics[0].query",
            "a query may name only",
        ),
        *(
            (
                f"Environment freeze window: {message}",
                _environment(policy={"freezeWindows": [{**window, **fields}]}),
                path,
                message,
            )
            for fields, path, message in (
                ({**absolute, "schedule": "0 18 * * 5", "duration": "1h"},
                 "spec.policy.freezeWindows[0]", "set start and end (absolute) or schedule"),
                ({"start": absolute["start"]}, "spec.policy.freezeWindows[0]",
                 "set both start and end"),
                ({"schedule": "0 18 * * 5"}, "spec.policy.freezeWindows[0]",
                 "set both schedule and duration"),
                ({"start": absolute["end"], "end": absolute["start"]},
                 "spec.policy.freezeWindows[0]", "end must be after start"),
                ({"schedule": "0 18 * * 5", "duration": "32d"},
                 "spec.policy.freezeWindows[0].duration", "duration of a recurring window"),
                ({"schedule": "0 18 * 13 5", "duration": "1h"},
                 "spec.policy.freezeWindows[0].schedule", "a schedule is five cron fields"),
            )
        ),
        (
            "Environment a command for the built-in verification",
            _environment(verification={"servedPredictions": {}, "args": ["--fast"]}),
            "spec.verification",
            "command and args belong to an image verification",
        ),
    ]  # fmt: skip
    cases += [
        (
            "Environment GitOps without git",
            _environment(delivery={"mode": "GitOps"}),
            "spec.delivery",
            "mode GitOps needs git",
        ),
        (
            "Environment rule min over max",
            _environment(configRules=[{"key": "N", "min": 5, "max": 1}]),
            "spec.configRules[0]",
            "min is greater than max",
        ),
        *(
            (
                f"Environment analysis metric: {message}",
                _environment(
                    policy={"analysis": {"metrics": [{"name": "m", "query": "up", **metric}]}}
                ),
                "spec.policy.analysis.metrics[0]",
                message,
            )
            for metric, message in (
                ({}, "a metric needs min, max or both"),
                ({"min": 2, "max": 1}, "min is greater than max"),
                ({"max": 1, "count": 2, "duration": "5m"}, "set count (measurements) or duration"),
            )
        ),
        (
            "Environment two kinds of verification",
            _environment(verification={"image": "verify:1", "servedPredictions": {}}),
            "spec.verification",
            "set either image",
        ),
        (
            "ModelRelease serving Image without image",
            _release(serving="Image", image=_DELETE),
            "spec",
            "serving Image needs image",
        ),
        ("ModelRelease two sources", _release(mlflow=_MLFLOW), "spec", "name exactly one source"),
        ("ModelRelease no source", _release(training=_DELETE), "spec", "name exactly one source"),
        (
            "ModelRelease registered model served by an image",
            _release(training=_DELETE, mlflow=_MLFLOW, serving="Image", image="r.example.com/m:1"),
            "spec",
            "a release of a registered MLflow model serves",
        ),
        (
            "ModelRelease serving ModelServer without server",
            _release(training=_DELETE, mlflow=_MLFLOW, serving="ModelServer", image="m:1"),
            "spec",
            "serving ModelServer needs server",
        ),
        (
            "ModelRelease a trained model served by a model server",
            _release(serving="ModelServer", image="m:1", server={"modelName": "m"}),
            "spec",
            "serving ModelServer serves a registered model",
        ),
        (
            "ModelRelease stored model served by an image",
            _release(training=_DELETE, artifact=_ARTIFACT, serving="Image", image="m:1"),
            "spec",
            "a release of a stored model file serves that file",
        ),
        (
            "ModelRelease pickled artifact on the reference server",
            _release(training=_DELETE, artifact={**_ARTIFACT, "format": "Pickle"}),
            "spec",
            "a pickled artifact is loaded only by a model server of its own",
        ),
        (
            "ModelRelease stored model on its own server without features",
            _release(
                training=_DELETE,
                artifact=_ARTIFACT,
                serving="ModelServer",
                image="m:1",
                server={"modelName": "m"},
            ),
            "spec",
            "serving ModelServer with an artifact source needs artifact.features",
        ),
        (
            "ModelRelease server predictions of an image of one's own",
            _release(
                serving="Image",
                image="r.example.com/m:1",
                gate={"name": "credit-gate", "predictionsFrom": "Server"},
            ),
            "spec",
            "gate.predictionsFrom: Server scores a trained model",
        ),
        (
            "ModelRelease trainer predictions without training",
            _release(
                training=_DELETE,
                mlflow=_MLFLOW,
                gate={"name": "credit-gate", "predictionsFrom": "Trainer"},
            ),
            "spec",
            "a model trained elsewhere has no trainer's predictions",
        ),
        (
            "ModelRelease registered version and alias",
            _release(training=_DELETE, mlflow={**_MLFLOW, "version": "3"}),
            "spec.mlflow",
            "name exactly one of version",
        ),
        (
            "ModelRelease registry token and user",
            _release(
                training=_DELETE,
                mlflow={
                    **_MLFLOW,
                    "credentialsSecret": {"name": "m", "tokenKey": "t", "usernameKey": "u"},
                },
            ),
            "spec.mlflow.credentialsSecret",
            "give either tokenKey",
        ),
        ("ModelRelease empty gate", _release(gate={}), "spec.gate", "set name (a QualityGate)"),
        (
            "ModelRelease inline checks without task",
            _release(gate={"checks": [{"name": "auc", "metric": {"name": "roc_auc", "min": 0.8}}]}),
            "spec.gate",
            "inline checks without a named gate need task",
        ),
    ]
    cases.extend(_rollout_cases())
    release = _example("credit-risk/release.yaml")
    release["spec"]["promotion"]["config"][0]["environment"] = "prod"
    cases.append(
        (
            "ModelRelease config for an unlisted environment",
            release,
            "spec.promotion",
            "every promotion.config entry",
        )
    )
    release = _example("credit-risk/release.yaml")
    release["spec"]["promotion"]["rollbacks"] = [
        {"environment": "prod", "requestedAt": "2026-12-07T12:00:00Z"}
    ]
    cases.append(
        (
            "ModelRelease rollback of an unlisted environment",
            release,
            "spec.promotion",
            "every promotion.rollbacks entry",
        )
    )
    release = _example("credit-risk/release.yaml")
    release["spec"]["promotion"]["reverifications"] = [
        {"environment": "prod", "requestedAt": "2026-12-07T12:00:00Z"}
    ]
    cases.append(
        (
            "ModelRelease verification again in an unlisted environment",
            release,
            "spec.promotion",
            "every promotion.reverifications entry",
        )
    )
    release = _example("credit-risk/release.yaml")
    release["spec"]["promotion"]["promotions"] = [
        {"environment": "prod", "requestedAt": "2026-12-07T12:00:00Z"}
    ]
    cases.append(
        (
            "ModelRelease promotion into an unlisted environment",
            release,
            "spec.promotion",
            "every promotion.promotions entry",
        )
    )
    release = _example("credit-risk/release.yaml")
    release["spec"]["retry"] = {"requestedAt": "yesterday"}
    cases.append(
        ("ModelRelease retry at no time", release, "spec.retry.requestedAt", "should match")
    )
    return cases


def _rollout_cases() -> list[tuple[str, dict[str, Any], str, str]]:
    """An Environment's rollout: each rule broken once, on an experiment."""
    counted = 'sum(increase(modelgate_predictions_total{arm="{{arm}}"}[{{window}}]))'
    primary = {"name": "approvals", "role": "Primary", "statistic": "Proportion",
               "better": "Higher", "count": counted, "successes": counted,
               "minimumDetectableEffect": 0.02}  # fmt: skip
    mean = {**primary, "statistic": "Mean", "sum": counted, "sumOfSquares": counted}
    del mean["successes"]
    experiment = {"split": {"champion": 50, "challenger": 50}, "deadline": "1h"}

    def rollout(**fields: Any) -> dict[str, Any]:
        merged = {"strategy": "Experiment", "experiment": experiment, "metrics": [primary],
                  **fields}  # fmt: skip
        return _environment(policy={"rollout": {k: v for k, v in merged.items() if v is not None}})

    cases = []
    for field, base in (("count", primary), ("successes", primary), ("sum", mean),
                        ("sumOfSquares", mean)):  # fmt: skip
        for broken, message in (
            ("sum(modelgate_predictions_total)", "a query must name {{arm}}"),
            ('up{arm="{{arm}}",team="{{team}}"}', "a query may name only"),
        ):
            cases.append((
                f"Environment experiment {field}: {message}",
                rollout(metrics=[{**base, field: broken}]),
                f"spec.policy.rollout.metrics[0].{field}",
                message,
            ))  # fmt: skip
    no_successes = {k: v for k, v in primary.items() if k != "successes"}
    no_effect = {k: v for k, v in primary.items() if k != "minimumDetectableEffect"}
    cases += [
        ("Environment experiment proportion without successes",
         rollout(metrics=[no_successes]), "spec.policy.rollout.metrics[0]",
         "a Proportion metric needs count and successes"),
        ("Environment experiment mean with successes",
         rollout(metrics=[{**mean, "successes": counted}]), "spec.policy.rollout.metrics[0]",
         "a Mean metric needs count, sum and sumOfSquares"),
        ("Environment experiment primary without an effect",
         rollout(metrics=[no_effect]), "spec.policy.rollout.metrics[0]",
         "a Primary metric needs minimumDetectableEffect"),
        ("Environment experiment split over 100",
         rollout(experiment={**experiment, "split": {"champion": 60, "challenger": 50}}),
         "spec.policy.rollout.experiment.split", "champion and challenger must add up to 100"),
        ("Environment experiment without its settings",
         rollout(experiment=None), "spec.policy.rollout",
         "set the settings of the strategy chosen and no other"),
        ("Environment experiment looks under a second",
         rollout(interval="500ms"), "spec.policy.rollout.interval",
         "interval is shorter than 1s"),
        ("Environment experiment without a primary",
         rollout(metrics=[]), "spec.policy.rollout",
         "an Experiment needs exactly one Primary metric"),
        ("Environment canary weights going down",
         rollout(strategy="Canary", experiment=None,
                 metrics=[{**no_effect, "role": "Guardrail", "margin": 0.01}],
                 canary={"steps": [{"weight": 50, "duration": "1m"},
                                   {"weight": 10, "duration": "1m"}]}),
         "spec.policy.rollout.canary.steps", "canary steps must give the new release more"),
    ]  # fmt: skip
    return cases


CEL_CASES = cel_cases()

# Transition rules (oldSelf) run on updates: (id, merge patch of the sample
# release, message start). The sample serves with ReferenceServer, no image.
TRANSITION_CASES = [
    ("model version", {"spec": {"model": {"version": "1.4.1"}}}, "spec.model is immutable"),
    ("serving", {"spec": {"serving": "Image", "image": "r.example.com/m:1"}}, "spec.serving is"),
    ("image added", {"spec": {"image": "registry.example.com/m:2"}}, "spec.image is immutable"),
    (
        "training params",
        {"spec": {"training": {"params": {"n_estimators": 300}}}},
        "spec.training is immutable",
    ),
    ("training seed", {"spec": {"training": {"seed": 7}}}, "spec.training is immutable"),
    ("registered source added", {"spec": {"mlflow": _MLFLOW}}, "spec.mlflow is immutable"),
    ("server added", {"spec": {"server": {"modelName": "m"}}}, "spec.server is immutable"),
    ("stored source added", {"spec": {"artifact": _ARTIFACT}}, "spec.artifact is immutable"),
]


def _cel_rules() -> set[tuple[str, str, str]]:
    """(kind, path with [] for items, message) of every CEL rule in the CRDs."""
    found: set[tuple[str, str, str]] = set()

    def walk(kind: str, node: dict[str, Any], path: str) -> None:
        for rule in node.get("x-kubernetes-validations", []):
            found.add((kind, path, rule["message"]))
        for name, child in node.get("properties", {}).items():
            walk(kind, child, f"{path}.{name}" if path else name)
        if isinstance(node.get("items"), dict):
            walk(kind, node["items"], f"{path}[]")

    for kind in CRD_INFO:
        walk(kind, build_crd(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "")
    return found


def test_one_rollback_request_per_environment(crds: ControlPlane, dry_run_namespace: str) -> None:
    """spec.promotion.rollbacks is a list-map keyed by environment."""
    release = _example("credit-risk/release.yaml")
    release["spec"]["promotion"]["rollbacks"] = [
        {"environment": "production", "requestedAt": f"2026-12-07T1{hour}:00:00Z"}
        for hour in (1, 2)
    ]
    refusal = _refusal(crds, dry_run_namespace, release)
    assert "spec.promotion.rollbacks[1]: Duplicate value" in refusal, refusal


def test_every_cel_rule_has_a_refusal_case() -> None:
    covered = {
        (document["kind"], re.sub(r"\[\d+\]", "[]", path), message)
        for _, document, path, message in CEL_CASES
    }
    covered |= {("ModelRelease", "spec", message) for _, _, message in TRANSITION_CASES}
    # A case covers a rule at or above the field it is refused at (a rule
    # with a fieldPath names a field under the object it is declared on).
    missing = [
        rule
        for rule in _cel_rules()
        if not any(
            rule[0] == kind
            and (path == rule[1] or path.startswith((f"{rule[1]}.", f"{rule[1]}[")))
            and rule[2].startswith(start)
            for kind, path, start in covered
        )
    ]
    assert missing == []


@pytest.mark.parametrize(
    ("document", "path", "message"),
    [case[1:] for case in CEL_CASES],
    ids=[case[0] for case in CEL_CASES],
)
def test_the_server_refuses_each_cel_violation_with_the_rule_message(
    crds: ControlPlane, dry_run_namespace: str, document: dict[str, Any], path: str, message: str
) -> None:
    refusal = _refusal(crds, dry_run_namespace, document)
    assert f"{path}: Invalid value" in refusal, refusal
    assert message in refusal, refusal


@pytest.mark.parametrize(
    ("patch", "message"),
    [case[1:] for case in TRANSITION_CASES],
    ids=[case[0] for case in TRANSITION_CASES],
)
def test_the_server_refuses_edits_of_what_defines_the_model(
    crds: ControlPlane, namespace: str, patch: dict[str, Any], message: str
) -> None:
    custom = client.CustomObjectsApi(crds.api_client())
    release = _example("credit-risk/release.yaml")
    custom.create_namespaced_custom_object(
        "modelgate.dev", "v1alpha1", namespace, "modelreleases", release
    )
    name = release["metadata"]["name"]
    with pytest.raises(client.ApiException) as refused:
        custom.patch_namespaced_custom_object(
            "modelgate.dev", "v1alpha1", namespace, "modelreleases", name, patch
        )
    assert refused.value.status == 422
    body = str(refused.value.body)
    assert message in body, body
    assert "create a new ModelRelease" in body, body
    # What may change still can: the promotion config.
    config = [{"environment": "production", "values": [{"name": "A", "value": "b"}]}]
    edited = custom.patch_namespaced_custom_object(
        "modelgate.dev",
        "v1alpha1",
        namespace,
        "modelreleases",
        name,
        {"spec": {"promotion": {"config": config}}},
    )
    assert edited["metadata"]["generation"] == 2


def test_unknown_fields_are_refused_by_name(crds: ControlPlane, dry_run_namespace: str) -> None:
    document = _example("credit-risk/gate.yaml")
    document["spec"]["treshold"] = 0.8  # a typo the schema does not know
    done = crds.kubectl(
        "apply",
        "-n",
        dry_run_namespace,
        "--dry-run=server",
        "-f",
        "-",
        stdin=yaml.safe_dump(document),
        check=False,
    )
    assert done.returncode != 0
    assert 'unknown field "spec.treshold"' in done.stderr, done.stderr
