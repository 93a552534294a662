"""What the core reads (observations) and returns (a plan: status, actions, events)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from modelgate.api.modelrelease import (
    ArtifactRecord,
    Evaluation,
    ModelReleaseStatus,
)
from modelgate.api.qualitygate import Check, Task

# -- observations -------------------------------------------------------------


@dataclass(frozen=True)
class TrainingObservation:
    """What the runner sees of the training run named ``job_name``."""

    job_name: str
    state: str  # Running | Succeeded | Failed
    started_at: str | None = None
    completed_at: str | None = None
    message: str | None = None
    artifacts: tuple[ArtifactRecord, ...] = ()
    retries: int = 0  # failed pods the Job retried


@dataclass(frozen=True)
class DeploymentObservation:
    """What is live in one environment right now."""

    environment: str
    release: str  # namespace/name of the ModelRelease live there
    image: str
    config_hash: str
    deployed_at: str
    ready: bool = True
    predictions: ArtifactRecord | None = None
    # GitOps: the commit that put it there, and what the rollout waits for.
    revision: str | None = None
    message: str | None = None
    # Which rollout of the release this is (None: recorded before rollouts were).
    rollout: int | None = None
    # A challenger beside the live release (policy.rollout): the share of
    # traffic it gets now, in per cent, and whether it gets a mirrored copy.
    weight: int = 0
    mirror: bool = False


def parse_rollout(value: object) -> int | None:
    """A rollout number as a backend recorded it (annotation, trailer, file)."""
    try:
        number = int(str(value))
    except ValueError:
        return None
    return number if number >= 1 else None


@dataclass(frozen=True)
class MeasurementObservation:
    """The answer to one analysis query."""

    at: str  # when it was asked (RFC 3339)
    value: float | None = None  # None: no sample (empty result)
    # Why there is no answer: Prometheus unreachable or failing (asked again),
    # or, with ``invalid``, a query it refuses (an Inconclusive measurement).
    error: str | None = None
    invalid: bool = False


@dataclass(frozen=True)
class RegistryQuery:
    """The registered version a release names, to resolve (once)."""

    tracking_uri: str
    name: str
    version: str | None
    alias: str | None


@dataclass(frozen=True)
class RegistryObservation:
    """What the registry answered: the version, or why not."""

    version: str | None = None
    run_id: str | None = None
    error: str | None = None
    transient: bool = False


@dataclass(frozen=True)
class Observed:
    training: TrainingObservation | None = None
    # The scoring run (gate.predictionsFrom Server), once one is due.
    scoring: TrainingObservation | None = None
    # The registry's answer to the release's RegistryQuery, when one was due.
    registered: RegistryObservation | None = None
    deployments: dict[str, DeploymentObservation] = field(default_factory=dict)
    # Verification Job name -> its run (same shape as a training run).
    verifications: dict[str, TrainingObservation] = field(default_factory=dict)
    # (environment, analysis metric) -> the measurement just taken.
    measurements: dict[tuple[str, str], MeasurementObservation] = field(default_factory=dict)
    # Environment -> the challenger running beside the live release there.
    challengers: dict[str, DeploymentObservation] = field(default_factory=dict)
    # (environment, metric, arm, query field) -> the measurement just taken
    # for a rollout's look (policy.rollout).
    arm_measurements: dict[tuple[str, str, str, str], MeasurementObservation] = field(
        default_factory=dict
    )


# -- actions ------------------------------------------------------------------


@dataclass(frozen=True)
class StartTraining:
    job_name: str
    key: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    env: dict[str, str]
    # Variables read from a Secret: (variable, Secret name, key). In a cluster
    # a secretKeyRef; in local mode the variable as the run's own environment has it.
    secret_env: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class EvaluateGate:
    inputs_hash: str
    gate_name: str | None
    task: Task
    positive_label: str
    checks: tuple[Check, ...]
    predictions: ArtifactRecord
    metadata: ArtifactRecord | None
    train_data: str
    evaluation_data: str
    id_column: str | None
    # Environment -> predictions of the release live there (None: nothing live).
    baselines: dict[str, ArtifactRecord | None]
    # How the evaluation Job runs (spec.evaluation); local mode runs one process.
    evaluation: Evaluation = field(default_factory=Evaluation)


@dataclass(frozen=True)
class Deploy:
    environment: str
    namespace: str
    release: str
    model: str
    image: str
    config: dict[str, str]
    config_hash: str
    predictions: ArtifactRecord | None
    # For the record a GitOps commit keeps (message and trailers).
    model_version: str | None = None
    gate: str | None = None  # e.g. "credit-gate Passed (13 passed, 0 failed, 1 inconclusive)"
    approved_by: str | None = None
    approved_at: str | None = None
    # The container command when it is not the image's own: the reference
    # server runs `python -m modelgate.server` from the operator's image.
    command: tuple[str, ...] = ()
    # Which deployment of the release to the environment: 1, then one more per
    # config change (part of a GitOps promotion's identity).
    rollout: int = 1
    # Beside the live release, getting no traffic until SetTraffic gives it
    # some (policy.rollout); False: replace what is live (and any challenger).
    challenger: bool = False
    # How it was judged against the release it replaces (policy.rollout), for
    # the Environment's history and a GitOps commit: strategy and numbers.
    judged: str | None = None


@dataclass(frozen=True)
class StartVerification:
    """Run the environment's post-deployment test against the deployed model."""

    job_name: str
    environment: str
    namespace: str
    release: str
    model: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...]
    timeout: timedelta
    predictions: ArtifactRecord | None
    # metadata.json of the release: what the model takes and answers.
    metadata: ArtifactRecord | None = None
    # Settings of the built-in check (MODELGATE_VERIFY_*), empty for an image's own test.
    env: tuple[tuple[str, str], ...] = ()
    # Runs that could not check (exit codes other than 0 and 1) are tried this often.
    attempts: int = 1
    # Verify the challenger beside the live release rather than the live one.
    challenger: bool = False


@dataclass(frozen=True)
class Rollback:
    """Put back what was live in ``environment`` before ``release``."""

    environment: str
    namespace: str
    release: str
    model: str
    # A failed config change: put back this release's config with this hash.
    # None: put back the release that was live before this one.
    config_hash: str | None = None
    # Why (the failed verification or analysis), for the environment's history.
    reason: str | None = None


@dataclass(frozen=True)
class SyncRegistry:
    """Keep the MLflow registry in step with an environment: while the
    release is live there its version carries the alias (and tags); once it
    is rolled back the alias goes to the version put back, or away."""

    environment: str
    tracking_uri: str
    name: str
    alias: str
    version: str
    rolled_back: bool
    tags: tuple[tuple[str, str], ...] = ()
    # The Secret with the registry's credentials: (name, token, user, password keys).
    credentials: tuple[str, str | None, str | None, str | None] | None = None


@dataclass(frozen=True)
class SetTraffic:
    """Split an environment's traffic between the live release (the champion)
    and the challenger beside it: ``weight`` per cent to the challenger, and
    with ``mirror`` a copy of every request to it (its answers are compared,
    never returned)."""

    environment: str
    namespace: str
    model: str
    champion: str  # namespace/name of the release live there
    challenger: str  # namespace/name of the release beside it
    weight: int
    mirror: bool = False
    sticky_header: str | None = None
    # Gateway API: the Gateway the HTTPRoute attaches to (name, namespace,
    # listener), and its host names; None: split by replicas.
    gateway: tuple[str, str, str | None] | None = None
    hostnames: tuple[str, ...] = ()


@dataclass(frozen=True)
class RemoveChallenger:
    """The champion keeps all traffic: remove the challenger beside it."""

    environment: str
    namespace: str
    model: str
    release: str  # the challenger's namespace/name
    reason: str | None = None


Action = (
    StartTraining
    | EvaluateGate
    | Deploy
    | StartVerification
    | Rollback
    | SyncRegistry
    | SetTraffic
    | RemoveChallenger
)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass
class Plan:
    status: ModelReleaseStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: timedelta | None = None
