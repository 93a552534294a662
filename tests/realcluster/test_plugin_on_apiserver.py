"""``kubectl modelgate`` run by the real kubectl (which finds the plugin on
PATH) as a person with a client certificate and a namespaced Role: the
tables, a release's tree while it waits for an approval, an approval credited
to whoever the API server says the caller is, a failed training retried once
its data arrived, and refusals with their exit codes."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from modelgate.backends.s3 import S3Settings, make_client
from tests.realcluster.conftest import BUCKET, Team, conditions, documents, grants
from tests.support.cluster import wait_for
from tests.support.controlplane import BIN, ControlPlane
from tests.support.installation import user_kubeconfig
from tests.support.s3server import S3Server

RELEASE = "credit-risk-1-4-0"
# What a release author gets in the team's namespace: the three kinds, and
# the Jobs and pods there (not those of the environments' namespaces).
AUTHOR_RULES = [
    {"apiGroups": ["modelgate.dev"],
     "resources": ["modelreleases", "environments", "qualitygates"],
     "verbs": ["get", "list", "watch", "create", "patch"]},
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list"]},
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
]  # fmt: skip


def _environments(
    staging_policy: dict[str, Any] | None = None, **production_policy: Any
) -> list[dict[str, Any]]:
    environments = copy.deepcopy(documents("environments.yaml"))
    named = {e["metadata"]["name"]: e for e in environments}
    named["production"]["spec"].setdefault("policy", {}).update(production_policy)
    named["staging"]["spec"].setdefault("policy", {}).update(staging_policy or {})
    return environments


def _author(team: Team, user: str) -> None:
    rbac = client.RbacAuthorizationV1Api(team.api)
    rbac.create_namespaced_role(
        team.namespace, {"metadata": {"name": "release-author"}, "rules": AUTHOR_RULES}
    )
    rbac.create_namespaced_role_binding(
        team.namespace,
        {"metadata": {"name": "release-authors"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": "release-author"},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]},
    )  # fmt: skip


def _wait_ready_reason(team: Team, reason: str, timeout: float, what: str) -> None:
    wait_for(
        lambda: (
            conditions(team.get("ModelRelease", RELEASE)).get("Ready", {}).get("reason") == reason
        ),
        timeout,
        what,
        lambda: team.get("ModelRelease", RELEASE).get("status"),
    )


def plugin(kubeconfig: Path, namespace: str) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``kubectl modelgate ARGS -n NAMESPACE`` as the kubeconfig's user; the
    plugin is the one pip installed next to this Python."""
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        # kubectl completes through its hidden __complete command.
        command = (
            ["__complete", "modelgate", "-n", namespace, *args[1:]]
            if args[0] == ("__complete")
            else ["modelgate", *args, "-n", namespace]
        )
        return subprocess.run(
            [str(BIN / "kubectl"), *command],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "PATH": path, "KUBECONFIG": str(kubeconfig)},
        )  # fmt: skip

    return run


def test_soak_and_approval_hold_production_and_the_plugin_approves_as_the_caller(
    new_team: Callable[..., Team], control_plane: ControlPlane, tmp_path: Path
) -> None:
    team = new_team(environments=_environments({"soak": "1h"}, requireApproval=True))
    _author(team, "alice")
    alice = plugin(user_kubeconfig(control_plane, tmp_path, "alice"), team.namespace)
    team.create(team.release_document())
    # Staging's hour of soak holds production; a hotfix does not wait it out.
    _wait_ready_reason(team, "Soaking", 240, "the release to soak in staging")
    promoted = alice("promote", RELEASE, "-e", "production", "--reason", "hotfix")
    assert promoted.returncode == 0, promoted.stderr
    assert "promotion in production asked by alice" in promoted.stdout
    again = alice("promote", RELEASE, "-e", "production")
    assert again.returncode == 3
    assert "it stands until the release is live there" in again.stderr
    _wait_ready_reason(team, "AwaitingApproval", 240, "the release to wait for an approval")
    release = team.get("ModelRelease", RELEASE)
    assert "production" in conditions(release)["Ready"]["message"]
    apps = client.AppsV1Api(team.api)
    assert apps.list_namespaced_deployment(team.targets["production"]).items == []

    listed = alice("get", "releases")
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["NAME", "MODEL", "VERSION", "PHASE", "GATE", "LIVE", "IN", "AGE"]
    assert row.split()[:6] == [RELEASE, "credit-risk", "1.4.0", "Promoting", "Passed", "staging"]
    tree = alice("get", "release", RELEASE)
    assert tree.returncode == 0, tree.stderr
    lines = tree.stdout.splitlines()
    assert (
        lines[0] == f"ModelRelease {team.namespace}/{RELEASE}: Promoting (model credit-risk 1.4.0)"
    )
    assert any(line.startswith("├─ Gate credit-gate: Passed (") for line in lines), lines
    assert any("Environment staging: Deployed" in line for line in lines), lines
    production = next(i for i, line in enumerate(lines) if "Environment production:" in line)
    assert "approv" in lines[production + 1], lines[production:]
    assert any("(training): Succeeded" in line for line in lines), lines
    # Alice may not list Jobs where staging deploys: shown, not fatal.
    assert f"(not shown: Jobs in {team.targets['staging']}: 403 Forbidden)" in lines

    # kubectl's own completion asks the plugin's completer (kubectl_complete-modelgate).
    completed = alice("__complete", "approve", "")
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.splitlines() == [RELEASE, ":4"]
    completed = alice("__complete", "approve", RELEASE, "-e", "pro")
    assert completed.stdout.splitlines() == ["production", ":4"]

    nowhere = alice("approve", RELEASE, "--environment", "nowhere")
    assert nowhere.returncode == 3
    assert "'nowhere' is not on the promotion path" in nowhere.stderr
    assert "pass --environment with one of them" in nowhere.stderr
    missing = alice("approve", "credit-risk-9-9-9", "--environment", "production")
    assert missing.returncode == 1
    assert "404 Not Found" in missing.stderr
    assert "kubectl modelgate get releases" in missing.stderr
    # Held back while someone looks, then let go on.
    aborted = alice("abort", RELEASE, "--reason", "hold for the review")
    assert aborted.returncode == 0, aborted.stderr
    stopped = team.wait_phase(RELEASE, "Aborted")
    ready = conditions(stopped)["Ready"]
    assert (ready["reason"], ready["status"]) == ("Aborted", "False")
    assert ready["message"].startswith("aborted by alice at ")
    assert (
        "(hold for the review): promoted no further; it stays live in staging" in ready["message"]
    )
    resumed = alice("retry", RELEASE)
    assert resumed.returncode == 0, resumed.stderr
    assert "the aborted release from where it stopped" in resumed.stdout
    _wait_ready_reason(team, "AwaitingApproval", 60, "the release to wait for its approval again")

    approved = alice("approve", RELEASE, "-e", "production", "--comment", "CHG-7")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip().endswith("approved into production by alice")
    [approval] = team.get("ModelRelease", RELEASE)["spec"]["promotion"]["approvals"]
    assert (approval["approvedBy"], approval["comment"]) == ("alice", "CHG-7")
    again = alice("approve", RELEASE, "-e", "production")
    assert again.returncode == 3
    assert "already has an approval for production (by alice)" in again.stderr

    diff = alice("diff", RELEASE, "-e", "staging", "-e", "production")
    assert diff.returncode == 0, diff.stderr
    assert diff.stdout.splitlines()[2].split() == [
        "~", "FEATURE_STORE_URL", "https://features.staging.example.com",
        "https://features.prod.example.com",
    ]  # fmt: skip
    # The hash diff shows is the one the operator records for production.
    hashes = next(line for line in diff.stdout.splitlines() if "(sha256)" in line).split()
    wanted = team.get("ModelRelease", RELEASE)["status"]["environments"]
    staging = next(e for e in wanted if e["name"] == "staging")
    assert staging["configHash"].startswith(hashes[1])
    unknown = alice("diff", RELEASE, "-e", "qa")
    assert unknown.returncode == 3
    assert "no Environment qa in namespace" in unknown.stderr

    released = team.wait_phase(RELEASE, "Released")
    entries = {e["name"]: e for e in released["status"]["environments"]}
    assert entries["production"]["approvedBy"] == "alice"
    assert len(apps.list_namespaced_deployment(team.targets["production"]).items) == 1
    as_yaml = alice("get", "environments", "-o", "yaml")
    assert as_yaml.returncode == 0, as_yaml.stderr
    environments = {e["metadata"]["name"]: e for e in yaml.safe_load(as_yaml.stdout)["items"]}
    assert environments["production"]["status"]["liveRelease"] == RELEASE
    watched = alice("get", "release", RELEASE, "--watch", "--watch-seconds", "2")
    assert watched.returncode == 0, watched.stderr
    assert watched.stdout.startswith(f"ModelRelease {team.namespace}/{RELEASE}: Released")

    # Something around production changed: verify it there again.
    first_check = entries["production"]["verificationJob"]
    reverified = alice("reverify", RELEASE, "-e", "production", "--reason", "new feature store")
    assert reverified.returncode == 0, reverified.stderr
    assert "verification again in production asked by alice" in reverified.stdout
    asked_at = team.get("ModelRelease", RELEASE)["spec"]["promotion"]["reverifications"][0][
        "requestedAt"
    ]

    def checked_again() -> dict[str, Any] | None:
        release = team.get("ModelRelease", RELEASE)
        entry = {e["name"]: e for e in release["status"]["environments"]}["production"]
        done = entry.get("reverifyRequest") == asked_at and entry["phase"] == "Deployed"
        return entry if done and release["status"]["phase"] == "Released" else None

    production = wait_for(checked_again, 120, "production to be verified again")
    assert production["verificationJob"] != first_check
    jobs = client.BatchV1Api(team.api).list_namespaced_job(team.targets["production"]).items
    assert {first_check, production["verificationJob"]} <= {j.metadata.name for j in jobs}

    # On call: production goes back to what was there before, nothing.
    rolled = alice("rollback", RELEASE, "-e", "production", "--reason", "INC-42: latency")
    assert rolled.returncode == 0, rolled.stderr
    assert "rollback in production asked by alice" in rolled.stdout
    rolled_back = team.wait_phase(RELEASE, "RolledBack")
    entries = {e["name"]: e for e in rolled_back["status"]["environments"]}
    assert entries["production"]["rolledBackBy"] == "alice"
    assert entries["production"]["message"] == (
        "rolled back on request by alice (INC-42: latency): the previous release was put back"
    )
    assert entries["staging"]["phase"] == "Deployed"
    wait_for(
        lambda: apps.list_namespaced_deployment(team.targets["production"]).items == [],
        60,
        "production's Deployment to go (nothing was live there before)",
    )
    assert len(apps.list_namespaced_deployment(team.targets["staging"]).items) == 1
    again = alice("rollback", RELEASE, "-e", "production")
    assert again.returncode == 3
    assert "already rolled back in production" in again.stderr


def _job_states(team: Team) -> dict[str, str]:
    jobs = client.BatchV1Api(team.api).list_namespaced_job(team.namespace).items
    states = {}
    for job in jobs:
        done = [c.type for c in job.status.conditions or [] if c.status == "True"]
        states[job.metadata.name] = next(
            (state for state in ("Complete", "Failed") if state in done), "Running"
        )
    return states


# The failed pod's message.
@grants(
    ("", "pods", "list"),
)
def test_a_training_that_fails_says_why_and_runs_again_when_retried(
    new_team: Callable[..., Team], control_plane: ControlPlane, s3: S3Server, tmp_path: Path
) -> None:
    """Training data that is not there yet: the trainer exits non-zero, the
    real Job controller gives up after the backoff limit, and the release is
    Failed naming the Job's reason and the pod's last words, nothing deployed.
    The data lands; `kubectl modelgate retry` as alice runs the training
    again as a new Job beside the failed one, and the release goes on."""
    team = new_team()
    _author(team, "alice")
    alice = plugin(user_kubeconfig(control_plane, tmp_path, "alice"), team.namespace)
    snapshot = f"data/snapshot-{team.namespace}.csv"  # each run's own: it lands later
    document = team.release_document()
    document["spec"]["training"]["backoffLimit"] = 1
    document["spec"]["training"]["data"]["train"] = f"s3://{BUCKET}/{snapshot}"
    team.create(document)
    release = team.wait_phase(RELEASE, "Failed")
    trained = conditions(release)["Trained"]
    assert (trained["status"], trained["reason"]) == ("False", "TrainingFailed")
    assert "BackoffLimitExceeded" in trained["message"], trained
    assert snapshot.rsplit("/", maxsplit=1)[-1] in trained["message"], trained
    assert "kubectl modelgate retry" in conditions(release)["Stalled"]["message"]
    [(failed, state)] = _job_states(team).items()
    assert state == "Failed"
    job = client.BatchV1Api(team.api).read_namespaced_job(failed, team.namespace)
    assert job.status.failed == 2  # the first try and one retry
    apps = client.AppsV1Api(team.api)
    for target in team.targets.values():
        assert apps.list_namespaced_deployment(target).items == []

    store = make_client(S3Settings(bucket=BUCKET, endpoint_url=s3.endpoint, path_style=True))
    store.copy_object(
        Bucket=BUCKET, Key=snapshot, CopySource={"Bucket": BUCKET, "Key": "data/train.csv"}
    )
    retried = alice("retry", RELEASE, "--reason", "the snapshot landed")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == (
        f"modelrelease.modelgate.dev/{RELEASE}: retry asked by alice; the operator runs "
        "training (or scoring) again (see status.retry)"
    )
    pending = alice("retry", RELEASE)
    if pending.returncode != 0:  # the operator may already have acted on it
        assert pending.returncode == 3, pending.stderr
        assert "not acted on yet" in pending.stderr or "nothing failed" in pending.stderr

    released = team.wait_phase(RELEASE, "Released")
    record = released["status"]["retry"]
    asked = released["spec"]["retry"]
    assert (asked["requestedBy"], asked["reason"]) == ("alice", "the snapshot landed")
    assert (record["handled"], record["step"], record["training"]) == (
        asked["requestedAt"], "Training", 1,
    )  # fmt: skip
    states = _job_states(team)
    assert states.pop(failed) == "Failed"  # the failed Job and its logs stay
    training = released["status"]["training"]["jobName"]
    assert training != failed
    assert states[training] == "Complete"
    tree = alice("get", "release", RELEASE)
    assert f"├─ Retry asked by alice at {asked['requestedAt']}" in tree.stdout
    nothing = alice("retry", RELEASE)
    assert nothing.returncode == 3
    assert "nothing failed to retry" in nothing.stderr
