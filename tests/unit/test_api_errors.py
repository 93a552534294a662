"""How the operator classifies the API server's refusals: what passes by
itself is retried soon, the rest is reported with the server's own words."""

from __future__ import annotations

import json

import pytest
from kubernetes.client.exceptions import ApiException

from modelgate.backends.kube import KubeTransientError, classify_api_error


def refusal(status: int, reason: str, message: str | None) -> ApiException:
    error = ApiException(status=status, reason=reason)
    body = {"kind": "Status", "status": "Failure", "code": status}
    if message is not None:
        body["message"] = message
    error.body = json.dumps(body).encode()
    return error


def test_an_owner_kind_the_api_server_does_not_resolve_yet_is_retried_soon() -> None:
    """Found on the real node: a release applied right after `make deploy`
    installed the CRDs had its training Job refused by the admission of
    blockOwnerDeletion until the server's discovery caught up."""
    error = refusal(
        403,
        "Forbidden",
        'jobs.batch "m-1-train-d91c1618" is forbidden: cannot set blockOwnerDeletion in this '
        "case because cannot find RESTMapping for APIVersion modelgate.dev/v1alpha1 Kind "
        'ModelRelease: no matches for kind "ModelRelease" in version "modelgate.dev/v1alpha1"',
    )
    classified = classify_api_error(error, "creating Job m-1-train-d91c1618")
    assert isinstance(classified, KubeTransientError)
    assert classified.delay <= 5
    assert "does not resolve the owner's kind yet" in str(classified)


def test_other_refusals_are_reported_with_the_servers_message() -> None:
    error = refusal(
        403,
        "Forbidden",
        'jobs.batch is forbidden: User "system:serviceaccount:modelgate-system:modelgate" '
        'cannot create resource "jobs" in API group "batch" in the namespace "team"',
    )
    classified = classify_api_error(error, "creating Job m-1-train")
    assert not isinstance(classified, KubeTransientError)
    assert str(classified) == (
        "creating Job m-1-train: API server refused the request (403: Forbidden): jobs.batch is "
        'forbidden: User "system:serviceaccount:modelgate-system:modelgate" cannot create '
        'resource "jobs" in API group "batch" in the namespace "team"'
    )


@pytest.mark.parametrize("body", [None, b"not json", b"[1, 2]"])
def test_a_refusal_without_a_readable_status_keeps_the_reason(body: bytes | None) -> None:
    error = ApiException(status=422, reason="Unprocessable Entity")
    error.body = body
    classified = classify_api_error(error, "creating Job j")
    refused = "API server refused the request (422: Unprocessable Entity)"
    assert str(classified) == f"creating Job j: {refused}"
