"""An artifact store that refuses the operator: a clear condition, not a crash.

moto enforces signatures and IAM here: the training pods get the credentials
of an allowed user, the operator keys nobody knows. The store answers 403
when the operator reads what the Job wrote, which no retry can fix.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from kubernetes import client

from tests.integration.test_operator import BUCKET, SAMPLE, _documents, conditions, release_document
from tests.support.cluster import (
    Controllers,
    api_client,
    create,
    get,
    operator_environment,
    patched_environ,
    running_operator,
    seed_sample_data,
    start_controllers,
    wait_for,
)
from tests.support.emulator import RunningEmulator, running_emulator
from tests.support.s3server import AUTH_AFTER, CREDENTIALS, allowed_user, running_s3

NAMESPACE = "team-refused"


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[RunningEmulator, client.ApiClient, Controllers, dict[str, str]]]:
    with running_s3(tmp_path_factory.mktemp("moto") / "moto.log", AUTH_AFTER) as s3:
        trainer = allowed_user(s3)
        with patched_environ(trainer):
            seed_sample_data(s3, BUCKET, SAMPLE / "data")
        # The operator keeps CREDENTIALS, which the server no longer accepts.
        with running_emulator() as emulator, operator_environment(emulator, s3, BUCKET):
            api = api_client(emulator)
            controllers = start_controllers(api, s3, trainer)
            try:
                with running_operator():
                    yield emulator, api, controllers, trainer
            finally:
                controllers.stop()
                assert controllers.errors == []


def test_refused_store_stalls_the_release_with_a_reason_and_an_event(
    world: tuple[RunningEmulator, client.ApiClient, Controllers, dict[str, str]],
) -> None:
    emulator, api, controllers, trainer = world
    for document in _documents("gate.yaml") + _documents("environments.yaml"):
        create(api, document, NAMESPACE)
    name = create(api, release_document(), NAMESPACE)["metadata"]["name"]

    def stalled() -> bool:
        stall = conditions(get(api, "ModelRelease", NAMESPACE, name)).get("Stalled") or {}
        return stall.get("reason") == "ArtifactStoreError"

    wait_for(
        stalled,
        90,
        "Stalled=True ArtifactStoreError",
        lambda: get(api, "ModelRelease", NAMESPACE, name).get("status"),
    )
    # The training Job ran (with the allowed user's keys) and its outputs exist;
    # only the operator is refused.
    assert len(controllers.jobs_run) == 1
    release = get(api, "ModelRelease", NAMESPACE, name)
    found = conditions(release)
    assert found["Stalled"]["status"] == "True"
    assert found["Ready"]["status"] == "False"
    assert found["Ready"]["reason"] == "ArtifactStoreError"
    message = found["Ready"]["message"]
    assert f"s3://{BUCKET}/modelgate/runs/{NAMESPACE}/" in message
    assert "access refused (InvalidAccessKeyId)" in message
    assert "credentials Secret" in message  # says what to fix
    events = [
        e for e in emulator.objects("events", NAMESPACE) if e.get("reason") == "ArtifactStoreError"
    ]
    assert events
    assert {e["type"] for e in events} == {"Warning"}
    # Nothing secret leaks into status or events.
    published = json.dumps(release) + json.dumps(events)
    for secret in (trainer["AWS_SECRET_ACCESS_KEY"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"]):
        assert secret not in published
    # Permanent: the operator gave up on it instead of retrying in a loop; the
    # Job stays for inspection.
    runs = list(controllers.jobs_run)
    jobs = client.BatchV1Api(api).list_namespaced_job(NAMESPACE).items
    assert [job.metadata.name for job in jobs] == runs
