"""The operator's watches on the real API server: listed once, then followed
(label-selected, resumed where the server ended them, never listed again
while the server keeps the version), and stopped at once."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from modelgate.backends import informers
from modelgate.backends.informers import Informer, Resource
from tests.support.cluster import wait_for
from tests.support.controlplane import ControlPlane

CONFIG_MAPS = Resource("v1", "configmaps", "app.kubernetes.io/managed-by=modelgate")


@pytest.fixture
def namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"informer-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(control_plane.api_client())
    core.create_namespace({"metadata": {"name": name}})
    yield name
    core.delete_namespace(name)


def _config_map(name: str, managed: bool = True, value: str = "1") -> dict[str, Any]:
    labels = {"app.kubernetes.io/managed-by": "modelgate" if managed else "someone-else"}
    return {"metadata": {"name": name, "labels": labels}, "data": {"v": value}}


def test_an_informer_lists_once_and_follows_its_objects_across_watch_ends(
    control_plane: ControlPlane, namespace: str
) -> None:
    api = control_plane.api_client()
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(namespace, _config_map("before"))
    core.create_namespaced_config_map(namespace, _config_map("theirs", managed=False))
    seen: list[tuple[str, str]] = []
    informer = Informer(
        api,
        CONFIG_MAPS,
        namespace,
        lambda _, kind, obj: seen.append((kind, obj["metadata"]["name"])),
        watch_seconds=1,  # the server ends each watch after a second
    ).start()
    try:
        assert informer.synced.wait(30)
        assert [o["metadata"]["name"] for o in informer.items(namespace)] == ["before"]
        time.sleep(3)  # a few watches ended by the server and resumed
        core.create_namespaced_config_map(namespace, _config_map("after"))
        core.patch_namespaced_config_map("before", namespace, {"data": {"v": "2"}})
        core.delete_namespaced_config_map("after", namespace)
        wait_for(lambda: ("DELETED", "after") in seen, 30, "the deletion to be seen")
        before = informer.get(namespace, "before")
        assert before is not None
        assert before["data"] == {"v": "2"}
        # The server's managedFields are dropped: memory for what is read.
        assert core.read_namespaced_config_map("before", namespace).metadata.managed_fields
        assert "managedFields" not in before["metadata"]
        assert informer.get(namespace, "after") is None
        assert ("ADDED", "after") in seen
        assert ("MODIFIED", "before") in seen
        assert all(name != "theirs" for _, name in seen)  # not ours: never sent
        assert informer.lists == 1  # resumed from its version, never listed again
    finally:
        started = time.monotonic()
        informer.stop()
        assert time.monotonic() - started < 2  # a watch blocked on its socket ends at once


def test_what_the_operator_wrote_is_not_undone_by_an_older_event(
    control_plane: ControlPlane, namespace: str
) -> None:
    api = control_plane.api_client()
    core = client.CoreV1Api(api)
    informer = Informer(api, CONFIG_MAPS, namespace).start()
    try:
        assert informer.synced.wait(30)
        created = api.sanitize_for_serialization(
            core.create_namespaced_config_map(namespace, _config_map("mine"))
        )
        newer = api.sanitize_for_serialization(
            core.patch_namespaced_config_map("mine", namespace, {"data": {"v": "2"}})
        )
        informer.remember(newer)
        informer._put("MODIFIED", created, notify=False)  # the create's event, arriving late
        held = informer.get(namespace, "mine")
        assert held is not None
        assert held["data"] == {"v": "2"}
    finally:
        informer.stop()


def test_a_listing_comes_in_pages_of_one_consistent_version(
    control_plane: ControlPlane, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(informers, "LIST_PAGE", 2)
    api = control_plane.api_client()
    core = client.CoreV1Api(api)
    for index in range(5):
        core.create_namespaced_config_map(namespace, _config_map(f"page-{index}"))
    informer = Informer(api, CONFIG_MAPS, namespace).start()
    try:
        assert informer.synced.wait(30)
        names = sorted(o["metadata"]["name"] for o in informer.items(namespace))
        assert names == [f"page-{index}" for index in range(5)]
        assert informer.lists == 1  # three pages, one listing
        # The watch goes on from the listing's version: a change after it is seen.
        core.patch_namespaced_config_map("page-4", namespace, {"data": {"v": "2"}})
        wait_for(
            lambda: (informer.get(namespace, "page-4") or {}).get("data") == {"v": "2"},
            30,
            "the change after the paged listing",
        )
    finally:
        informer.stop()
