"""MLflow's model registry through its REST API (no mlflow package).

What a release of a registered model needs: resolve a version or an alias to
one version (once), keep the registry in step with where the release is live
(aliases and tags), and fetch a version's files (in the step that imports the
model, never in the controller). Every failure is classified: a registry that
is down or answers 5xx is transient (retry), a model, version or alias that
does not exist or refused credentials are not.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelgate.promotion.plan import RegistryObservation, RegistryQuery, SyncRegistry

HASH_CHUNK = 1 << 20
MAX_ANSWER_BYTES = 4 << 20  # registry answers are small; a listing of many files too


class MlflowError(Exception):
    """The registry could not do what was asked; ``transient``: ask again later."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class RegisteredVersion:
    """One version of a registered model, as the registry describes it."""

    name: str
    version: str
    source: str
    run_id: str
    status: str
    aliases: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_answer(cls, body: Mapping[str, Any]) -> RegisteredVersion:
        found = body.get("model_version")
        if not isinstance(found, Mapping):
            raise MlflowError(f"the registry's answer has no model_version: {body}", False)
        return cls(
            name=str(found.get("name", "")),
            version=str(found.get("version", "")),
            source=str(found.get("source", "")),
            run_id=str(found.get("run_id", "")),
            status=str(found.get("status", "")),
            aliases=tuple(str(a) for a in found.get("aliases") or []),
            tags={
                str(t.get("key")): str(t.get("value"))
                for t in found.get("tags") or []
                if isinstance(t, Mapping)
            },
        )


@dataclass(frozen=True)
class FetchedFile:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class FetchedModel:
    """A version's files on disk, and the digest that names them all."""

    root: Path
    files: tuple[FetchedFile, ...]

    @property
    def digest(self) -> str:
        """SHA-256 over the sorted ``<sha256>  <path>`` lines of every file
        (as ``sha256sum`` prints them): one name for the whole directory."""
        lines = "".join(f"{f.sha256}  {f.path}\n" for f in sorted(self.files, key=lambda f: f.path))
        return hashlib.sha256(lines.encode()).hexdigest()


class MlflowRegistry:
    """The registry of one tracking server."""

    def __init__(
        self, tracking_uri: str, headers: Mapping[str, str] | None = None, timeout: float = 10
    ) -> None:
        self.url = tracking_uri.rstrip("/")
        self.headers = dict(headers or {})
        self.timeout = timeout

    @staticmethod
    def auth_headers(
        token: str | None = None, username: str | None = None, password: str | None = None
    ) -> dict[str, str]:
        """Bearer token or basic credentials, as the tracking server takes them."""
        if token:
            return {"Authorization": f"Bearer {token.strip()}"}
        if username is not None and password is not None:
            pair = base64.b64encode(f"{username}:{password}".encode()).decode()
            return {"Authorization": f"Basic {pair}"}
        return {}

    # -- the registry -------------------------------------------------------

    def version(self, name: str, version: str) -> RegisteredVersion:
        query = urllib.parse.urlencode({"name": name, "version": version})
        found = self._call("GET", f"model-versions/get?{query}", f"model {name} version {version}")
        return RegisteredVersion.from_answer(found)

    def by_alias(self, name: str, alias: str) -> RegisteredVersion:
        query = urllib.parse.urlencode({"name": name, "alias": alias})
        found = self._call("GET", f"registered-models/alias?{query}", f"model {name}@{alias}")
        return RegisteredVersion.from_answer(found)

    def resolve(self, name: str, version: str | None, alias: str | None) -> RegisteredVersion:
        """The one version a release names (by number or by alias), READY."""
        if (version is None) == (alias is None):
            raise MlflowError("name exactly one of a version or an alias", False)
        found = (
            self.version(name, version) if version is not None else self.by_alias(name, alias or "")
        )
        if found.status and found.status != "READY":
            # PENDING_REGISTRATION may still become READY: ask again later.
            raise MlflowError(
                f"model {name} version {found.version} is {found.status}, not READY",
                found.status == "PENDING_REGISTRATION",
            )
        return found

    def set_alias(self, name: str, alias: str, version: str) -> None:
        body = {"name": name, "alias": alias, "version": version}
        self._call("POST", "registered-models/alias", f"alias {alias} of {name}", body)

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove the alias; one that is already gone is fine."""
        try:
            body = {"name": name, "alias": alias}
            self._call("DELETE", "registered-models/alias", f"alias {alias} of {name}", body)
        except MlflowError as error:
            if error.transient or "not found" not in str(error):
                raise

    def set_tags(self, name: str, version: str, tags: Mapping[str, str]) -> None:
        for key, value in sorted(tags.items()):
            body = {"name": name, "version": version, "key": key, "value": value}
            self._call("POST", "model-versions/set-tag", f"tag {key} of {name} {version}", body)

    def download_uri(self, name: str, version: str) -> str:
        query = urllib.parse.urlencode({"name": name, "version": version})
        found = self._call(
            "GET", f"model-versions/get-download-uri?{query}", f"model {name} version {version}"
        )
        uri = found.get("artifact_uri")
        if not isinstance(uri, str) or not uri:
            raise MlflowError(f"the registry gave no artifact URI for {name} {version}", False)
        return uri

    # -- the files ----------------------------------------------------------

    def fetch(self, name: str, version: str, target: Path) -> FetchedModel:
        """Every file of the version into ``target``, hashed as it streams."""
        uri = self.download_uri(name, version)
        scheme, _, rest = uri.partition(":")
        if scheme == "mlflow-artifacts":
            return self._fetch_served(rest.lstrip("/"), target)
        if scheme == "file" or uri.startswith("/"):
            local = Path(urllib.parse.urlsplit(uri).path if scheme == "file" else uri)
            return _copy_tree(local, target)
        raise MlflowError(
            f"{name} version {version} is stored at {uri}, which only the tracking server's "
            "artifact proxy may fetch here: run it with --serve-artifacts (mlflow-artifacts:/ "
            "URIs), or give the model as an artifact source",
            False,
        )

    def _fetch_served(self, root: str, target: Path) -> FetchedModel:
        files: list[FetchedFile] = []
        pending = [""]
        while pending:
            relative = pending.pop()
            path = f"{root}/{relative}".rstrip("/")
            listing = self._get_json(
                f"{self.url}/api/2.0/mlflow-artifacts/artifacts?"
                + urllib.parse.urlencode({"path": path}),
                f"the files of {root}",
            )
            for entry in listing.get("files") or []:
                name = str(entry.get("path", ""))
                inner = f"{relative}/{name}".lstrip("/")
                if not name or ".." in Path(inner).parts:
                    raise MlflowError(f"the registry listed an unsafe path {name!r}", False)
                if entry.get("is_dir"):
                    pending.append(inner)
                    continue
                files.append(self._download(f"{root}/{inner}", inner, target / inner))
        if not files:
            raise MlflowError(f"the registry holds no files at {root}", False)
        return FetchedModel(target, tuple(files))

    def _download(self, remote: str, relative: str, local: Path) -> FetchedFile:
        local.parent.mkdir(parents=True, exist_ok=True)
        address = f"{self.url}/api/2.0/mlflow-artifacts/artifacts/{urllib.parse.quote(remote)}"
        digest, size = hashlib.sha256(), 0
        try:
            with self._open("GET", address) as answer, local.open("wb") as out:
                while chunk := answer.read(HASH_CHUNK):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        except urllib.error.HTTPError as error:
            raise _refused(error, f"file {relative}") from None
        except OSError as error:
            raise MlflowError(f"MLflow at {self.url} did not answer: {error}", True) from None
        return FetchedFile(relative, digest.hexdigest(), size)

    # -- HTTP ---------------------------------------------------------------

    def _open(self, method: str, address: str, body: bytes | None = None) -> Any:
        request = urllib.request.Request(
            address,
            data=body,
            method=method,
            headers={
                "Content-Type": "application/json",
                "Accept": "application/json",
                **self.headers,
            },
        )
        return urllib.request.urlopen(request, timeout=self.timeout)

    def _call(
        self, method: str, path: str, what: str, body: Mapping[str, Any] | None = None
    ) -> Mapping[str, Any]:
        address = f"{self.url}/api/2.0/mlflow/{path}"
        data = json.dumps(body).encode() if body is not None else None
        return self._get_json(address, what, method, data)

    def _get_json(
        self, address: str, what: str, method: str = "GET", data: bytes | None = None
    ) -> Mapping[str, Any]:
        try:
            with self._open(method, address, data) as answer:
                raw = answer.read(MAX_ANSWER_BYTES + 1)
        except urllib.error.HTTPError as error:
            raise _refused(error, what) from None
        except OSError as error:
            reason = getattr(error, "reason", error)
            raise MlflowError(f"MLflow at {self.url} did not answer: {reason}", True) from None
        if len(raw) > MAX_ANSWER_BYTES:
            raise MlflowError(f"MLflow's answer about {what} is larger than expected", False)
        try:
            found = json.loads(raw) if raw.strip() else {}
        except ValueError:
            raise MlflowError(f"MLflow's answer about {what} is not JSON", True) from None
        if not isinstance(found, Mapping):
            raise MlflowError(f"MLflow's answer about {what} is not an object", False)
        return found


def _refused(error: urllib.error.HTTPError, what: str) -> MlflowError:
    try:
        body = json.loads(error.read() or b"{}")
        message = str(body.get("message") or body.get("error_code") or error.reason)
    except ValueError:
        message = str(error.reason)
    if error.code in (401, 403):
        return MlflowError(
            f"MLflow refused the credentials for {what} ({error.code}): check the Secret", False
        )
    transient = error.code >= 500 or error.code == 429
    return MlflowError(f"{what}: MLflow answered {error.code}: {message}", transient)


def _copy_tree(source: Path, target: Path) -> FetchedModel:
    if not source.is_dir():
        raise MlflowError(f"the registry's artifact directory {source} does not exist here", False)
    files: list[FetchedFile] = []
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        relative = path.relative_to(source).as_posix()
        local = target / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, local)
        digest = hashlib.sha256()
        with local.open("rb") as copied:
            while chunk := copied.read(HASH_CHUNK):
                digest.update(chunk)
        files.append(FetchedFile(relative, digest.hexdigest(), local.stat().st_size))
    if not files:
        raise MlflowError(f"the registry's artifact directory {source} is empty", False)
    return FetchedModel(target, tuple(files))


def observe_registry(
    query: RegistryQuery | None, headers: Mapping[str, str] | None = None
) -> RegistryObservation | None:
    """The registry's answer to a release's query (None when none is due)."""
    if query is None:
        return None
    try:
        found = MlflowRegistry(query.tracking_uri, headers).resolve(
            query.name, query.version, query.alias
        )
    except MlflowError as error:
        return RegistryObservation(error=str(error), transient=error.transient)
    return RegistryObservation(version=found.version, run_id=found.run_id or None)


def headers_from_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """Credentials in MLflow's own variables (local mode, the import run)."""
    return MlflowRegistry.auth_headers(
        token=environ.get("MLFLOW_TRACKING_TOKEN"),
        username=environ.get("MLFLOW_TRACKING_USERNAME"),
        password=environ.get("MLFLOW_TRACKING_PASSWORD"),
    )


def headers_from_secret(
    data: Mapping[str, str] | None,
    token_key: str | None,
    username_key: str | None,
    password_key: str | None,
    where: str,
) -> dict[str, str]:
    """Credentials from the Secret a release names (the operator's lookup)."""
    if data is None:
        raise MlflowError(f"Secret {where} named by mlflow.credentialsSecret does not exist", False)
    wanted = [k for k in (token_key, username_key, password_key) if k is not None]
    absent = [k for k in wanted if k not in data]
    if absent:
        raise MlflowError(
            f"Secret {where} has no key {absent[0]!r} (mlflow.credentialsSecret)", False
        )
    return MlflowRegistry.auth_headers(
        token=data[token_key] if token_key else None,
        username=data[username_key] if username_key else None,
        password=data[password_key] if password_key else None,
    )


def perform_sync(
    action: SyncRegistry, headers: Mapping[str, str], restored: str | None
) -> tuple[bool, str, str | None]:
    """Do one registry update: (done, what was done or why not, the version
    the alias names now). ``restored``: the registered version put back in
    the environment by a rollback, if it is one of the same model."""
    registry = MlflowRegistry(action.tracking_uri, headers)
    name, alias = action.name, action.alias
    try:
        if not action.rolled_back:
            registry.set_alias(name, alias, action.version)
            registry.set_tags(name, action.version, dict(action.tags))
            return True, f"alias {alias} names version {action.version}", action.version
        try:
            current: str | None = registry.by_alias(name, alias).version
        except MlflowError as error:
            if error.transient or "not found" not in str(error):
                raise
            current = None
        if current is not None and current != action.version:
            return True, f"alias {alias} names version {current}, not this one: left so", current
        if restored is not None:
            registry.set_alias(name, alias, restored)
            return True, f"alias {alias} moved back to version {restored}", restored
        registry.delete_alias(name, alias)
        return True, f"alias {alias} removed (no registered version was put back)", None
    except MlflowError as error:
        return False, f"{name}@{alias}: {error}", None
