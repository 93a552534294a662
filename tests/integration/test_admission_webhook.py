"""The operator's admission webhooks, called as the API server calls them.

The real operator process serves them (plain HTTP here; TLS in a cluster). The
test POSTs AdmissionReview requests like the API server does and reads the
answers: allowed or not, the message, warnings, and the JSON patch.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from modelgate.handlers import webhook_server
from modelgate.settings import OperatorSettings
from tests.integration.test_operator import _documents, release_document
from tests.support.cluster import api_client, create, operator_command, wait_for
from tests.support.emulator import running_emulator
from tests.support.s3server import free_port

NAMESPACE = "team-admission"
ALICE = {"username": "alice@example.com", "groups": ["system:authenticated", "ml-leads"]}


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, client.ApiClient]]:
    """`python -m modelgate operator` serving its webhooks, as in a cluster
    (a process of its own: webhooks register only where they are served)."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("operator") / "operator.log"
    with running_emulator() as emulator:
        api = api_client(emulator)
        for document in _documents("gate.yaml") + _documents("environments.yaml"):
            if document["metadata"]["name"] == "production":
                document["spec"]["policy"]["approvers"] = ["group:ml-leads"]
            create(api, document, NAMESPACE)
        env = {
            **os.environ,
            "MODELGATE_API_SERVER": emulator.url,
            "MODELGATE_WEBHOOK_PORT": str(port),
            "MODELGATE_WEBHOOK_INSECURE": "true",
        }
        with log_path.open("w") as log:
            process = subprocess.Popen(
                operator_command(),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_for(
                lambda: _listening(port),
                60,
                "the webhook server to listen",
                lambda: log_path.read_text()[-3000:],
            )
            yield f"http://127.0.0.1:{port}", api
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def review(
    url: str,
    handler: str,
    obj: dict[str, Any],
    old: dict[str, Any] | None = None,
    user: dict[str, Any] | None = None,
) -> dict[str, Any]:
    kind = obj["kind"]
    plural = {"ModelRelease": "modelreleases", "Environment": "environments"}[kind]
    obj = {**obj, "metadata": {**obj["metadata"], "namespace": NAMESPACE}}
    request = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0b1c2d3e",
            "kind": {"group": "modelgate.dev", "version": "v1alpha1", "kind": kind},
            "resource": {"group": "modelgate.dev", "version": "v1alpha1", "resource": plural},
            "name": obj["metadata"]["name"],
            "namespace": NAMESPACE,
            "operation": "UPDATE" if old is not None else "CREATE",
            "userInfo": user or ALICE,
            "object": obj,
            "oldObject": old,
            "dryRun": False,
        },
    }
    call = urllib.request.Request(
        f"{url}/{handler}",
        data=json.dumps(request).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(call, timeout=30) as answer:
        response: dict[str, Any] = json.loads(answer.read())["response"]
    assert response["uid"] == "0b1c2d3e"
    return response


def test_the_seed_story_is_rejected_before_it_is_stored(
    webhook: tuple[str, client.ApiClient],
) -> None:
    url, _ = webhook
    response = review(url, "validate-release", release_document("release-backtest-leak.yaml"))
    assert response["allowed"] is False
    assert response["status"]["code"] == 422
    message = response["status"]["message"]
    assert "environment production: FEATURE_STORE_URL='https://features.backtest" in message
    assert "violates rule leakage:backtest" in message


def test_a_good_release_is_admitted(webhook: tuple[str, client.ApiClient]) -> None:
    url, _ = webhook
    response = review(url, "validate-release", release_document())
    assert response["allowed"] is True
    assert "status" not in response


def test_malformed_release_names_the_field(webhook: tuple[str, client.ApiClient]) -> None:
    url, _ = webhook
    document = release_document()
    document["spec"]["gate"] = {"nmae": "credit-gate"}
    response = review(url, "validate-release", document)
    assert response["allowed"] is False
    assert "spec.gate.nmae: unknown field" in response["status"]["message"]


def test_approvals_are_stamped_with_the_requester(webhook: tuple[str, client.ApiClient]) -> None:
    url, _ = webhook
    old = release_document()
    new = release_document()
    new["spec"]["promotion"]["approvals"] = [
        {"environment": "production", "approvedBy": "someone-else", "comment": "CHG-7"}
    ]
    response = review(url, "stamp-approvals", new, old)
    assert response["allowed"] is True
    assert response["patchType"] == "JSONPatch"
    operations = json.loads(base64.b64decode(response["patch"]))
    patched = {op["path"]: op.get("value") for op in operations}
    approved_by = [v for p, v in patched.items() if p.endswith("approvedBy")]
    assert approved_by == ["alice@example.com"]
    assert any(p.endswith("approvedAt") for p in patched)
    # The stamped release passes validation: alice is in group ml-leads.
    new["spec"]["promotion"]["approvals"][0]["approvedBy"] = "alice@example.com"
    assert review(url, "validate-release", new, old)["allowed"] is True
    # Bob is not an approver of production.
    bob = {"username": "bob@example.com", "groups": ["system:authenticated"]}
    new["spec"]["promotion"]["approvals"][0]["approvedBy"] = "bob@example.com"
    refused = review(url, "validate-release", new, old, bob)
    assert refused["allowed"] is False
    assert (
        "bob@example.com may not approve promotions to production" in (refused["status"]["message"])
    )


def test_metadata_only_updates_always_pass(webhook: tuple[str, client.ApiClient]) -> None:
    """The operator's own annotation and finalizer patches must never be blocked,
    even on a release that would no longer be admitted."""
    url, _ = webhook
    leak = release_document("release-backtest-leak.yaml")
    touched = json.loads(json.dumps(leak))
    touched["metadata"]["annotations"] = {"modelgate.dev/last-handled-configuration": "{}"}
    assert review(url, "validate-release", touched, leak)["allowed"] is True


def test_environment_with_a_bad_regex_is_rejected(webhook: tuple[str, client.ApiClient]) -> None:
    url, _ = webhook
    [production] = [
        d for d in _documents("environments.yaml") if d["metadata"]["name"] == "production"
    ]
    production["spec"]["configRules"][0]["pattern"] = "^https://([a-z.]+$"
    response = review(url, "validate-environment", production)
    assert response["allowed"] is False
    message = response["status"]["message"]
    assert message.startswith(
        "spec.configRules[0].pattern: pattern '^https://([a-z.]+$' is not a valid regex"
    )


def test_webhook_without_tls_files_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="MODELGATE_WEBHOOK_CERT and MODELGATE_WEBHOOK_KEY"):
        webhook_server(OperatorSettings(webhook_port=9443))
    served = webhook_server(
        OperatorSettings(webhook_port=9443, webhook_cert="/tls/tls.crt", webhook_key="/tls/tls.key")
    )
    assert (served.port, served.certfile, served.pkeyfile) == (9443, "/tls/tls.crt", "/tls/tls.key")
