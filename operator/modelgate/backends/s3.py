"""Content-addressed artifacts on S3 or any S3-compatible server (boto3).

Keys are ``PREFIX/sha256/ab/<sha256>``: the same bytes are stored once and an
artifact can never change under its name. Every read is verified against the
recorded SHA-256. Throttling and 5xx answers are retried by botocore with
backoff; what remains is classified so the operator can tell "try again" from
"fix the configuration".
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    FlexibleChecksumError,
    ReadTimeoutError,
)

from modelgate.api.modelrelease import ArtifactRecord
from modelgate.backends.base import (
    HASH_CHUNK,
    ArtifactAccessError,
    ArtifactError,
    ArtifactIntegrityError,
    ArtifactNotFoundError,
    ArtifactUnavailableError,
    verify_file,
)

# Environment variables understood by the trainer and the operator, next to
# the standard AWS_* credentials.
ENDPOINT_ENV = "MODELGATE_S3_ENDPOINT"
PATH_STYLE_ENV = "MODELGATE_S3_PATH_STYLE"
REGION_ENV = "AWS_REGION"

NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
ACCESS_CODES = {
    "AccessDenied",
    "403",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "NoSuchBucket",
    "AllAccessDisabled",
}


@dataclass(frozen=True)
class S3Settings:
    bucket: str
    prefix: str = "modelgate"
    endpoint_url: str | None = None
    region: str | None = None
    path_style: bool = False
    max_attempts: int = 5
    connect_timeout: float = 5.0
    read_timeout: float = 30.0

    @classmethod
    def from_env(cls, bucket: str, prefix: str = "modelgate") -> S3Settings:
        return cls(
            bucket=bucket,
            prefix=prefix,
            endpoint_url=os.environ.get(ENDPOINT_ENV) or None,
            region=os.environ.get(REGION_ENV) or None,
            path_style=os.environ.get(PATH_STYLE_ENV, "").lower() in {"1", "true", "yes"},
        )


def make_client(settings: S3Settings) -> Any:
    config = Config(
        retries={"max_attempts": settings.max_attempts, "mode": "adaptive"},
        s3={"addressing_style": "path" if settings.path_style else "auto"},
        connect_timeout=settings.connect_timeout,
        read_timeout=settings.read_timeout,
    )
    # A session of its own: boto3's default session caches the first
    # credentials it finds for the whole process.
    return boto3.session.Session().client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        config=config,
    )


def check_endpoint(endpoint_url: str | None, setting: str) -> None:
    """An endpoint boto3 would refuse, refused where the setting is read."""
    if endpoint_url is None:
        return
    parts = urlsplit(endpoint_url)
    if parts.scheme not in {"http", "https"} or not parts.netloc:
        raise ValueError(
            f"{setting}={endpoint_url!r} is not an http(s)://host[:port] URL; set it to the "
            "S3-compatible server's address, or leave it empty for AWS"
        )


class LazyClient:
    """An S3 client built at its first use.

    The operator reads S3 only while a release trains or is evaluated; a
    client costs ~14 MB of memory that an operator at rest does not need.
    boto3 clients are thread-safe once built; building one is guarded.
    """

    def __init__(self, settings: S3Settings, setting: str = "endpoint_url") -> None:
        """``setting``: what a bad endpoint's error calls it (where it was read)."""
        check_endpoint(settings.endpoint_url, setting)
        self._settings = settings
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._client is not None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            # copy and pickle probe before __init__ ran: no recursion into _lock.
            raise AttributeError(name)
        with self._lock:
            if self._client is None:
                self._client = make_client(self._settings)
        return getattr(self._client, name)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc or not parts.path.strip("/"):
        raise ValueError(f"{uri!r} is not an s3://bucket/key URI")
    return parts.netloc, parts.path.lstrip("/")


def classify(error: Exception, what: str) -> ArtifactError:
    """Turn a boto error into an ArtifactError saying whether to retry."""
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        if code in NOT_FOUND_CODES:
            return ArtifactNotFoundError(f"{what}: not found ({code})")
        if code == "NoSuchBucket":
            # Permanent like a refusal, but not one: the store has no such
            # bucket (or, behind a custom endpoint, read the host as a bucket).
            return ArtifactAccessError(
                f"{what}: the bucket does not exist ({code}); check the bucket name and "
                "the S3 endpoint (a store that takes virtual-hosted requests needs pathStyle)"
            )
        if code in ACCESS_CODES:
            return ArtifactAccessError(
                f"{what}: access refused ({code}); check the bucket name, the credentials "
                "Secret and the bucket policy"
            )
        if status >= 500 or code in {"SlowDown", "Throttling", "RequestTimeout"}:
            return ArtifactUnavailableError(f"{what}: S3 answered {code or status}, retrying")
        return ArtifactAccessError(f"{what}: S3 refused the request ({code or status})")
    if isinstance(error, FlexibleChecksumError):
        # Bytes that do not match the store's own checksum: fail closed, as
        # for a SHA-256 mismatch; never use them, never loop on them.
        return ArtifactIntegrityError(f"{what}: corrupted in the store or on the way ({error})")
    if isinstance(error, EndpointConnectionError | ConnectionClosedError | ReadTimeoutError):
        return ArtifactUnavailableError(f"{what}: S3 endpoint unreachable ({error})")
    return ArtifactUnavailableError(f"{what}: {error}")


class S3ArtifactStore:
    """The artifact store the operator uses; same interface as the local one."""

    def __init__(self, settings: S3Settings, client: Any = None) -> None:
        self.settings = settings
        self.client = client or make_client(settings)

    def key(self, digest: str) -> str:
        prefix = self.settings.prefix.strip("/")
        return (
            f"{prefix}/sha256/{digest[:2]}/{digest}" if prefix else f"sha256/{digest[:2]}/{digest}"
        )

    def uri(self, key: str) -> str:
        return f"s3://{self.settings.bucket}/{key}"

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.settings.bucket, Key=key)
        except ClientError as error:
            classified = classify(error, self.uri(key))
            if isinstance(classified, ArtifactNotFoundError):
                return False
            raise classified from error
        except BotoCoreError as error:
            raise classify(error, self.uri(key)) from error
        return True

    def put_bytes(self, data: bytes, name: str) -> ArtifactRecord:
        digest = hashlib.sha256(data).hexdigest()
        key = self.key(digest)
        if not self._exists(key):
            try:
                self.client.put_object(
                    Bucket=self.settings.bucket,
                    Key=key,
                    Body=data,
                    Metadata={"sha256": digest, "artifact": name},
                )
            except (ClientError, BotoCoreError) as error:
                raise classify(error, self.uri(key)) from error
        return ArtifactRecord(name=name, uri=self.uri(key), sha256=digest, size=len(data))

    def put_uri(self, uri: str, name: str) -> ArtifactRecord:
        """Store the object at ``uri`` under its content address without
        holding it in memory: hash it as it streams, then copy it server-side
        (only if unchanged since: ``CopySourceIfMatch`` on its ETag)."""
        bucket, key = parse_s3_uri(uri)
        digest, size = hashlib.sha256(), 0
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
            etag = response["ETag"]
            for chunk in response["Body"].iter_chunks(HASH_CHUNK):
                digest.update(chunk)
                size += len(chunk)
        except (ClientError, BotoCoreError) as error:
            raise classify(error, uri) from error
        target = self.key(digest.hexdigest())
        if not self._exists(target):
            try:
                self.client.copy(
                    {"Bucket": bucket, "Key": key},
                    self.settings.bucket,
                    target,
                    ExtraArgs={
                        "CopySourceIfMatch": etag,
                        "Metadata": {"sha256": digest.hexdigest(), "artifact": name},
                        "MetadataDirective": "REPLACE",
                    },
                )
            except (ClientError, BotoCoreError) as error:
                raise classify(error, uri) from error
        return ArtifactRecord(name=name, uri=self.uri(target), sha256=digest.hexdigest(), size=size)

    def put_file(self, path: Path, name: str) -> ArtifactRecord:
        return self.put_bytes(path.read_bytes(), name)

    def get_path(self, record: ArtifactRecord, scratch: Path) -> Path:
        target = scratch / f"{record.sha256}-{record.name}"
        if not target.exists():
            download_uri(self.client, record.uri, target)
        return verify_file(target, record)

    def get_bytes(self, record: ArtifactRecord) -> bytes:
        data = read_uri(self.client, record.uri)
        actual = hashlib.sha256(data).hexdigest()
        if actual != record.sha256:
            raise ArtifactIntegrityError(
                f"artifact {record.name} at {record.uri} has SHA-256 {actual}, "
                f"recorded {record.sha256}: refusing to use it"
            )
        return data


def download_uri(client: Any, uri: str, target: Path) -> Path:
    """Stream the object at s3://bucket/key into ``target`` (chunked: an
    object larger than memory is fine)."""
    bucket, key = parse_s3_uri(uri)
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        with target.open("wb") as out:
            for chunk in response["Body"].iter_chunks(HASH_CHUNK):
                out.write(chunk)
    except (ClientError, BotoCoreError) as error:
        raise classify(error, uri) from error
    return target


def read_uri(client: Any, uri: str) -> bytes:
    """The bytes at s3://bucket/key, with errors classified."""
    bucket, key = parse_s3_uri(uri)
    try:
        response = client.get_object(Bucket=bucket, Key=key)
        body: bytes = response["Body"].read()
    except (ClientError, BotoCoreError) as error:
        raise classify(error, uri) from error
    return body


def read_uri_bounded(client: Any, uri: str, limit: int) -> bytes:
    """Like read_uri, refusing an object larger than ``limit`` bytes (a file
    the operator reads must not grow its memory with someone else's data)."""
    bucket, key = parse_s3_uri(uri)
    try:
        response = client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{limit}")
        body: bytes = response["Body"].read(limit + 1)
    except (ClientError, BotoCoreError) as error:
        raise classify(error, uri) from error
    if len(body) > limit:
        raise ArtifactIntegrityError(f"{uri} is larger than {limit} bytes")
    return body


def write_uri(client: Any, uri: str, data: bytes) -> None:
    bucket, key = parse_s3_uri(uri)
    try:
        client.put_object(Bucket=bucket, Key=key, Body=data)
    except (ClientError, BotoCoreError) as error:
        raise classify(error, uri) from error


def list_uri(client: Any, uri: str) -> list[str]:
    """Object URIs under the s3:// prefix ``uri`` (one level, up to 1000)."""
    bucket, prefix = parse_s3_uri(uri.rstrip("/") + "/")
    try:
        response = client.list_objects_v2(Bucket=bucket, Prefix=prefix)
    except (ClientError, BotoCoreError) as error:
        raise classify(error, uri) from error
    return [f"s3://{bucket}/{item['Key']}" for item in response.get("Contents", [])]
