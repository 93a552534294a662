"""The project's emulator fix-ups behave like the real API server."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from tests.support.emulator import RunningEmulator, running_emulator

RELEASES = "/apis/modelgate.dev/v1alpha1/namespaces/team/modelreleases"


@pytest.fixture(scope="module")
def api() -> Iterator[RunningEmulator]:
    with running_emulator() as server:
        yield server


def call(
    api: RunningEmulator,
    method: str,
    path: str,
    body: Any = None,
    content_type: str = "application/merge-patch+json",
) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(api.url + path, data=data, method=method)
    request.add_header("Content-Type", "application/json" if method == "POST" else content_type)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def release(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "modelgate.dev/v1alpha1",
        "kind": "ModelRelease",
        "metadata": {"name": name},
        "spec": {"model": {"name": "m", "version": "1"}},
    }


def test_create_stamps_metadata_and_answers_201(api: RunningEmulator) -> None:
    status, body = call(api, "POST", RELEASES, release("a"))
    assert status == 201
    metadata = body["metadata"]
    assert metadata["namespace"] == "team"
    assert metadata["generation"] == 1
    assert metadata["uid"]
    assert metadata["creationTimestamp"].endswith("Z")
    assert int(metadata["resourceVersion"]) > 0
    conflict, _ = call(api, "POST", RELEASES, release("a"))
    assert conflict == 409


def test_generate_name(api: RunningEmulator) -> None:
    body = release("")
    body["metadata"] = {"generateName": "gen-"}
    status, created = call(api, "POST", RELEASES, body)
    assert status == 201
    assert created["metadata"]["name"].startswith("gen-")
    assert len(created["metadata"]["name"]) == len("gen-") + 5


def test_spec_changes_bump_generation_status_changes_do_not(api: RunningEmulator) -> None:
    _, created = call(api, "POST", RELEASES, release("b"))
    first = int(created["metadata"]["resourceVersion"])
    _, patched = call(api, "PATCH", f"{RELEASES}/b", {"spec": {"model": {"version": "2"}}})
    assert patched["metadata"]["generation"] == 2
    assert int(patched["metadata"]["resourceVersion"]) > first
    _, labelled = call(api, "PATCH", f"{RELEASES}/b", {"metadata": {"labels": {"x": "y"}}})
    assert labelled["metadata"]["generation"] == 2
    _, status = call(api, "PATCH", f"{RELEASES}/b/status", {"status": {"phase": "Training"}})
    assert status["status"] == {"phase": "Training"}
    assert status["metadata"]["generation"] == 2
    # Only the spec change is recorded as one (the operator-never-writes-spec check).
    assert [p for p in api.emulator.spec_changes if p.endswith(f"{RELEASES}/b")] == [
        f"{RELEASES}/b"
    ]


def test_status_subresource_separation(api: RunningEmulator) -> None:
    call(api, "POST", RELEASES, release("c"))
    _, main = call(api, "PATCH", f"{RELEASES}/c", {"spec": {"x": 1}, "status": {"phase": "Hacked"}})
    assert "status" not in main
    _, sub = call(
        api, "PATCH", f"{RELEASES}/c/status", {"spec": {"x": 2}, "status": {"phase": "Ok"}}
    )
    assert sub["spec"]["x"] == 1
    assert sub["status"] == {"phase": "Ok"}


def test_json_patch_test_failure_is_422_and_stale_version_is_409(api: RunningEmulator) -> None:
    _, created = call(api, "POST", RELEASES, release("d"))
    version = created["metadata"]["resourceVersion"]
    ok, patched = call(
        api,
        "PATCH",
        f"{RELEASES}/d",
        [
            {"op": "test", "path": "/metadata/resourceVersion", "value": version},
            {"op": "add", "path": "/metadata/finalizers", "value": ["x"]},
        ],
        "application/json-patch+json",
    )
    assert ok == 200
    assert patched["metadata"]["finalizers"] == ["x"]
    stale, _ = call(
        api,
        "PATCH",
        f"{RELEASES}/d",
        [{"op": "test", "path": "/metadata/resourceVersion", "value": version}],
        "application/json-patch+json",
    )
    assert stale == 422
    conflict, _ = call(api, "PATCH", f"{RELEASES}/d", {"metadata": {"resourceVersion": version}})
    assert conflict == 409


def test_list_has_kind_and_version(api: RunningEmulator) -> None:
    # Its own object: the tests run in random order, and an empty store's
    # version is 0.
    _, created = call(api, "POST", RELEASES, release("listed"))
    status, listing = call(api, "GET", RELEASES)
    assert status == 200
    assert listing["kind"] == "ModelReleaseList"
    assert listing["apiVersion"] == "modelgate.dev/v1alpha1"
    newest = int(created["metadata"]["resourceVersion"])
    assert int(listing["metadata"]["resourceVersion"]) >= newest > 0


def read_watch(api: RunningEmulator, query: str, seconds: float) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    request = urllib.request.Request(f"{api.url}{RELEASES}?watch=true&{query}")
    started = time.monotonic()
    with urllib.request.urlopen(request, timeout=seconds + 10) as response:
        for line in response:
            if line.strip():
                events.append(json.loads(line))
    assert time.monotonic() - started < seconds + 5
    return events


def test_watch_resumes_from_resource_version_and_times_out(api: RunningEmulator) -> None:
    for name in ("w1", "w2", "w3"):  # objects of its own: tests run in any order
        call(api, "POST", RELEASES, release(name))
    _, listing = call(api, "GET", RELEASES)
    since = listing["metadata"]["resourceVersion"]
    replay = read_watch(api, "timeoutSeconds=1", 1)
    assert len(replay) >= 3  # every existing object is replayed without a version
    creator = threading.Timer(0.3, lambda: call(api, "POST", RELEASES, release("e")))
    creator.start()
    events = read_watch(api, f"resourceVersion={since}&timeoutSeconds=2", 2)
    creator.join()
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [("ADDED", "e")]


def test_kubernetes_client_create_returns_the_object(api: RunningEmulator) -> None:
    configuration = client.Configuration()
    configuration.host = api.url
    with client.ApiClient(configuration) as api_client:
        core = client.CoreV1Api(api_client)
        created = core.create_namespaced_config_map(
            "team", {"metadata": {"name": "cfg"}, "data": {"A": "1"}}
        )
        assert created is not None
        assert created.metadata.resource_version
        read = core.read_namespaced_config_map("cfg", "team")
        assert read.data == {"A": "1"}


def test_patching_a_kind_without_status_subresource_keeps_the_patch(api: RunningEmulator) -> None:
    with client.ApiClient(_configuration(api)) as api_client:
        core = client.CoreV1Api(api_client)
        core.create_namespaced_config_map(
            "team", {"metadata": {"name": "cfg2"}, "data": {"A": "1"}}
        )
        patched = core.patch_namespaced_config_map(
            "cfg2", "team", {"metadata": {"labels": {"x": "y"}}, "data": {"B": "2"}}
        )
        assert patched.data == {"A": "1", "B": "2"}
        assert patched.metadata.labels == {"x": "y"}


def _configuration(api: RunningEmulator) -> client.Configuration:
    configuration = client.Configuration()
    configuration.host = api.url
    return configuration
