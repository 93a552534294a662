"""GitOps delivery: promotions and rollbacks are commits; Git is the record.

The ``git`` CLI does the work (not dulwich or GitPython): it is the client the
GitOps agents and the teams use, speaks every transport (https, ssh, file)
with the same credential mechanisms, and its revert and push semantics are
the ones people review. Each repository has one working clone in the cache
directory, used under a lock.

What is live in an environment is read back from the commit trailers on the
target branch: the newest promotion of the model that no later rollback
reverted. Every promotion carries ``Modelgate-Promotion: <id>`` (release,
environment, image and config), so a re-run after a crash finds its own
commit and does not add a second one. A push refused because someone else
pushed first is retried on top of the new tip (fetch, re-apply, push).

Credentials come from a Secret: ``token`` (and ``username``) for HTTPS, sent as
an Authorization header through git's environment, never in the URL or on a
command line; or ``sshPrivateKey`` (and ``knownHosts``) written to a private
file for ssh. They are scrubbed from every message.
"""

from __future__ import annotations

import base64
import hashlib
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Generic, TypeVar

from modelgate.api.common import format_time
from modelgate.api.environment import DeliveryMode, Environment, GitStrategy, GitTarget
from modelgate.api.modelrelease import ArtifactRecord
from modelgate.backends import gitformats
from modelgate.backends import gitformats_traffic as traffic
from modelgate.backends.challenger_manifests import needs_router
from modelgate.promotion import Deploy, DeploymentObservation, Rollback
from modelgate.promotion.plan import SetTraffic, parse_rollout
from modelgate.settings import OperatorSettings

TRAILER = "Modelgate-"
PUSH_ATTEMPTS = 6
GIT_TIMEOUT = 120.0
LOG_DEPTH = 500
BRANCH_PREFIX = "modelgate"


@dataclass(frozen=True)
class RolloutState:
    """Whether the cluster runs what Git says is live."""

    ready: bool
    message: str | None = None
    # The revision the GitOps agent synced (Argo CD), if it says: the
    # promotion counts as rolled out only if that revision contains it.
    revision: str | None = None


# (environment, model, image) -> the state of its rollout.
RolloutCheck = Callable[[Environment, str, str], RolloutState]

T = TypeVar("T")


@dataclass(frozen=True)
class Finished(Generic[T]):
    """An attempt ended without a push: ``result`` is the operation's answer."""

    result: T


def is_gitops(environment: Environment) -> bool:
    return environment.spec.delivery.mode == DeliveryMode.GITOPS


def split_unsupported(environment: Environment) -> str | None:
    """Why this GitOps environment's judged rollout cannot be committed, or
    None: a split in Git is an HTTPRoute's weights (or the router behind
    it), in files Modelgate writes whole."""
    target = environment.spec.delivery.git
    rollout = environment.spec.policy.rollout
    if target is None or rollout is None:
        return None
    why = traffic.unsupported(target.format)
    if why is not None:
        return why
    if rollout.traffic is None or rollout.traffic.gateway is None:
        return (
            "with delivery.mode GitOps each split is committed as the model's HTTPRoute: set "
            "policy.rollout.traffic.gateway (a split by replicas is not committed)"
        )
    return None


class GitError(RuntimeError):
    """A Git operation failed; ``transient`` says whether trying again can help."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


@dataclass(frozen=True)
class GitCredentials:
    token: str | None = None
    username: str | None = None
    ssh_private_key: str | None = None
    known_hosts: str | None = None

    @classmethod
    def from_environment(cls) -> GitCredentials | None:
        """Local mode: MODELGATE_GIT_TOKEN (+ MODELGATE_GIT_USERNAME) or
        MODELGATE_GIT_SSH_KEY_FILE (+ MODELGATE_GIT_KNOWN_HOSTS_FILE)."""
        token = os.environ.get("MODELGATE_GIT_TOKEN")
        key_file = os.environ.get("MODELGATE_GIT_SSH_KEY_FILE")
        hosts_file = os.environ.get("MODELGATE_GIT_KNOWN_HOSTS_FILE")
        if not token and not key_file:
            return None
        return cls(
            token=token or None,
            username=os.environ.get("MODELGATE_GIT_USERNAME") or None,
            ssh_private_key=Path(key_file).read_text() if key_file else None,
            known_hosts=Path(hosts_file).read_text() if hosts_file else None,
        )

    @classmethod
    def from_secret(cls, data: dict[str, str], secret: str) -> GitCredentials:
        found = cls(
            token=data.get("token") or data.get("password"),
            username=data.get("username"),
            ssh_private_key=data.get("sshPrivateKey"),
            known_hosts=data.get("knownHosts"),
        )
        if not found.token and not found.ssh_private_key:
            raise GitError(
                f"Secret {secret} has neither `token` (HTTPS) nor `sshPrivateKey` (SSH); "
                "add one of them",
                transient=False,
            )
        return found

    def secrets(self) -> list[str]:
        """Every string that must never appear in a message."""
        values = [v for v in (self.token, self.ssh_private_key) if v]
        if self.token:
            values.append(self._basic())
        return values

    def _basic(self) -> str:
        pair = f"{self.username or 'x-access-token'}:{self.token}"
        return base64.b64encode(pair.encode()).decode()

    def environment(self, private_dir: Path) -> dict[str, str]:
        """git's environment for these credentials; key files go to ``private_dir``."""
        env: dict[str, str] = {}
        if self.token:
            # Config through the environment: not in argv, not in .git/config.
            env.update(
                {
                    "GIT_CONFIG_COUNT": "1",
                    "GIT_CONFIG_KEY_0": "http.extraHeader",
                    "GIT_CONFIG_VALUE_0": f"Authorization: Basic {self._basic()}",
                }
            )
        if self.ssh_private_key:
            key = private_dir / "id"
            key.write_text(self.ssh_private_key.rstrip("\n") + "\n")
            key.chmod(0o600)
            options = ["-i", str(key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes"]
            if self.known_hosts:
                hosts = private_dir / "known_hosts"
                hosts.write_text(self.known_hosts)
                options += [
                    "-o",
                    f"UserKnownHostsFile={hosts}",
                    "-o",
                    "StrictHostKeyChecking=yes",
                ]
            else:
                options += ["-o", "StrictHostKeyChecking=accept-new"]
            env["GIT_SSH_COMMAND"] = " ".join(["ssh", *options])
        return env


@dataclass(frozen=True)
class Entry:
    """One Modelgate commit on a branch, newest first in a log."""

    sha: str
    committed_at: str
    trailers: dict[str, str]

    def get(self, key: str) -> str | None:
        return self.trailers.get(TRAILER + key)


def promotion_id(action: Deploy) -> str:
    parts = [action.release, action.environment, action.image, action.config_hash]
    if action.rollout > 1:
        # A config put back after a change is a new promotion, not the first one.
        parts.append(str(action.rollout))
    text = "\0".join(parts)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def review_branch(environment: str, release: str) -> str:
    """The branch a pullRequestBranch promotion is pushed to."""
    return f"{BRANCH_PREFIX}/{environment}/{release.split('/', 1)[-1]}"


def parse_log(text: str) -> list[Entry]:
    entries: list[Entry] = []
    for raw in text.split("\x1e"):
        record = raw.strip("\n")
        if not record:
            continue
        sha, committed_at, trailer_text = [*record.split("\x1f"), "", ""][:3]
        trailers: dict[str, str] = {}
        for line in trailer_text.splitlines():
            key, sep, value = line.partition(":")
            if sep and key.startswith(TRAILER):
                trailers.setdefault(key.strip(), value.strip())
        entries.append(Entry(sha.strip(), committed_at.strip(), trailers))
    return entries


def live_promotion(entries: list[Entry], environment: str, model: str) -> Entry | None:
    """The newest promotion of ``model`` in ``environment`` not reverted since."""
    reverted: set[str] = set()
    for entry in entries:
        if entry.get("Environment") != environment or entry.get("Model") != model:
            continue
        undone = entry.get("Reverts")
        if undone:
            reverted.add(undone)
            continue
        promotion = entry.get("Promotion")
        if promotion and promotion not in reverted:
            return entry
    return None


def promotion_message(action: Deploy, ident: str, path: str) -> str:
    version = f" {action.model_version}" if action.model_version else ""
    lines = [
        f"Promote {action.model}{version} to {action.environment}",
        "",
        f"Release {action.release} ships {action.image}",
        f"with config sha256 {action.config_hash[:16]}.",
        f"Gate: {action.gate or 'none'}.",
    ]
    if action.approved_by:
        lines.append(f"Approved by {action.approved_by} at {action.approved_at or 'unknown'}.")
    if action.judged:
        lines.append(f"Judged on live traffic: {action.judged}")
    lines += [
        "",
        f"{TRAILER}Promotion: {ident}",
        f"{TRAILER}Release: {action.release}",
        f"{TRAILER}Model: {action.model}",
    ]
    if action.model_version:
        lines.append(f"{TRAILER}Model-Version: {action.model_version}")
    lines += [
        f"{TRAILER}Environment: {action.environment}",
        f"{TRAILER}Path: {path}",
        f"{TRAILER}Image: {action.image}",
        f"{TRAILER}Config-Hash: {action.config_hash}",
        f"{TRAILER}Rollout: {action.rollout}",
        f"{TRAILER}Gate: {action.gate or 'none'}",
    ]
    if action.approved_by:
        lines.append(f"{TRAILER}Approved-By: {action.approved_by} {action.approved_at or ''}")
    if action.predictions is not None:
        record = action.predictions
        lines.append(
            f"{TRAILER}Predictions: {record.uri} sha256:{record.sha256} size:{record.size}"
        )
    return "\n".join(lines).rstrip() + "\n"


def _predictions(entry: Entry) -> ArtifactRecord | None:
    """The live release's predictions (the baseline of the next gate)."""
    value = entry.get("Predictions")
    parts = value.split() if value else []
    if len(parts) != 3 or not parts[1].startswith("sha256:") or not parts[2].startswith("size:"):
        return None
    try:
        size = int(parts[2].removeprefix("size:"))
    except ValueError:
        return None
    return ArtifactRecord(
        name="predictions", uri=parts[0], sha256=parts[1].removeprefix("sha256:"), size=size
    )


@dataclass
class Workspace:
    """A working clone of one repository, kept between operations."""

    target: GitTarget
    directory: Path
    author: tuple[str, str]
    credentials: GitCredentials | None = None
    fetch_seconds: float = 5.0
    _fetched_at: float = field(default=float("-inf"), init=False)

    def _scrub(self, text: str) -> str:
        for secret in self.credentials.secrets() if self.credentials else []:
            text = text.replace(secret, "***")
        return text

    @contextmanager
    def _environment(self) -> Iterator[dict[str, str]]:
        private = Path(tempfile.mkdtemp(prefix="modelgate-git-"))
        try:
            name, email = self.author
            env = {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "HOME": str(private),  # no user's ~/.gitconfig
                "GIT_CONFIG_NOSYSTEM": "1",
                "GIT_TERMINAL_PROMPT": "0",
                "LC_ALL": "C",
                "GIT_AUTHOR_NAME": name,
                "GIT_AUTHOR_EMAIL": email,
                "GIT_COMMITTER_NAME": name,
                "GIT_COMMITTER_EMAIL": email,
            }
            if self.credentials is not None:
                env.update(self.credentials.environment(private))
            yield env
        finally:
            shutil.rmtree(private, ignore_errors=True)

    def _run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        with self._environment() as env:
            try:
                return subprocess.run(
                    ["git", *args],
                    cwd=self.directory,
                    env=env,
                    input=stdin,
                    capture_output=True,
                    text=True,
                    timeout=GIT_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired as error:
                raise GitError(f"git {args[0]} timed out after {GIT_TIMEOUT:.0f}s", True) from error

    def git(self, *args: str, stdin: str | None = None, check: bool = True) -> str:
        done = self._run(*args, stdin=stdin)
        if check and done.returncode != 0:
            detail = self._scrub((done.stderr or done.stdout).strip())
            raise GitError(f"git {args[0]} failed: {detail}", _transient(detail))
        return done.stdout

    def fetch(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._fetched_at < self.fetch_seconds:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if not (self.directory / ".git").exists():
            self.git("init", "--quiet", "--initial-branch", self.target.branch)
            self.git("remote", "add", "origin", self.target.repository)
        self.git("fetch", "--quiet", "--prune", "origin", "+refs/heads/*:refs/remotes/origin/*")
        self._fetched_at = time.monotonic()

    def has(self, ref: str) -> bool:
        out = self.git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
        return bool(out.strip())

    def log(self, ref: str) -> list[Entry]:
        """Modelgate's commits for this target's path on ``ref``, newest first.

        Selected by trailer, not by path: a promotion that changes no file
        (same image and config as live) is still a record."""
        if not self.has(ref):
            return []
        out = self.git(
            "log",
            f"--max-count={LOG_DEPTH}",
            "--fixed-strings",
            f"--grep={TRAILER}Path: {self.target.path}",
            "--format=%H%x1f%cI%x1f%(trailers:only,unfold)%x1e",
            ref,
        )
        return [e for e in parse_log(out) if e.get("Path") == self.target.path]

    def contains(self, revision: str, commit: str) -> bool:
        """Whether ``revision`` is ``commit`` or descends from it."""
        if not self.has(revision):
            self.fetch(force=True)  # the agent may have seen a newer commit
        if not self.has(revision):
            return False
        return self._run("merge-base", "--is-ancestor", commit, revision).returncode == 0

    def checkout(self, ref: str) -> None:
        """A clean work tree at ``ref`` (or an empty one if it does not exist)."""
        self.git("reset", "--quiet", "--hard")
        self.git("clean", "--quiet", "-fdx")
        if self.has(ref):
            self.git("checkout", "--quiet", "--force", "-B", "modelgate-work", ref)
        else:
            self.git("checkout", "--quiet", "--orphan", "modelgate-work-empty")
            self.git("rm", "--quiet", "-rf", "--ignore-unmatch", ".")
            self.git("branch", "--quiet", "-D", "modelgate-work", check=False)
            self.git("checkout", "--quiet", "--orphan", "modelgate-work")

    def push(self, branch: str, force: bool = False) -> bool:
        """Push HEAD to ``branch``; False when refused because the branch moved."""
        args = ["push", "--quiet", "--porcelain", "origin", f"HEAD:refs/heads/{branch}"]
        if force:
            args.insert(1, "--force")
        done = self._run(*args)
        if done.returncode == 0:
            return True
        detail = self._scrub((done.stderr + done.stdout).strip())
        if any(
            marker in detail
            # Refused because the branch moved, or because another push was
            # updating it at that very moment (the server's ref lock).
            for marker in (
                "[rejected]",
                "non-fast-forward",
                "fetch first",
                "stale info",
                "cannot lock ref",
                "failed to update ref",
            )
        ):
            return False
        raise GitError(f"git push to {branch} failed: {detail}", _transient(detail))


def _transient(detail: str) -> bool:
    """Network trouble is worth retrying; refused credentials or paths are not."""
    lowered = detail.lower()
    permanent = (
        "authentication failed",
        "permission denied",
        "could not read username",
        "repository not found",
        "does not appear to be a git repository",
        "host key verification failed",
        "conflict",
        # The server refused the push on purpose (a hook, branch protection);
        # lost races were told apart before this is asked.
        "hook declined",
        "protected branch",
        "[remote rejected]",
    )
    if any(marker in lowered for marker in permanent):
        return False
    # HTTP answers by status, not by any digits (a port like 44015 holds "401").
    return re.search(r"returned error: (400|401|403|404)\b", lowered) is None


class GitOpsDelivery:
    """Deploy, observe and roll back environments whose delivery mode is GitOps."""

    def __init__(
        self,
        settings: OperatorSettings,
        credentials: Callable[[Environment], GitCredentials | None],
        rollout: RolloutCheck,
    ) -> None:
        self.settings = settings
        self._credentials = credentials
        self._rollout = rollout
        self._workspaces: dict[str, Workspace] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        name, _, email = settings.git_author.partition("<")
        self._author = (name.strip() or "Modelgate", email.rstrip(">").strip() or "modelgate@local")

    @contextmanager
    def workspace(self, environment: Environment) -> Iterator[Workspace]:
        target = _target(environment)
        key = hashlib.sha256(target.repository.encode()).hexdigest()[:16]
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            space = self._workspaces.get(key)
            if space is None:
                space = Workspace(
                    target=target,
                    directory=Path(self.settings.git_cache) / key,
                    author=self._author,
                    fetch_seconds=self.settings.git_fetch_seconds,
                )
                self._workspaces[key] = space
            # The Environment may have changed branch, path or Secret since.
            space.target = target
            space.credentials = self._credentials(environment)
            yield space

    def deploy(self, environment: Environment, action: Deploy, now: datetime) -> str:
        """Commit and push the promotion; returns the commit. Idempotent."""
        target = _target(environment)
        ident = promotion_id(action)
        branch = (
            review_branch(action.environment, action.release)
            if target.strategy == GitStrategy.PULL_REQUEST_BRANCH
            else target.branch
        )
        review = target.strategy == GitStrategy.PULL_REQUEST_BRANCH

        def commit(space: Workspace) -> Finished[str] | None:
            for ref in {f"origin/{target.branch}", f"origin/{branch}"}:
                done = _find(space.log(ref), "Promotion", ident)
                if done is not None:
                    return Finished(done.sha)  # pushed before a crash or a lost answer
            space.checkout(f"origin/{target.branch}")
            root = space.directory / target.path
            existing = {p: _read(root / p) for p in gitformats.model_files(action.model)}
            try:
                files = gitformats.render(target.format, action, existing, self.settings, now)
            except gitformats.FormatError as error:
                raise GitError(
                    f"{target.repository} {target.path}: {error}", transient=False
                ) from error
            _write(root, files)
            space.git("add", "--all", "--", target.path)
            space.git(
                "commit",
                "--quiet",
                "--allow-empty",  # same files as live: the record still matters
                "--file=-",
                stdin=promotion_message(action, ident, target.path),
            )
            return None

        return self._push_retrying(environment, branch, commit, force=review, what="the promotion")

    def rollback(self, environment: Environment, action: Rollback, now: datetime) -> str | None:
        """Revert the release's promotion on the target branch (rollbacks go
        straight to the branch, also with pullRequestBranch: the state they
        restore was reviewed). Returns the revert commit, None if nothing to do."""
        target = _target(environment)

        def commit(space: Workspace) -> Finished[str | None] | None:
            ref = f"origin/{target.branch}"
            live = live_promotion(space.log(ref), action.environment, action.model)
            if live is None or live.get("Release") != action.release:
                return Finished(None)  # already reverted, or replaced by a newer release
            if action.config_hash and live.get("Config-Hash") == action.config_hash:
                return Finished(None)  # the failed config change is already reverted
            space.checkout(ref)
            space.git("revert", "--no-commit", live.sha, check=False)
            if space.git("diff", "--name-only", "--diff-filter=U", check=False).strip():
                space.git("revert", "--abort", check=False)
                raise GitError(
                    f"reverting {live.sha[:12]} in {target.path} conflicts with later "
                    "changes to the same files; resolve by hand",
                    transient=False,
                )
            message = "\n".join(
                [
                    f"Roll back {action.model} in {action.environment}",
                    "",
                    f"Release {action.release}: {action.reason}"
                    if action.reason
                    else f"Release {action.release} failed post-deployment verification.",
                    f"This reverts commit {live.sha}.",
                    "",
                    f"{TRAILER}Reverts: {live.get('Promotion')}",
                    f"{TRAILER}Release: {action.release}",
                    f"{TRAILER}Model: {action.model}",
                    f"{TRAILER}Environment: {action.environment}",
                    f"{TRAILER}Path: {target.path}",
                    f"{TRAILER}Rolled-Back-At: {format_time(now)}",
                ]
            )
            space.git("commit", "--quiet", "--allow-empty", "--file=-", stdin=message + "\n")
            return None

        return self._push_retrying(environment, target.branch, commit, what="the rollback")

    # -- a judged rollout: the challenger and each split are commits ----------

    def deploy_challenger(
        self, environment: Environment, action: Deploy, now: datetime
    ) -> str | None:
        """Commit the challenger beside the live model, with no traffic;
        returns the commit, None when the branch already has it."""
        version = f" {action.model_version}" if action.model_version else ""
        message = "\n".join(
            [
                f"Run {action.model}{version} beside the live one in {action.environment}",
                "",
                f"Release {action.release} ships {action.image}",
                f"with config sha256 {action.config_hash[:16]}, judged against the live",
                "release on live traffic before it takes over; no traffic yet.",
                "",
                *self._trailers(environment, action.model, action.release),
                f"{TRAILER}Image: {action.image}",
                f"{TRAILER}Config-Hash: {action.config_hash}",
            ]
        )
        return self._commit_traffic(
            environment,
            action.model,
            lambda fmt, existing: traffic.render_challenger(
                fmt, action, existing, self.settings, now
            ),
            message,
        )

    def set_traffic(
        self, environment: Environment, action: SetTraffic, router_ready: Callable[[], bool]
    ) -> str | None:
        """Commit the split; returns how it reaches callers, or None while
        the router it needs is committed but not ready in the cluster yet
        (the route moves to it in a later commit)."""
        target = _target(environment)
        if needs_router(action):
            started = self._commit_traffic(
                environment,
                action.model,
                lambda fmt, existing: None
                if existing.get(traffic.router_path(action.model)) is not None
                else traffic.render_router(fmt, action, existing, self.settings),
                "\n".join(
                    [
                        f"Start Modelgate's router for {action.model} in {action.environment}",
                        "",
                        "It will stand behind the model's HTTPRoute once ready, "
                        + ("mirroring every request to the challenger."
                           if action.mirror else
                           f"keeping each caller in one arm by {action.sticky_header}."),
                        "",
                        *self._trailers(environment, action.model, action.challenger),
                    ]
                ),
            )  # fmt: skip
            if started is not None or not router_ready():
                return None
        what = "a mirror of every request" if action.mirror else f"{action.weight}%"
        how = (
            f"HTTPRoute {action.namespace}/{action.model}-{action.environment} committed to "
            f"{target.branch}: {what} to the challenger"
            + (f" through the router, sticky by {action.sticky_header}"
               if action.sticky_header and not action.mirror else "")
        )  # fmt: skip
        message = "\n".join(
            [
                (f"Mirror {action.model}'s traffic in {action.environment} to the challenger"
                 if action.mirror else
                 f"Give the challenger {action.weight}% of {action.model} in {action.environment}"),
                "",
                f"Champion {action.champion}, challenger {action.challenger}.",
                "",
                *self._trailers(environment, action.model, action.challenger),
                f"{TRAILER}Weight: {action.weight}",
                f"{TRAILER}Mirror: {str(action.mirror).lower()}",
            ]
        )  # fmt: skip
        self._commit_traffic(
            environment,
            action.model,
            lambda fmt, existing: traffic.render_split(fmt, action, existing, self.settings, how),
            message,
        )
        return how

    def remove_challenger(
        self, environment: Environment, model: str, reason: str | None
    ) -> str | None:
        """Commit the challenger's removal (the route, if any, back to the live
        model alone); returns the release removed, None if none was there."""
        removed: list[str | None] = []

        def render(fmt: str, existing: dict[str, str | None]) -> gitformats.Files | None:
            release = traffic.committed_release(existing, model)
            removed.append(release)
            if traffic.committed_challenger(existing, model) is None:
                return None
            return traffic.render_removal(fmt, model, environment.name, existing)

        def message() -> str:
            release = removed[-1] if removed else None
            return "\n".join(
                [
                    f"Remove the challenger of {model} from {environment.name}",
                    "",
                    f"Release {release}: {reason or 'its judgement ended'}",
                    "Every caller goes to the live release again.",
                    "",
                    *self._trailers(environment, model, release or ""),
                ]
            )

        self._commit_traffic(environment, model, render, message)
        return removed[-1] if removed else None

    def _trailers(self, environment: Environment, model: str, release: str) -> list[str]:
        return [
            f"{TRAILER}Challenger: {release}",
            f"{TRAILER}Model: {model}",
            f"{TRAILER}Environment: {environment.name}",
            f"{TRAILER}Path: {_target(environment).path}",
        ]

    def _commit_traffic(
        self,
        environment: Environment,
        model: str,
        render: Callable[[str, dict[str, str | None]], gitformats.Files | None],
        message: str | Callable[[], str],
    ) -> str | None:
        """Render on the target branch's tip and push the change as one
        commit (straight to the branch, also with pullRequestBranch: the
        challenger's release was approved, and a split cannot wait for a
        merge); returns it, or None when nothing changes."""
        target = _target(environment)

        def commit(space: Workspace) -> Finished[str | None] | None:
            space.checkout(f"origin/{target.branch}")
            root = space.directory / target.path
            existing = {p: _read(root / p) for p in traffic.traffic_files(model)}
            try:
                files = render(str(target.format), existing)
            except gitformats.FormatError as error:
                raise GitError(
                    f"{target.repository} {target.path}: {error}", transient=False
                ) from error
            changed = {p: t for p, t in (files or {}).items() if t != existing.get(p)}
            if not changed:
                return Finished(None)
            _write(root, changed)
            space.git("add", "--all", "--", target.path)
            text = message() if callable(message) else message
            space.git("commit", "--quiet", "--file=-", stdin=text.rstrip() + "\n")
            return None

        return self._push_retrying(environment, target.branch, commit, what="the change")

    def _push_retrying(
        self,
        environment: Environment,
        branch: str,
        commit: Callable[[Workspace], Finished[T] | None],
        *,
        what: str,
        force: bool = False,
    ) -> T | str:
        """Fetch, let ``commit`` make one commit on the fresh tip (or finish
        without one), and push it; a push refused because the branch moved is
        tried again on the new tip. Returns the pushed commit or ``commit``'s
        answer."""
        target = _target(environment)
        with self.workspace(environment) as space:
            for attempt in range(PUSH_ATTEMPTS):
                space.fetch(force=True)
                finished = commit(space)
                if finished is not None:
                    return finished.result
                if space.push(branch, force=force):
                    return space.git("rev-parse", "HEAD").strip()
                _backoff(attempt)
        raise GitError(
            f"could not push {what} to {target.repository} {branch}: it kept moving "
            f"({PUSH_ATTEMPTS} attempts); will try again",
            transient=True,
        )

    def observe(
        self, environment: Environment, model: str, release: str
    ) -> DeploymentObservation | None:
        """What Git says is live for ``model`` (or, for ``release``, waits for a
        merge), and whether the cluster runs it yet."""
        target = _target(environment)
        name = environment.name
        with self.workspace(environment) as space:
            space.fetch()
            entries = space.log(f"origin/{target.branch}")
            live = live_promotion(entries, name, model)
            pending: Entry | None = None
            if target.strategy == GitStrategy.PULL_REQUEST_BRANCH and (
                live is None or live.get("Release") != release
            ):
                branch = review_branch(name, release)
                mine = live_promotion(space.log(f"origin/{branch}"), name, model)
                if mine is not None and mine.get("Release") == release:
                    pending = mine
        if pending is not None:
            return _observation(
                name,
                pending,
                ready=False,
                message=f"waiting for branch {review_branch(name, release)} to be merged "
                f"into {target.branch}",
            )
        if live is None:
            return None
        state = self._rollout(environment, model, live.get("Image") or "")
        ready, message = state.ready, state.message
        # An agent's health is of the revision it synced: until that holds the
        # promotion, its "Synced/Progressing" says nothing about this release.
        if state.revision and state.revision != live.sha:
            with self.workspace(environment) as space:
                if not space.contains(state.revision, live.sha):
                    ready = False
                    message = (
                        f"synced revision {state.revision[:12]} does not contain "
                        f"commit {live.sha[:12]} yet"
                    )
        return _observation(name, live, ready, message)


def _observation(
    environment: str, entry: Entry, ready: bool, message: str | None
) -> DeploymentObservation:
    return DeploymentObservation(
        environment=environment,
        release=entry.get("Release") or "",
        image=entry.get("Image") or "",
        config_hash=entry.get("Config-Hash") or "",
        rollout=parse_rollout(entry.get("Rollout")),
        deployed_at=entry.committed_at,
        ready=ready,
        predictions=_predictions(entry),
        revision=entry.sha,
        message=message,
    )


def _write(root: Path, files: gitformats.Files) -> None:
    """Write ``files`` under ``root`` (None: delete)."""
    for relative, text in files.items():
        file = root / relative
        if text is None:
            file.unlink(missing_ok=True)
        else:
            file.parent.mkdir(parents=True, exist_ok=True)
            file.write_text(text)


def _find(entries: list[Entry], key: str, value: str) -> Entry | None:
    return next((e for e in entries if e.get(key) == value), None)


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _target(environment: Environment) -> GitTarget:
    target = environment.spec.delivery.git
    if target is None:  # the API model makes this impossible for mode GitOps
        raise GitError(f"environment {environment.name} has no delivery.git", transient=False)
    return target


def _backoff(attempt: int) -> None:
    time.sleep(min(2.0, 0.05 * 2**attempt) * (0.5 + random.random()))
