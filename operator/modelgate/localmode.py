"""Local mode: the reconciliation core driven on a laptop, no cluster.

Training runs as a local process, artifacts are content-addressed files under
the state directory, environments are simulated by JSON records. The loop is
the operator's loop: observe, reconcile (pure), act, record status.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from modelgate import evaluate
from modelgate.api import Environment, ModelRelease, QualityGate
from modelgate.api.common import Condition, format_time
from modelgate.api.environment import EnvironmentStatus, Promotion
from modelgate.api.loader import LoadedResource, load_paths
from modelgate.api.modelrelease import (
    ArtifactRecord,
    GateStatus,
    ModelReleaseSpec,
    ModelReleaseStatus,
    Phase,
    immutable_changes,
)
from modelgate.api.qualitygate import QualityGateStatus
from modelgate.api.rollout import CHALLENGER, CHAMPION, Strategy
from modelgate.backends.base import ArtifactError
from modelgate.backends.evaluation_job import (
    evaluation_job_name,
    evaluation_payload,
    parse_outputs,
    record_evaluation_outputs,
    record_failed_evaluation,
)
from modelgate.backends.gitops import (
    GitCredentials,
    GitOpsDelivery,
    RolloutState,
    is_gitops,
    split_unsupported,
)
from modelgate.backends.local import (
    LocalArtifactStore,
    LocalDeployer,
    LocalProcessRunner,
    LocalServers,
    LocalStatusStore,
    local_server_image,
)
from modelgate.backends.local_challengers import LocalChallengers
from modelgate.backends.mlflow import headers_from_environment, observe_registry, perform_sync
from modelgate.backends.prometheus import PrometheusClient
from modelgate.metrics import Metrics
from modelgate.promotion import (
    Deploy,
    DeploymentObservation,
    EvaluateGate,
    Observed,
    Rollback,
    StartTraining,
    StartVerification,
    SyncRegistry,
    TrainingObservation,
    reconcile,
)
from modelgate.promotion import conditions as cond
from modelgate.promotion.analysis import due_queries
from modelgate.promotion.conditions import READY, set_condition
from modelgate.promotion.environment_status import environment_verdicts
from modelgate.promotion.keys import (
    VERIFY_COMMAND,
    release_key,
)
from modelgate.promotion.plan import RemoveChallenger, SetTraffic
from modelgate.promotion.registry_sync import record_sync, registered_version
from modelgate.promotion.rollout import due_queries as due_arm_queries
from modelgate.promotion.scoring import scoring_job
from modelgate.promotion.training import registry_query, training_job
from modelgate.settings import OperatorSettings, PrometheusSettings

MAX_STEPS = 50
# Rounds of analysis queries Prometheus leaves unanswered before a run stops waiting.
UNREACHABLE_ROUNDS = 3
# Longest a local evaluator process may run.
EVALUATION_TIMEOUT = timedelta(hours=1)


def _spec_hash(release: ModelRelease) -> str:
    """Changes exactly when the spec changes: local mode's generation counter."""
    return hashlib.sha256(json.dumps(release.spec.wire(), sort_keys=True).encode()).hexdigest()


@dataclass
class ReleaseOutcome:
    release: ModelRelease
    steps: int
    released: bool
    # Why the edit was not taken (fields that may not change), as the API server says it.
    refused: list[str] = field(default_factory=list)


@dataclass
class LocalRun:
    """One ``modelgate run``: loads manifests, reconciles releases to rest."""

    state_dir: Path
    resources: list[LoadedResource]
    log: Callable[[str], None] = print
    max_wait: timedelta = timedelta(seconds=60)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    # Where analysis queries go; None: an analysis says so and the run stops there.
    prometheus: PrometheusSettings | None = None
    outcomes: list[ReleaseOutcome] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.store = LocalArtifactStore(self.state_dir / "artifacts")
        self.runner = LocalProcessRunner(self.state_dir, self.store)
        self.servers = LocalServers(self.state_dir)
        self.deployer = LocalDeployer(self.state_dir, self.servers)
        self.challengers = LocalChallengers(self.state_dir, self.servers)
        self.server_image = local_server_image()
        # GitOps environments commit for real; with no cluster to watch, the
        # pushed commit counts as rolled out.
        self.gitops = GitOpsDelivery(
            OperatorSettings(
                git_cache=str(self.state_dir / "git"),
                git_fetch_seconds=0,
                # The image a committed router runs (the reference server's).
                server_image=self.server_image,
            ),
            lambda environment: GitCredentials.from_environment(),
            lambda environment, model, image: RolloutState(True),
        )
        self.objects = LocalStatusStore(self.state_dir)
        self.analysis = PrometheusClient(self.prometheus)
        self.metrics = Metrics()
        self.base_dirs: dict[str, Path] = {}
        self.gates: dict[tuple[str, str], QualityGate] = {}
        self.environments: dict[str, dict[str, Environment]] = {}
        self.releases: list[ModelRelease] = []
        for loaded in self.resources:
            resource = loaded.resource
            key = f"{resource.kind}/{resource.namespace}/{resource.name}"
            if key in self.base_dirs:
                raise ValueError(f"{key} is defined twice ({loaded.source})")
            self.base_dirs[key] = loaded.base_dir
            if isinstance(resource, QualityGate):
                self.gates[(resource.namespace, resource.name)] = resource
            elif isinstance(resource, Environment):
                self.environments.setdefault(resource.namespace, {})[resource.name] = resource
            else:
                self.releases.append(resource)

    # -- object bookkeeping ---------------------------------------------------

    def _with_generation(self, release: ModelRelease) -> ModelRelease:
        """Restore the recorded status; bump generation when the spec changed."""
        spec_hash = _spec_hash(release)
        stored = self.objects.load("ModelRelease", release.namespace, release.name) or {}
        generation = int(stored.get("generation", 0))
        if stored.get("specHash") != spec_hash:
            generation += 1
        metadata = release.metadata.model_copy(update={"generation": generation})
        status = stored.get("status")
        return release.model_copy(
            update={
                "metadata": metadata,
                "status": ModelReleaseStatus.model_validate(status) if status else None,
            }
        )

    def _save(self, release: ModelRelease) -> None:
        spec_hash = _spec_hash(release)
        self.objects.save(
            "ModelRelease",
            release.namespace,
            release.name,
            {
                "generation": release.generation,
                "specHash": spec_hash,
                "spec": release.spec.wire(),
                "status": release.status.wire() if release.status else None,
            },
        )

    def _resolve(self, release: ModelRelease, uri: str) -> str:
        """Relative data paths are relative to the manifest that names them."""
        if "://" in uri or Path(uri).is_absolute():
            return uri.removeprefix("file://")
        base = self.base_dirs[f"ModelRelease/{release.namespace}/{release.name}"]
        return str((base / uri).resolve())

    # -- actions --------------------------------------------------------------

    def _act(self, release: ModelRelease, action: Any, now: datetime) -> None:
        name = release.name
        if isinstance(action, StartTraining):
            env = dict(action.env)
            for variable in (
                "MODELGATE_TRAIN_DATA",
                "MODELGATE_EVAL_DATA",
                "MODELGATE_ARTIFACT_URI",
            ):
                if variable in env:
                    env[variable] = self._resolve(release, env[variable])
            what = (
                "scoring"
                if action.job_name == scoring_job(release)
                else "import"
                if release.spec.training is None
                else "training"
            )
            self.log(f"[{name}] {what}: running {action.job_name} as a local process")
            self.runner.start(replace(action, env=env))
        elif isinstance(action, EvaluateGate):
            self.log(f"[{name}] gate: evaluating {len(action.checks)} checks (evaluator process)")
            summary = self._evaluate(release, action, now)
            for check in summary.checks:
                self.log(
                    f"[{name}]     {check.outcome:<12} {check.severity:<8} {check.name}: "
                    f"{check.message}"
                )
        elif isinstance(action, Deploy) and action.challenger:
            self.log(
                f"[{name}] challenger: {action.image} beside the live release in "
                f"{action.environment} (config {action.config_hash[:12]}), no traffic yet"
            )
            environment = self.environments[release.namespace][action.environment]
            if is_gitops(environment):
                commit = self.gitops.deploy_challenger(environment, action, now)
                if commit is not None:
                    self.log(f"[{name}] challenger: committed {commit[:12]} to "
                             f"{_target(environment)}")  # fmt: skip
            self.challengers.deploy(action, now)
            url = self.servers.url(release.namespace, action.environment, CHALLENGER)
            if url is not None:
                self.log(f"[{name}] serve: the challenger answers at {url}/v1/predict")
        elif isinstance(action, SetTraffic):
            record = self.challengers.set_traffic(action)
            environment = self.environments[release.namespace][action.environment]
            if is_gitops(environment) and record.get("state") == "ready":
                # The local router serves it; the repository holds what a
                # cluster's agent would apply (the router first, then the route).
                committed = self.gitops.set_traffic(environment, action, lambda: True)
                if committed is None:
                    committed = self.gitops.set_traffic(environment, action, lambda: True)
                self.log(f"[{name}] traffic: committed to {_target(environment)}: {committed}")
            how = "a mirrored copy" if action.mirror else f"{action.weight}%"
            if record.get("state") == "ready":
                self.log(
                    f"[{name}] traffic: the challenger gets {how} of {action.environment}'s "
                    f"traffic; callers go through the router at {record['url']}"
                )
            else:
                self.log(f"[{name}] ! traffic: {record.get('message', 'the router failed')}")
        elif isinstance(action, RemoveChallenger):
            removed = self.challengers.remove(release.namespace, action.environment)
            environment = self.environments[release.namespace][action.environment]
            if is_gitops(environment):
                removed = (
                    self.gitops.remove_challenger(environment, action.model, action.reason)
                    or removed
                )
            if removed is not None:
                self.log(
                    f"[{name}] challenger: removed from {action.environment}; the live release "
                    "keeps all traffic"
                )
        elif isinstance(action, Deploy):
            # Replacing what is live takes the challenger's place too.
            self.challengers.remove(release.namespace, action.environment)
            environment = self.environments[release.namespace][action.environment]
            if is_gitops(environment):
                self.gitops.remove_challenger(
                    environment, action.model, f"{action.release} takes over"
                )
            self.log(
                f"[{name}] deploy: {action.image} -> {action.environment} "
                f"(namespace {action.namespace}, config {action.config_hash[:12]})"
            )
            environment = self.environments[release.namespace][action.environment]
            if is_gitops(environment):
                commit = self.gitops.deploy(environment, action, now)
                self.log(f"[{name}] deploy: committed {commit[:12]} to {_target(environment)}")
                # What an agent would run from that commit, served here so the
                # environment can be verified and queried like a Direct one.
                self.deployer.serve(release.namespace, action.environment, action.config)
            else:
                self.deployer.deploy(action, now)
            url = self.servers.url(release.namespace, action.environment)
            if url is not None:
                self.log(f"[{name}] serve: {action.environment} answers at {url}/v1/predict")
        elif isinstance(action, StartVerification):
            arm = CHALLENGER if action.challenger else CHAMPION
            endpoint = self.servers.url(release.namespace, action.environment, arm) or ""
            if not endpoint and action.command == VERIFY_COMMAND:
                # Nothing serves here: local mode does not run images.
                self.runner.record_failure(
                    action.job_name,
                    f"nothing serves {release.spec.model.name} in {action.environment} locally "
                    "(local mode runs no images): serve the release with serving: "
                    "ReferenceServer to check its answers here",
                )
                return
            self.log(
                f"[{name}] verify: running {action.job_name} in {action.environment}"
                + (f" against {endpoint}" if endpoint else "")
            )
            self.runner.start_verification(action, endpoint=endpoint)
        elif isinstance(action, SyncRegistry):
            restored = self._restored_version(release, action) if action.rolled_back else None
            ok, message, version = perform_sync(
                action, headers_from_environment(os.environ), restored
            )
            if release.status is not None:
                record_sync(release.status, action, ok, message, version, now)
            self.log(f"[{name}] {'-' if ok else '!'} registry ({action.environment}): {message}")
        elif isinstance(action, Rollback):
            environment = self.environments[release.namespace][action.environment]
            if is_gitops(environment):
                revert = self.gitops.rollback(environment, action, now)
                # The reverted commit's artifact is not known here: stop serving
                # the failed one rather than keep answering with it.
                self.servers.stop(release.namespace, action.environment)
                self.log(
                    f"[{name}] rollback: reverted in {_target(environment)}"
                    + (f" ({revert[:12]})" if revert else " (nothing to revert)")
                )
            else:
                restored = self.deployer.rollback(action, now)
                self.log(
                    f"[{name}] rollback: {action.environment} is back to {restored or 'nothing'}"
                )

    def _restored_version(self, release: ModelRelease, action: SyncRegistry) -> str | None:
        """The registered version of the release live again where this one was rolled back."""
        live = self.deployer.observe(release.namespace).get(action.environment)
        if live is None or live.release == release_key(release):
            return None
        namespace, _, other = live.release.partition("/")
        stored = self.objects.load("ModelRelease", namespace, other)
        if stored is None:
            return None
        try:
            spec = ModelReleaseSpec.model_validate(stored["spec"])
            status = ModelReleaseStatus.model_validate(stored.get("status") or {})
        except ValidationError:
            return None
        return registered_version(spec, status, action)

    def _evaluate(self, release: ModelRelease, action: EvaluateGate, now: datetime) -> GateStatus:
        """Run the evaluator as a process, as the operator runs it as a Job."""
        resolved = replace(
            action,
            train_data=self._resolve(release, action.train_data),
            evaluation_data=self._resolve(release, action.evaluation_data),
        )
        job = evaluation_job_name(release.name, resolved)
        output = self.state_dir / "evaluations" / job
        env = {
            "PATH": os.environ.get("PATH", ""),
            evaluate.EVALUATION: json.dumps(evaluation_payload(resolved)),
            evaluate.RELEASE: release_key(release),
            evaluate.OUTPUT_URI: str(output),
            evaluate.STORE_DIR: str(self.store.root),
        }
        shards = action.evaluation.parallelism
        if shards > 1:
            # As the Indexed Job: every shard at once, then the merge step.
            failure = self._run_evaluators(
                [
                    {**env, evaluate.SHARDS: str(shards), evaluate.COMPLETION_INDEX: str(i)}
                    for i in range(shards)
                ]
            )
            if failure is not None:
                return record_failed_evaluation(release, action, failure, now)
            env[evaluate.MERGE] = str(shards)
        failure = self._run_evaluators([env])
        if failure is not None:
            return record_failed_evaluation(release, action, failure, now)
        try:
            records = parse_outputs((output / evaluate.OUTPUTS_FILE).read_bytes())
            return record_evaluation_outputs(release, action, records, self.store)
        except (OSError, ValueError, ArtifactError) as error:
            return record_failed_evaluation(release, action, f"unreadable output: {error}", now)

    @staticmethod
    def _run_evaluators(envs: list[dict[str, str]]) -> str | None:
        """Run one evaluator process per environment, all at once; the first
        failure's reason (the shard's, when sharded), or None."""
        processes = [
            subprocess.Popen(
                [sys.executable, "-m", "modelgate.evaluate"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for env in envs
        ]
        failures: list[str] = []
        deadline = time.monotonic() + EVALUATION_TIMEOUT.total_seconds()
        for env, process in zip(envs, processes, strict=True):
            shard = env.get(evaluate.COMPLETION_INDEX)
            where = f"shard {shard}: " if shard is not None else ""
            try:
                _, stderr = process.communicate(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                process.kill()
                process.communicate()
                failures.append(f"{where}the evaluator did not finish within {EVALUATION_TIMEOUT}")
                continue
            if process.returncode != 0:
                said = (stderr.strip().splitlines() or [f"exit {process.returncode}"])[-1]
                failures.append(f"{where}{said}")
        return failures[0] if failures else None

    # -- the loop -------------------------------------------------------------

    def _stored_spec(self, release: ModelRelease) -> ModelReleaseSpec | None:
        stored = self.objects.load("ModelRelease", release.namespace, release.name) or {}
        try:
            return ModelReleaseSpec.model_validate(stored["spec"]) if stored.get("spec") else None
        except ValidationError:
            return None  # written by another version: nothing to compare with

    def _reconcile_release(self, release: ModelRelease) -> ReleaseOutcome:
        stored_spec = self._stored_spec(release)
        refused = immutable_changes(stored_spec, release.spec) if stored_spec is not None else []
        if refused:
            # As the API server would: the edit is not taken, the object and
            # what it deployed stay as they were.
            for message in refused:
                self.log(f"[{release.name}] ! refused: {message}")
            kept = self._with_generation(release.model_copy(update={"spec": stored_spec}))
            return ReleaseOutcome(release=kept, steps=0, released=False, refused=refused)
        release = self._with_generation(release)
        gate = (
            self.gates.get((release.namespace, release.spec.gate.name))
            if release.spec.gate.name
            else None
        )
        environments = self.environments.get(release.namespace, {})
        name = release.name
        steps = 0
        unreachable = 0  # analysis rounds in a row that Prometheus did not answer
        while steps < MAX_STEPS:
            steps += 1
            now = self.clock()
            job = training_job(release, gate)
            measurements = {
                (q.environment, q.metric): self.analysis.measure(q, now)
                for q in due_queries(release, environments, now)
            }
            arm_measurements = {
                (q.environment, q.metric, q.arm, q.field): self.analysis.measure(q, now)
                for q in due_arm_queries(release, environments, now)
            }
            scoring = scoring_job(release)
            observed = Observed(
                training=self.runner.observe(job),
                scoring=self.runner.observe(scoring) if scoring is not None else None,
                deployments=self._deployments(release, environments),
                verifications=self._verifications(release),
                measurements=measurements,
                challengers={
                    name: beside
                    for name, beside in self.challengers.observe(release.namespace).items()
                    if name in environments
                },
                arm_measurements=arm_measurements,
                registered=observe_registry(
                    registry_query(release), headers_from_environment(os.environ)
                ),
            )
            before = release.status.model_copy(deep=True) if release.status else None
            plan = reconcile(
                release, gate, environments, observed, now, server_image=self.server_image,
                rollout_unsupported=_split_unsupported, describe_traffic=_local_traffic,
            )  # fmt: skip
            release = release.model_copy(update={"status": plan.status})
            for event in plan.events:
                marker = "!" if event.type == "Warning" else "-"
                self.log(f"[{name}] {marker} {event.reason}: {event.message}")
            for action in plan.actions:
                self._act(release, action, now)
            if release.status is not None:
                self.metrics.release_changed(release, before, release.status, now)
            self._save(release)
            if plan.actions:
                continue
            looks = [*measurements.items(), *arm_measurements.items()]
            unanswered = sorted({f"{key[0]} {key[1]}: {m.error}" for key, m in looks if m.error})
            for line in unanswered:
                self.log(f"[{name}] ! analysis {line}")
            if unanswered and self.prometheus is None:
                self.log(f"[{name}] analysis waits for Prometheus; run again with --prometheus-url")
                break
            if looks:
                down = all(m.error and not m.invalid for _, m in looks)
                unreachable = unreachable + 1 if down else 0
            if unreachable >= UNREACHABLE_ROUNDS and self.prometheus is not None:
                self.log(
                    f"[{name}] Prometheus at {self.prometheus.url} did not answer "
                    f"{unreachable} times in a row; the analysis waits: run again when it answers"
                )
                break
            if plan.requeue_after is not None and plan.status.phase == Phase.PROMOTING:
                if plan.requeue_after > self.max_wait:
                    self.log(
                        f"[{name}] waiting {plan.requeue_after} is longer than --max-wait; "
                        "run again later to continue"
                    )
                    break
                time.sleep(plan.requeue_after.total_seconds())
                continue
            break
        ready = cond.find(release.status.conditions, cond.READY) if release.status else None
        released = ready is not None and ready.status == "True"
        return ReleaseOutcome(release=release, steps=steps, released=released)

    def _deployments(
        self, release: ModelRelease, environments: dict[str, Environment]
    ) -> dict[str, DeploymentObservation]:
        found = {
            name: live
            for name, live in self.deployer.observe(release.namespace).items()
            if name in environments and not is_gitops(environments[name])
        }
        for name, environment in environments.items():
            if is_gitops(environment):
                live = self.gitops.observe(
                    environment, release.spec.model.name, release_key(release)
                )
                if live is not None:
                    found[name] = live
        return found

    def _gitops_live(self, environment: Environment) -> DeploymentObservation | None:
        """What Git says is live there, for the models of this run's releases."""
        for model in sorted({r.spec.model.name for r in self.releases}):
            live = self.gitops.observe(environment, model, "")
            if live is not None:
                return live
        return None

    def _verifications(self, release: ModelRelease) -> dict[str, TrainingObservation]:
        found: dict[str, TrainingObservation] = {}
        for progress in release.status.environments if release.status else []:
            if progress.verification_job:
                run = self.runner.observe(progress.verification_job)
                if run is not None:
                    found[progress.verification_job] = run
        return found

    def run(self) -> list[ReleaseOutcome]:
        self.outcomes = []
        for namespace in sorted({r.namespace for r in self.releases}):
            self.deployer.ensure_servers(namespace)
            self.challengers.ensure(namespace)
        for release in self.releases:
            self.outcomes.append(self._reconcile_release(release))
        return self.outcomes

    # -- status of the other kinds ---------------------------------------------

    def environment_objects(self) -> list[Environment]:
        """Environments with a status derived from what is live."""
        now = self.clock()
        result = []
        for namespace, environments in sorted(self.environments.items()):
            live = self.deployer.observe(namespace)
            releases = [o.release for o in self.outcomes if o.release.namespace == namespace]
            for name, env in sorted(environments.items()):
                status = EnvironmentStatus(observed_generation=env.generation)
                for verdict in environment_verdicts(env, environments, releases):
                    status.conditions = set_condition(
                        status.conditions,
                        verdict.kind,
                        verdict.ok,
                        verdict.reason,
                        verdict.message,
                        env.generation,
                        now,
                    )
                current = live.get(name)
                if is_gitops(env):
                    current = self._gitops_live(env)
                if current is not None:
                    status.live_release = current.release.split("/")[1]
                    status.live_image = current.image
                    status.live_since = current.deployed_at
                    status.config_hash = current.config_hash
                history = self.deployer.history(namespace, name)[: env.spec.history_limit]
                status.history = [
                    Promotion(
                        release=h["release"].split("/")[1],
                        image=h["image"],
                        config_hash=h["configHash"],
                        deployed_at=h["deployedAt"],
                        rolled_back=bool(h.get("rolledBack")),
                        reason=h.get("reason") if h.get("rolledBack") else None,
                        rollout=h.get("rollout"),
                        judged=h.get("judged") if not h.get("rolledBack") else None,
                    )
                    for h in history
                ]
                result.append(env.model_copy(update={"status": status}))
        return result

    def gate_objects(self) -> list[QualityGate]:
        now = self.clock()
        return [
            gate.model_copy(
                update={
                    "status": QualityGateStatus(
                        observed_generation=gate.generation,
                        check_count=len(gate.spec.checks),
                        conditions=[
                            Condition(
                                type=READY,
                                status="True",
                                reason="Valid",
                                message=f"{len(gate.spec.checks)} checks",
                                last_transition_time=format_time(now),
                                observed_generation=gate.generation,
                            )
                        ],
                    )
                }
            )
            for gate in self.gates.values()
        ]


def load_run(
    paths: Iterable[Path], state_dir: Path, log: Callable[[str], None] = print
) -> LocalRun:
    return LocalRun(state_dir=state_dir, resources=load_paths(list(paths)), log=log)


def artifact(release: ModelRelease, name: str) -> ArtifactRecord | None:
    if release.status is None:
        return None
    return next((a for a in release.status.artifacts if a.name == name), None)


def _target(environment: Environment) -> str:
    git = environment.spec.delivery.git
    return f"{git.repository} {git.branch}:{git.path}" if git else environment.name


def _split_unsupported(environment: Environment) -> str | None:
    """Local mode runs every strategy through its router; a GitOps
    environment's splits are committed too, and must be committable."""
    return split_unsupported(environment) if is_gitops(environment) else None


def _local_traffic(environment: Environment) -> str:
    """Local mode's split: its router process, whatever the strategy."""
    rollout = environment.spec.policy.rollout
    how = "mirroring every request"
    if rollout is not None and rollout.strategy != Strategy.SHADOW:
        how = f"sticky by {rollout.sticky_header}" if rollout.sticky_header else "by weight"
    where = "Modelgate's router (local mode), " + how
    if is_gitops(environment):
        where += "; each split committed to Git as the model's HTTPRoute"
    return where
