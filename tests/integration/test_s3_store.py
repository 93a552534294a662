"""The S3 artifact store against a real S3-compatible server (moto, own process)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelgate.api.modelrelease import ArtifactRecord
from modelgate.backends.base import (
    ArtifactAccessError,
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactUnavailableError,
)
from modelgate.backends.s3 import (
    LazyClient,
    S3ArtifactStore,
    S3Settings,
    check_endpoint,
    list_uri,
    make_client,
    read_uri,
)
from modelgate.trainer import contract
from modelgate.trainer.train import ContractError, train
from tests.conftest import EXAMPLES
from tests.support.faulty_proxy import FaultyProxy
from tests.support.s3server import S3Server, running_s3
from tests.unit.test_trainer import contract_env


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with running_s3(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


@pytest.fixture
def store(s3: S3Server, request: pytest.FixtureRequest) -> S3ArtifactStore:
    bucket = f"artifacts-{abs(hash(request.node.name)) % 10**8}"
    settings = S3Settings(
        bucket=bucket, prefix="team/models", endpoint_url=s3.endpoint, path_style=True
    )
    client = make_client(settings)
    client.create_bucket(Bucket=bucket)
    return S3ArtifactStore(settings, client)


def test_round_trip_is_content_addressed(store: S3ArtifactStore) -> None:
    data = b"y_true,y_pred\n1,1\n"
    record = store.put_bytes(data, "predictions")
    digest = hashlib.sha256(data).hexdigest()
    assert record.sha256 == digest
    assert record.uri == f"s3://{store.settings.bucket}/team/models/sha256/{digest[:2]}/{digest}"
    assert record.size == len(data)
    assert store.get_bytes(record) == data
    again = store.put_bytes(data, "predictions-copy")
    assert again.uri == record.uri
    assert (
        len(list_uri(store.client, f"s3://{store.settings.bucket}/team/models/sha256/{digest[:2]}"))
        == 1
    )


def test_tampered_object_fails_closed(store: S3ArtifactStore) -> None:
    record = store.put_bytes(b"the real model", "model")
    bucket, key = record.uri.removeprefix("s3://").split("/", 1)
    store.client.put_object(Bucket=bucket, Key=key, Body=b"a malicious model")
    with pytest.raises(ArtifactIntegrityError, match="refusing to use it"):
        store.get_bytes(record)


@pytest.fixture
def proxied(store: S3ArtifactStore, s3: S3Server) -> Iterator[tuple[S3ArtifactStore, FaultyProxy]]:
    """The same bucket, read through a proxy that misbehaves on request."""
    proxy = FaultyProxy(s3.endpoint).start()
    settings = S3Settings(
        bucket=store.settings.bucket,
        prefix=store.settings.prefix,
        endpoint_url=proxy.endpoint,
        path_style=True,
    )
    try:
        yield S3ArtifactStore(settings), proxy
    finally:
        proxy.stop()


@pytest.mark.parametrize("keep_checksums", [False, True], ids=["sha256", "store-checksum"])
def test_bytes_corrupted_on_the_way_fail_closed(
    proxied: tuple[S3ArtifactStore, FaultyProxy], keep_checksums: bool
) -> None:
    """Whether the store's own checksum or the recorded SHA-256 notices, the
    damaged bytes are refused with a permanent error (no retry loop)."""
    store, proxy = proxied
    record = store.put_bytes(b"y_true,y_pred\n1,1\n" * 50, "predictions")
    proxy.corrupt("GET", "/sha256/", keep_checksums=keep_checksums)
    with pytest.raises(ArtifactIntegrityError) as refused:
        store.get_bytes(record)
    assert not refused.value.transient
    expected = "corrupted in the store or on the way" if keep_checksums else "refusing to use it"
    assert expected in str(refused.value)
    assert store.get_bytes(record).startswith(b"y_true")  # the next read is clean


def test_throttling_and_a_dead_endpoint_are_retried_then_transient(
    proxied: tuple[S3ArtifactStore, FaultyProxy],
) -> None:
    store, proxy = proxied
    record = store.put_bytes(b"model bytes", "model")
    # Two SlowDowns: botocore's own retries absorb them.
    brief = proxy.fail("GET", "/sha256/", 503, times=2)
    assert store.get_bytes(record) == b"model bytes"
    assert brief.hits == 2
    # More than its attempts: a transient error for the operator to retry later.
    endless = proxy.fail("GET", "/sha256/", 503, times=50)
    with pytest.raises(ArtifactUnavailableError, match="SlowDown") as throttled:
        store.get_bytes(record)
    assert throttled.value.transient
    # botocore's retries["max_attempts"] counts retries after the first try.
    assert endless.hits == store.settings.max_attempts + 1
    endless.remaining = 0
    proxy.drop("GET", "/sha256/", times=50)
    with pytest.raises(ArtifactUnavailableError, match="unreachable") as down:
        store.get_bytes(record)
    assert down.value.transient


def test_missing_object_and_missing_bucket(store: S3ArtifactStore, s3: S3Server) -> None:
    missing = ArtifactRecord(
        name="model", uri=store.uri(store.key("0" * 64)), sha256="0" * 64, size=1
    )
    with pytest.raises(ArtifactNotFoundError, match="not found"):
        store.get_bytes(missing)
    nowhere = S3ArtifactStore(
        S3Settings(bucket="no-such-bucket", endpoint_url=s3.endpoint, path_style=True)
    )
    with pytest.raises(ArtifactAccessError) as refused:
        nowhere.put_bytes(b"x", "model")
    # Said as what it is, not as a refused access.
    assert "the bucket does not exist (NoSuchBucket)" in str(refused.value)
    assert "check the bucket name and the S3 endpoint" in str(refused.value)
    assert "access refused" not in str(refused.value)
    assert not ArtifactAccessError("x").transient


def test_unreachable_endpoint_is_transient(tmp_path: Path) -> None:
    settings = S3Settings(
        bucket="b",
        endpoint_url="http://127.0.0.1:9",
        path_style=True,
        max_attempts=1,
        connect_timeout=0.5,
    )
    store = S3ArtifactStore(settings)
    with pytest.raises(ArtifactUnavailableError) as caught:
        store.put_bytes(b"x", "model")
    assert caught.value.transient


def test_read_uri_reports_the_uri(store: S3ArtifactStore) -> None:
    with pytest.raises(ArtifactNotFoundError, match=f"s3://{store.settings.bucket}/nope"):
        read_uri(store.client, f"s3://{store.settings.bucket}/nope")


def test_trainer_reads_and_writes_s3(
    store: S3ArtifactStore, s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = store.settings.bucket
    data = EXAMPLES / "credit-risk" / "data"
    for name in ("train.csv", "eval.csv"):
        store.client.put_object(Bucket=bucket, Key=f"data/{name}", Body=(data / name).read_bytes())
    monkeypatch.setenv("MODELGATE_S3_ENDPOINT", s3.endpoint)
    monkeypatch.setenv("MODELGATE_S3_PATH_STYLE", "true")
    env = contract_env(tmp_path / "out")
    env.update(
        {
            contract.TRAIN_DATA: f"s3://{bucket}/data/train.csv",
            contract.EVAL_DATA: f"s3://{bucket}/data/eval.csv",
            contract.OUTPUT_URI: f"s3://{bucket}/runs/job-1",
        }
    )
    metadata = train(env)
    outputs = list_uri(store.client, f"s3://{bucket}/runs/job-1")
    assert sorted(uri.rsplit("/", 1)[1] for uri in outputs) == sorted(contract.OUTPUTS.values())
    expected = hashlib.sha256((data / "train.csv").read_bytes()).hexdigest()
    assert metadata["data"]["train"]["sha256"] == expected
    env[contract.TRAIN_DATA] = f"s3://{bucket}/data/missing.csv"
    with pytest.raises(ContractError, match="cannot read s3://"):
        train(env)


def test_lazy_client_is_built_at_first_use_and_then_kept(s3: S3Server) -> None:
    settings = S3Settings(bucket="lazy-bucket", endpoint_url=s3.endpoint, path_style=True)
    client = LazyClient(settings)
    assert not client.built
    store = S3ArtifactStore(settings, client)
    assert not client.built, "a store must not build the client before it reads or writes"
    client.create_bucket(Bucket="lazy-bucket")
    assert client.built
    record = store.put_bytes(b"a,b\n1,2\n", "data")
    assert store.get_bytes(record) == b"a,b\n1,2\n"
    first = client._client
    client.head_object(Bucket="lazy-bucket", Key=store.key(record.sha256))
    assert client._client is first


@pytest.mark.parametrize("endpoint", ["minio:9000", "ftp://minio:9000", "http://"])
def test_a_bad_endpoint_is_refused_naming_the_setting(endpoint: str) -> None:
    with pytest.raises(ValueError, match=r"MODELGATE_S3_ENDPOINT=.*http\(s\)://host\[:port\]"):
        check_endpoint(endpoint, "MODELGATE_S3_ENDPOINT")
    with pytest.raises(ValueError, match="endpoint_url="):
        LazyClient(S3Settings(bucket="b", endpoint_url=endpoint))
