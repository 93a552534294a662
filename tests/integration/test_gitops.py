"""GitOps delivery against real Git: bare repositories on the local disk.

Covers commit content and trailers per format, a kustomize build of the
result (kubectl from .tools/bin), idempotency after a crash, pushes that race
with other writers, review branches, and rollback as a revert commit.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelgate.api import Environment
from modelgate.api.modelrelease import ArtifactRecord
from modelgate.backends import gitops
from modelgate.backends.gitops import (
    GitCredentials,
    GitError,
    GitOpsDelivery,
    RolloutState,
    Workspace,
)
from modelgate.promotion import Deploy, Rollback
from modelgate.settings import OperatorSettings
from tests.support.git_http import git_http_server
from tests.support.gitops_agent import bare_repository, git, kustomize_build

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare repository with one commit on main, as a team would start."""
    return bare_repository(tmp_path)


def environment(remote: Path, **git_fields: Any) -> Environment:
    return Environment.model_validate(
        {
            "apiVersion": "modelgate.dev/v1alpha1",
            "kind": "Environment",
            "metadata": {"name": "production", "namespace": "team"},
            "spec": {
                "tier": "production",
                "namespace": "models-prod",
                "delivery": {
                    "mode": "GitOps",
                    "git": {"repository": f"file://{remote}", "path": "envs/prod", **git_fields},
                },
            },
        }
    )


def delivery(tmp_path: Path, name: str = "cache", ready: bool = True) -> GitOpsDelivery:
    settings = OperatorSettings(git_cache=str(tmp_path / name), git_fetch_seconds=0)
    return GitOpsDelivery(settings, lambda env: None, lambda env, m, i: RolloutState(ready))


def deploy_action(release: str = "credit-risk-1-4-0", **changes: Any) -> Deploy:
    values: dict[str, Any] = {
        "environment": "production",
        "namespace": "models-prod",
        "release": f"team/{release}",
        "model": "credit-risk",
        "image": f"registry.example.com/credit-risk@{DIGEST_A}",
        "config": {"FEATURE_STORE_URL": "https://features.prod.example.com", "THRESHOLD": "0.5"},
        "config_hash": "c" * 64,
        "predictions": ArtifactRecord(
            name="predictions", uri="s3://bucket/modelgate/sha256/ab/abc", sha256="ab" * 32, size=10
        ),
        "model_version": "1.4.0",
        "gate": "credit-gate Passed (13 passed, 0 failed, 1 inconclusive)",
        "approved_by": "alice@example.com",
        "approved_at": "2026-11-22T11:00:00Z",
    }
    values.update(changes)
    return Deploy(**values)


def checkout(tmp_path: Path, remote: Path, ref: str = "main") -> Path:
    target = tmp_path / f"checkout-{ref.replace('/', '-')}-{len(list(tmp_path.iterdir()))}"
    git(tmp_path, "clone", "--quiet", "--branch", ref, f"file://{remote}", str(target))
    return target


def messages(remote: Path, ref: str = "main") -> list[str]:
    out = git(remote, "log", "--format=%B%x1e", ref)
    return [m.strip() for m in out.split("\x1e") if m.strip()]


def test_kustomize_promotion_is_one_commit_with_trailers_and_builds(
    tmp_path: Path, remote: Path
) -> None:
    env = environment(remote)
    sha = delivery(tmp_path).deploy(env, deploy_action(), NOW)
    assert git(remote, "rev-parse", "main").strip() == sha
    message = messages(remote)[0]
    assert message.splitlines()[0] == "Promote credit-risk 1.4.0 to production"
    for trailer in (
        "Modelgate-Release: team/credit-risk-1-4-0",
        "Modelgate-Model-Version: 1.4.0",
        "Modelgate-Environment: production",
        f"Modelgate-Image: registry.example.com/credit-risk@{DIGEST_A}",
        "Modelgate-Gate: credit-gate Passed (13 passed, 0 failed, 1 inconclusive)",
        "Modelgate-Approved-By: alice@example.com 2026-11-22T11:00:00Z",
    ):
        assert trailer in message.splitlines()
    tree = checkout(tmp_path, remote)
    kustomization = yaml.safe_load((tree / "envs/prod/credit-risk/kustomization.yaml").read_text())
    assert kustomization["images"] == [
        {"name": "registry.example.com/credit-risk", "digest": DIGEST_A}
    ]
    parent = yaml.safe_load((tree / "envs/prod/kustomization.yaml").read_text())
    assert parent["resources"] == ["credit-risk"]
    # What the GitOps agent would apply.
    objects = {d["kind"]: d for d in kustomize_build(tree / "envs/prod")}
    assert set(objects) == {"Deployment", "Service", "ConfigMap"}
    deployment, config = objects["Deployment"], objects["ConfigMap"]
    assert deployment["metadata"]["namespace"] == "models-prod"
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"registry.example.com/credit-risk@{DIGEST_A}"
    # The generated ConfigMap carries a content hash and the Deployment follows it.
    assert container["envFrom"][0]["configMapRef"]["name"] == config["metadata"]["name"]
    assert config["metadata"]["name"].startswith("credit-risk-production-config-")
    assert config["data"] == deploy_action().config


def test_team_written_files_are_kept_and_only_the_image_and_config_change(
    tmp_path: Path, remote: Path
) -> None:
    seed = checkout(tmp_path, remote)
    base = seed / "envs/prod/credit-risk"
    base.mkdir(parents=True)
    team_deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "scorer"},
        "spec": {
            "selector": {"matchLabels": {"app": "scorer"}},
            "template": {
                "metadata": {"labels": {"app": "scorer"}},
                "spec": {
                    "containers": [{"name": "scorer", "image": "registry.example.com/credit-risk"}]
                },
            },
        },
    }
    (base / "scorer.yaml").write_text(yaml.safe_dump(team_deployment))
    (base / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": ["scorer.yaml"], "commonLabels": {"team": "risk"}})
    )
    git(seed, "add", "-A")
    git(seed, "commit", "--quiet", "-m", "Team base")
    git(seed, "push", "--quiet", "origin", "HEAD:main")

    delivery(tmp_path).deploy(environment(remote), deploy_action(), NOW)
    tree = checkout(tmp_path, remote)
    kustomization = yaml.safe_load((tree / "envs/prod/credit-risk/kustomization.yaml").read_text())
    assert kustomization["commonLabels"] == {"team": "risk"}
    assert kustomization["resources"][0] == "scorer.yaml"
    assert (tree / "envs/prod/credit-risk/scorer.yaml").read_text() == yaml.safe_dump(
        team_deployment
    )
    images = [
        c["image"]
        for d in kustomize_build(tree / "envs/prod/credit-risk")
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
    ]
    assert f"registry.example.com/credit-risk@{DIGEST_A}" in images


def test_helm_values_and_manifest_formats(tmp_path: Path, remote: Path) -> None:
    seed = checkout(tmp_path, remote)
    (seed / "envs/prod/credit-risk").mkdir(parents=True)
    (seed / "envs/prod/credit-risk/values.yaml").write_text("replicaCount: 3\n")
    git(seed, "add", "-A")
    git(seed, "commit", "--quiet", "-m", "Values")
    git(seed, "push", "--quiet", "origin", "HEAD:main")
    delivery(tmp_path).deploy(environment(remote, format="helm-values"), deploy_action(), NOW)
    tree = checkout(tmp_path, remote)
    values = yaml.safe_load((tree / "envs/prod/credit-risk/values.yaml").read_text())
    assert values["replicaCount"] == 3  # the team's keys stay
    assert values["image"] == {"repository": "registry.example.com/credit-risk", "digest": DIGEST_A}
    assert values["config"]["THRESHOLD"] == "0.5"
    assert values["modelgate"]["release"] == "team/credit-risk-1-4-0"

    env = environment(remote, format="manifest", path="envs/plain")
    delivery(tmp_path).deploy(env, deploy_action(), NOW)
    tree = checkout(tmp_path, remote)
    kinds = {
        yaml.safe_load(path.read_text())["kind"]
        for path in (tree / "envs/plain/credit-risk").iterdir()
    }
    assert kinds == {"Deployment", "Service", "ConfigMap"}


def test_a_rerun_after_a_crash_adds_no_second_commit(tmp_path: Path, remote: Path) -> None:
    env = environment(remote)
    first = delivery(tmp_path, "before-crash").deploy(env, deploy_action(), NOW)
    # A new operator process with an empty cache repeats the same promotion.
    again = delivery(tmp_path, "after-crash").deploy(env, deploy_action(), NOW)
    assert again == first
    assert len(messages(remote)) == 2  # the seed commit and one promotion
    # The same promotion committed twice over a stale clone: still one commit.
    reused = delivery(tmp_path, "before-crash")
    assert reused.deploy(env, deploy_action(), NOW) == first
    assert len(messages(remote)) == 2


def test_a_push_that_loses_a_race_is_reapplied_on_the_new_tip(
    tmp_path: Path, remote: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rival = checkout(tmp_path, remote)
    real_push = Workspace.push
    raced: list[bool] = []

    def push_after_a_rival(self: Workspace, branch: str, force: bool = False) -> bool:
        if not raced:  # someone else pushes between our fetch and our push
            raced.append(True)
            (rival / "OTHER.md").write_text("another team's change\n")
            git(rival, "add", "OTHER.md")
            git(rival, "commit", "--quiet", "-m", "Unrelated change")
            git(rival, "push", "--quiet", "origin", "HEAD:main")
        return real_push(self, branch, force)

    monkeypatch.setattr(Workspace, "push", push_after_a_rival)
    sha = delivery(tmp_path).deploy(environment(remote), deploy_action(), NOW)
    history = messages(remote)
    assert [m.splitlines()[0] for m in history] == [
        "Promote credit-risk 1.4.0 to production",
        "Unrelated change",
        "Start",
    ]
    assert git(remote, "rev-parse", "main").strip() == sha
    tree = checkout(tmp_path, remote)
    assert (tree / "OTHER.md").exists()
    assert (tree / "envs/prod/credit-risk/kustomization.yaml").exists()


def test_concurrent_promotions_of_different_models_all_land(tmp_path: Path, remote: Path) -> None:
    env = environment(remote)
    errors: list[BaseException] = []

    def promote(worker: int) -> None:
        operator = delivery(tmp_path, f"cache-{worker}")
        for index in range(3):
            model = f"model-{worker}-{index}"
            try:
                operator.deploy(env, deploy_action(f"{model}-1", model=model), NOW)
            except BaseException as error:  # reported below
                errors.append(error)

    threads = [threading.Thread(target=promote, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    tree = checkout(tmp_path, remote)
    models = sorted(p.name for p in (tree / "envs/prod").iterdir() if p.is_dir())
    assert models == sorted(f"model-{w}-{i}" for w in range(3) for i in range(3))
    parent = yaml.safe_load((tree / "envs/prod/kustomization.yaml").read_text())
    assert parent["resources"] == models
    assert len(messages(remote)) == 1 + 9


def test_rollback_is_a_revert_and_git_matches_what_runs(tmp_path: Path, remote: Path) -> None:
    env = environment(remote)
    operator = delivery(tmp_path)
    operator.deploy(env, deploy_action("credit-risk-1-3-0"), NOW)
    before = checkout(tmp_path, remote)
    newer = deploy_action("credit-risk-1-4-0", image=f"registry.example.com/credit-risk@{DIGEST_B}")
    promoted = operator.deploy(env, newer, NOW)
    live = operator.observe(env, "credit-risk", "team/credit-risk-1-4-0")
    assert live is not None
    assert (live.release, live.revision) == ("team/credit-risk-1-4-0", promoted)
    assert live.predictions is not None
    assert live.predictions.sha256 == "ab" * 32

    rollback = Rollback("production", "models-prod", "team/credit-risk-1-4-0", "credit-risk")
    reverted = operator.rollback(env, rollback, NOW)
    assert reverted is not None
    message = messages(remote)[0]
    assert message.splitlines()[0] == "Roll back credit-risk in production"
    assert f"This reverts commit {promoted}." in message
    after = checkout(tmp_path, remote)
    assert git(after, "diff", "--stat", "HEAD~2", "HEAD").strip() == ""
    for name in ("kustomization.yaml", "credit-risk/kustomization.yaml"):
        assert (after / "envs/prod" / name).read_text() == (before / "envs/prod" / name).read_text()
    live = operator.observe(env, "credit-risk", "team/credit-risk-1-4-0")
    assert live is not None
    assert live.release == "team/credit-risk-1-3-0"
    # Idempotent: the release is no longer live, nothing more to revert.
    assert operator.rollback(env, rollback, NOW) is None
    assert len(messages(remote)) == 4


@pytest.mark.parametrize(
    ("healthy", "message"),
    [(True, None), (False, "Argo CD Application argocd/app is Synced/Progressing")],
)
def test_an_agent_state_of_an_older_revision_says_nothing_of_the_promotion(
    tmp_path: Path, remote: Path, healthy: bool, message: str | None
) -> None:
    """Argo CD's sync and health are of the revision it synced: at a revision
    before the promotion the environment waits for that commit, whatever the
    health; at the promotion or after it, its health decides."""
    env = environment(remote)
    start = git(remote, "rev-parse", "main").strip()
    synced = {"revision": start}
    settings = OperatorSettings(git_cache=str(tmp_path / "cache"), git_fetch_seconds=0)
    operator = GitOpsDelivery(
        settings, lambda e: None, lambda e, m, i: RolloutState(healthy, message, synced["revision"])
    )
    promoted = operator.deploy(env, deploy_action(), NOW)
    live = operator.observe(env, "credit-risk", "team/credit-risk-1-4-0")
    assert live is not None
    assert live.ready is False
    assert (
        live.message == f"synced revision {start[:12]} does not contain commit {promoted[:12]} yet"
    )
    synced["revision"] = promoted
    live = operator.observe(env, "credit-risk", "team/credit-risk-1-4-0")
    assert live is not None
    assert (live.ready, live.message) == (healthy, message)


def test_review_branch_waits_for_the_merge(tmp_path: Path, remote: Path) -> None:
    env = environment(remote, strategy="pullRequestBranch")
    operator = delivery(tmp_path)
    sha = operator.deploy(env, deploy_action(), NOW)
    branch = "modelgate/production/credit-risk-1-4-0"
    assert git(remote, "rev-parse", branch).strip() == sha
    assert len(messages(remote)) == 1  # main untouched
    pending = operator.observe(env, "credit-risk", "team/credit-risk-1-4-0")
    assert pending is not None
    assert not pending.ready
    assert pending.message == f"waiting for branch {branch} to be merged into main"
    # Nobody else sees it as live.
    assert operator.observe(env, "credit-risk", "team/other") is None
    # A re-run does not push again.
    assert operator.deploy(env, deploy_action(), NOW) == sha
    reviewer = checkout(tmp_path, remote)
    git(reviewer, "fetch", "--quiet", "origin", branch)
    git(reviewer, "merge", "--quiet", "--no-ff", "-m", "Merge review", "FETCH_HEAD")
    git(reviewer, "push", "--quiet", "origin", "HEAD:main")
    live = operator.observe(env, "credit-risk", "team/credit-risk-1-4-0")
    assert live is not None
    assert live.ready
    assert (live.release, live.revision) == ("team/credit-risk-1-4-0", sha)


def test_token_never_appears_in_errors(tmp_path: Path) -> None:
    token = "ghp_s3cr3tt0k3nvalue"
    credentials = GitCredentials(token=token, username="bot")
    env = environment(tmp_path, repository="https://127.0.0.1:9/org/deploy.git", path="p")
    settings = OperatorSettings(git_cache=str(tmp_path / "cache"), git_fetch_seconds=0)
    operator = GitOpsDelivery(settings, lambda e: credentials, lambda e, m, i: RolloutState(True))
    with pytest.raises(GitError) as caught:
        operator.deploy(env, deploy_action(), NOW)
    assert caught.value.transient  # connection refused: worth retrying
    assert token not in str(caught.value)
    assert credentials.secrets()[1] not in str(caught.value)
    config = (tmp_path / "cache").rglob("config")
    assert all(token not in path.read_text() for path in config)


def test_secret_without_credentials_is_a_clear_error() -> None:
    with pytest.raises(GitError, match="neither `token`"):
        GitCredentials.from_secret({"user": "x"}, "git-credentials")


def test_log_parsing_ignores_foreign_trailers() -> None:
    text = "abc\x1f2026-11-22T12:00:00+00:00\x1fSigned-off-by: x\nModelgate-Promotion: p1\n\x1e"
    [entry] = gitops.parse_log(text)
    assert entry.trailers == {"Modelgate-Promotion": "p1"}


def test_https_token_authenticates_and_a_wrong_one_is_refused(tmp_path: Path) -> None:
    bare = bare_repository(tmp_path)
    with git_http_server(tmp_path, "deploy-bot", "tok-7f3a9c") as server:
        env = environment(bare, repository=f"{server.url}/{bare.name}")

        def operator(name: str, credentials: GitCredentials | None) -> GitOpsDelivery:
            settings = OperatorSettings(git_cache=str(tmp_path / name), git_fetch_seconds=0)
            return GitOpsDelivery(
                settings, lambda e: credentials, lambda e, m, i: RolloutState(True)
            )

        good = GitCredentials(token="tok-7f3a9c", username="deploy-bot")
        sha = operator("good", good).deploy(env, deploy_action(), NOW)
        assert git(bare, "rev-parse", "main").strip() == sha
        assert "Basic" in server.seen_authorization
        # The token never lands in the clone's config.
        assert (
            "tok-7f3a9c"
            not in (tmp_path / "good")
            .joinpath(next(p.name for p in (tmp_path / "good").iterdir()), ".git", "config")
            .read_text()
        )

        wrong = GitCredentials(token="wrong-token-1234", username="deploy-bot")
        with pytest.raises(GitError) as refused:
            operator("wrong", wrong).deploy(env, deploy_action("credit-risk-9"), NOW)
        assert not refused.value.transient  # retrying cannot help
        assert "wrong-token-1234" not in str(refused.value)
        with pytest.raises(GitError) as anonymous:
            operator("anonymous", None).deploy(env, deploy_action("credit-risk-9"), NOW)
        assert not anonymous.value.transient
    assert len(messages(bare)) == 2


def test_ssh_key_goes_to_a_private_file_with_strict_host_checking(tmp_path: Path) -> None:
    credentials = GitCredentials(
        ssh_private_key="-----KEY-----", known_hosts="git.example.com ssh-ed25519 AAAA"
    )
    env = credentials.environment(tmp_path)
    key = tmp_path / "id"
    assert key.read_text() == "-----KEY-----\n"
    assert key.stat().st_mode & 0o777 == 0o600
    assert env["GIT_SSH_COMMAND"].startswith(f"ssh -i {key} -o IdentitiesOnly=yes")
    assert "StrictHostKeyChecking=yes" in env["GIT_SSH_COMMAND"]
    assert f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in env["GIT_SSH_COMMAND"]
    assert credentials.secrets() == ["-----KEY-----"]


def test_a_remote_that_is_down_is_retried_later_and_commits_once(tmp_path: Path) -> None:
    bare = bare_repository(tmp_path)
    with git_http_server(tmp_path, "deploy-bot", "tok-1") as server:
        env = environment(bare, repository=f"{server.url}/{bare.name}")
        settings = OperatorSettings(git_cache=str(tmp_path / "cache"), git_fetch_seconds=0)
        credentials = GitCredentials(token="tok-1", username="deploy-bot")
        operator = GitOpsDelivery(
            settings, lambda e: credentials, lambda e, m, i: RolloutState(True)
        )
        server.down = True
        with pytest.raises(GitError) as unavailable:
            operator.deploy(env, deploy_action(), NOW)
        assert unavailable.value.transient  # the operator retries with backoff
        assert "503" in str(unavailable.value)
        server.down = False
        sha = operator.deploy(env, deploy_action(), NOW)
        assert operator.deploy(env, deploy_action(), NOW) == sha
    assert git(bare, "rev-parse", "main").strip() == sha
    assert len(messages(bare)) == 2


@pytest.mark.parametrize(
    ("detail", "transient"),
    [
        (
            "access 'http://127.0.0.1:44015/d.git/': The requested URL returned error: 503",
            True,
        ),
        (
            "access 'http://127.0.0.1:44015/d.git/': The requested URL returned error: 401",
            False,
        ),
        (
            "access 'https://git.example.com/d.git/': The requested URL returned error: 403",
            False,
        ),
        ("Could not resolve host: git.example.com", True),
        ("Failed to connect to 127.0.0.1 port 40301: Connection refused", True),
        ("fatal: Authentication failed for 'https://git.example.com/d.git/'", False),
        ("remote: error: GH006: Protected branch update failed for refs/heads/main.", False),
        ("! HEAD:refs/heads/main [remote rejected] (pre-receive hook declined)", False),
    ],
)
def test_errors_are_classified_by_what_they_say(detail: str, transient: bool) -> None:
    assert gitops._transient(detail) is transient


def test_a_push_refused_by_the_server_is_permanent_and_says_why(tmp_path: Path) -> None:
    """A protected branch (a pre-receive hook that declines): retrying cannot
    help, so the error is permanent, carries the server's reason, and the
    next attempt after the hook is lifted commits once."""
    bare = bare_repository(tmp_path)
    hook = bare / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'main is protected: open a pull request' >&2\nexit 1\n")
    hook.chmod(0o755)
    operator = delivery(tmp_path)
    with pytest.raises(GitError) as refused:
        operator.deploy(environment(bare), deploy_action(), NOW)
    assert not refused.value.transient
    assert "main is protected: open a pull request" in str(refused.value)
    assert len(messages(bare)) == 1  # nothing landed
    hook.unlink()
    sha = operator.deploy(environment(bare), deploy_action(), NOW)
    assert git(bare, "rev-parse", "main").strip() == sha
    assert len(messages(bare)) == 2


def test_a_failed_config_change_is_reverted_back_to_the_release_s_last_config(
    tmp_path: Path, remote: Path
) -> None:
    env = environment(remote)
    operator = delivery(tmp_path)
    operator.deploy(env, deploy_action(), NOW)
    changed = deploy_action(
        config={"FEATURE_STORE_URL": "https://features.prod.example.com", "THRESHOLD": "0.7"},
        config_hash="d" * 64,
        rollout=2,
    )
    second = operator.deploy(env, changed, NOW)
    live = operator.observe(env, "credit-risk", "team/credit-risk-1-4-0")
    assert live is not None
    assert (live.config_hash, live.rollout, live.revision) == ("d" * 64, 2, second)
    rollback = Rollback(
        environment="production",
        namespace="models-prod",
        release="team/credit-risk-1-4-0",
        model="credit-risk",
        config_hash="c" * 64,
    )
    reverted = operator.rollback(env, rollback, NOW)
    assert reverted is not None
    assert f"This reverts commit {second}." in messages(remote)[0]
    back = operator.observe(env, "credit-risk", "team/credit-risk-1-4-0")
    assert back is not None
    assert (back.release, back.config_hash, back.rollout) == (
        "team/credit-risk-1-4-0",
        "c" * 64,
        1,
    )
    # What the agent applies from the branch is the first config again.
    tree = checkout(tmp_path, remote)
    [config] = [d for d in kustomize_build(tree / "envs/prod") if d["kind"] == "ConfigMap"]
    assert config["data"]["THRESHOLD"] == "0.5"
    # Asked again (a retry after a lost answer): nothing more is reverted.
    assert operator.rollback(env, rollback, NOW) is None
    assert git(remote, "rev-parse", "main").strip() == reverted
