"""ModelRelease: one candidate model version on its way to production."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from modelgate.api.analysis import AnalysisProgress
from modelgate.api.common import (
    DNS_LABEL_PATTERN,
    DNS_SUBDOMAIN_PATTERN,
    RFC3339_PATTERN,
    ApiModel,
    Condition,
    Duration,
    NameValue,
    ResourceModel,
    cel,
)
from modelgate.api.qualitygate import Check, Task, checks_fit_task, validate_checks_for_task
from modelgate.api.rollout import RolloutProgress

IMAGE_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._:/@-]*$"
DIGEST_PATTERN = r"@sha256:[a-f0-9]{64}$"


class ModelIdentity(ApiModel):
    """Which model and version this release carries."""

    name: str = Field(pattern=DNS_LABEL_PATTERN, max_length=63, description="Model name.")
    version: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._+-]*$",
        max_length=63,
        description="Model version, e.g. 1.4.0.",
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="Free-form labels (owner, ticket, dataset, ...)."
    )


class TrainingData(ApiModel):
    """Where the training job reads its data."""

    train: str = Field(min_length=1, description="Training data: s3:// URI or path (CSV/Parquet).")
    evaluation: str = Field(
        min_length=1, description="Evaluation data: s3:// URI or path (CSV/Parquet)."
    )
    target: str = Field(min_length=1, description="Name of the label column.")
    id_column: str | None = Field(
        default=None, description="Row identifier column, used to match baseline predictions."
    )


class Resources(ApiModel):
    """Compute resources of the training container (Kubernetes quantities)."""

    requests: dict[str, str] = Field(default_factory=dict, description="Resource requests.")
    limits: dict[str, str] = Field(default_factory=dict, description="Resource limits.")


class Training(ApiModel):
    """How the model is trained: a container honouring the training contract."""

    image: str = Field(pattern=IMAGE_PATTERN, description="Training container image.")
    command: list[str] = Field(
        default_factory=list, description="Container command; empty uses the image entrypoint."
    )
    args: list[str] = Field(default_factory=list, description="Container arguments.")
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Hyperparameters, passed to the job as JSON in MODELGATE_PARAMS.",
    )
    data: TrainingData = Field(description="Datasets.")
    resources: Resources = Field(default_factory=Resources, description="Resources.")
    backoff_limit: int = Field(default=1, ge=0, le=10, description="Job retries.")
    deadline: Duration = Field(
        default="1h", description="Longest the training job may run (activeDeadlineSeconds)."
    )
    seed: int = Field(default=0, ge=0, description="Random seed passed to the trainer.")


ONE_VERSION_OR_ALIAS = (
    "has(self.version) != has(self.alias)",
    "name exactly one of version (a version number) or alias (e.g. champion) of the "
    "registered model",
)
TOKEN_OR_BASIC = (
    "has(self.tokenKey) ? !has(self.usernameKey) && !has(self.passwordKey) : "
    "has(self.usernameKey) && has(self.passwordKey)",
    "give either tokenKey (a bearer token) or both usernameKey and passwordKey",
)


class MlflowCredentials(ApiModel):
    """A Secret in the release's namespace holding the tracking server's
    credentials: a bearer token, or a user name and password."""

    model_config = cel(TOKEN_OR_BASIC)

    name: str = Field(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253, description="Secret name.")
    token_key: str | None = Field(
        default=None, min_length=1, alias="tokenKey", description="Key of the bearer token."
    )
    username_key: str | None = Field(
        default=None, min_length=1, alias="usernameKey", description="Key of the user name."
    )
    password_key: str | None = Field(
        default=None, min_length=1, alias="passwordKey", description="Key of the password."
    )

    @model_validator(mode="after")
    def _token_or_basic(self) -> MlflowCredentials:
        token = self.token_key is not None
        basic = (self.username_key, self.password_key)
        if (token and basic != (None, None)) or (not token and None in basic):
            raise ValueError(TOKEN_OR_BASIC[1])
        return self


class MlflowSource(ApiModel):
    """A model registered in MLflow, trained elsewhere: resolved once to one
    version (an alias is read when the release first sees it, never again),
    imported (its files fetched, their digest recorded) and scored on the
    evaluation data by the server that will serve it, for the gate."""

    model_config = cel(ONE_VERSION_OR_ALIAS)

    tracking_uri: str = Field(
        pattern=r"^https?://[^\s]+$",
        alias="trackingUri",
        description="The MLflow tracking server, e.g. http://mlflow.mlops.svc:5000.",
    )
    name: str = Field(
        min_length=1, max_length=256, description="Registered model name in the registry."
    )
    version: str | None = Field(
        default=None, pattern=r"^[0-9]+$", description="The version to release, e.g. 7."
    )
    alias: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_-]{1,255}$",
        description="Or the alias naming it (e.g. candidate): resolved once, recorded in "
        "status.source.",
    )
    credentials_secret: MlflowCredentials | None = Field(
        default=None, alias="credentialsSecret", description="Credentials, when the server asks."
    )
    data: TrainingData = Field(
        description="The model's data: evaluation (scored for the gate), train (the "
        "reference for drift and data checks and for the served ranges) and the target."
    )
    aliases: dict[str, str] = Field(
        default_factory=dict,
        description="Alias given to the registered version while the release is live in an "
        "environment, by environment name; an environment not listed gets its own name. A "
        "rollback moves the alias back to the version put back.",
    )

    @model_validator(mode="after")
    def _one_version_or_alias(self) -> MlflowSource:
        if (self.version is None) == (self.alias is None):
            raise ValueError(ONE_VERSION_OR_ALIAS[1])
        return self


class ArtifactFormat(StrEnum):
    SKOPS = "Skops"
    PICKLE = "Pickle"


class ArtifactSource(ApiModel):
    """A model file already stored, trained elsewhere: taken as it is once its
    SHA-256 matches, then described and scored for the gate by the server
    that will serve it, as a registered model is."""

    uri: str = Field(
        min_length=1,
        max_length=2048,
        pattern=r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/.+|file://.+|[^:]+)$",
        description="Where the model file is: s3://bucket/key in the artifact store, or a "
        "path (local mode; relative to the manifest).",
    )
    sha256: str = Field(
        pattern=r"^[a-f0-9]{64}$",
        description="The file's SHA-256 (lower-case hex): anything else is refused.",
    )
    format: ArtifactFormat = Field(
        default=ArtifactFormat.SKOPS,
        description="Skops: a scikit-learn model saved with skops, loaded by the reference "
        "server through its trusted types. Pickle: a pickle (or joblib) file, which only a "
        "model server of its own loads (serving: ModelServer); Modelgate never unpickles it.",
    )
    features: list[str] = Field(
        default_factory=list,
        max_length=1000,
        description="The columns the model takes, in order. Read from a skops model when "
        "omitted; required with serving ModelServer, where Modelgate does not load the model.",
    )
    data: TrainingData = Field(
        description="The model's data: evaluation (scored for the gate), train (the "
        "reference for drift and data checks and for the served ranges) and the target."
    )


def _evaluation_resources() -> Resources:
    return Resources(requests={"cpu": "500m", "memory": "1Gi"}, limits={"memory": "4Gi"})


class Evaluation(ApiModel):
    """How the gate evaluation Job runs (the operator itself never opens the data)."""

    resources: Resources = Field(
        default_factory=_evaluation_resources,
        description="Resources of each evaluator pod. Default: requests cpu 500m, memory 1Gi; "
        "limits memory 4Gi. The evaluator streams its inputs: memory grows with slices, "
        "classes and categories, not with rows.",
    )
    deadline: Duration = Field(
        default="1h",
        description="Longest the evaluation may run (activeDeadlineSeconds), "
        "of each Job when it is sharded.",
    )
    parallelism: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Pods that evaluate the data at once. Above 1, an Indexed Job's pods each "
        "read a shard (Parquet row groups, CSV files, dealt out by index) into mergeable "
        "partial statistics, then one merge Job computes the gate: the result is the "
        "single pod's. Each pod gets resources; a shard with no rows adds nothing.",
    )


class PredictionsFrom(StrEnum):
    TRAINER = "Trainer"
    SERVER = "Server"


class GateReference(ApiModel):
    """Which checks the candidate must pass: a QualityGate and/or inline checks."""

    model_config = cel(
        (
            "has(self.name) || (has(self.checks) && size(self.checks) > 0)",
            "set name (a QualityGate) or inline checks (or both)",
        ),
        ("has(self.name) || has(self.task)", "inline checks without a named gate need task"),
        # With a named gate and no task, the checks are judged against the
        # gate's task: by the webhook and the operator, which read the gate.
        *(
            (f"!has(self.task) || ({rule})", message, path)
            for rule, message, path in checks_fit_task("self.task")
        ),
    )

    name: str | None = Field(
        default=None, pattern=DNS_SUBDOMAIN_PATTERN, description="QualityGate in this namespace."
    )
    task: Task | None = Field(
        default=None, description="Task of inline checks (taken from the gate when named)."
    )
    checks: list[Check] = Field(
        default_factory=list,
        max_length=100,
        description="Inline checks, added to the named gate's checks.",
    )
    predictions_from: PredictionsFrom | None = Field(
        default=None,
        alias="predictionsFrom",
        description="Where the predictions the gate judges come from. Trainer (the default "
        "for a trained model): the training run's. Server: the evaluation data scored "
        "through the Open Inference Protocol by the server that will serve the model (a "
        "scoring run after training), so the gate judges what will be served. A model "
        "trained elsewhere is always scored by its server.",
    )

    @model_validator(mode="after")
    def _gate_or_checks(self) -> GateReference:
        if self.name is None and not self.checks:
            raise ValueError("set name (a QualityGate) or inline checks (or both)")
        if self.name is None and self.task is None:
            raise ValueError("inline checks without a named gate need task")
        if self.task is not None and self.checks:
            validate_checks_for_task(self.task, self.checks)
        return self


class EnvironmentConfig(ApiModel):
    """Release-specific config overrides for one environment."""

    environment: str = Field(pattern=DNS_LABEL_PATTERN, description="Environment name.")
    values: list[NameValue] = Field(description="Values that override the environment's config.")


class Approval(ApiModel):
    """A recorded approval to promote into an environment."""

    environment: str = Field(pattern=DNS_LABEL_PATTERN, description="Environment approved.")
    approved_by: str | None = Field(
        default=None,
        min_length=1,
        description="Who approved. With the admission webhook on, set from the request's "
        "user whatever was written; without it, required for the approval to count.",
    )
    approved_at: str | None = Field(default=None, description="When (RFC 3339).")
    comment: str | None = Field(default=None, description="Why, ticket, etc.")
    config_hash: str | None = Field(
        default=None,
        pattern=r"^[a-f0-9]{12,64}$",
        description="The config this approval is for (its SHA-256, or its first 12 or more "
        "hex digits, as status.environments[].configHash shows it). Without it the approval "
        "is for the release's first deployment to the environment; a config change rolled "
        "out after that needs an approval naming the new config.",
    )


class Request(ApiModel):
    """A request a person makes of the operator. The plugin's verbs write
    them; so can a commit in Git."""

    requested_at: str = Field(
        pattern=RFC3339_PATTERN,
        description="When it was asked (RFC 3339). A new value is a new request, acted on "
        "once; status records the last one acted on.",
    )
    requested_by: str | None = Field(
        default=None, max_length=253, description="Who asked (the plugin writes the caller)."
    )
    reason: str | None = Field(default=None, max_length=1024, description="Why, a ticket, etc.")

    @property
    def asker(self) -> str:
        """Who asked, for messages."""
        return self.requested_by or "someone (requestedBy not set)"


class EnvironmentRequest(Request):
    """A request a person makes of the operator about one environment (a
    rollback, a verification again)."""

    environment: str = Field(
        pattern=DNS_LABEL_PATTERN, max_length=63, description="The environment it is about."
    )


class PromotionSpec(ApiModel):
    """The path to production and its per-environment settings."""

    model_config = cel(
        (
            "!has(self.config) || self.config.all(c, c.environment in self.environments)",
            "every promotion.config entry must name an environment listed in environments",
        ),
        (
            "!has(self.rollbacks) || self.rollbacks.all(r, r.environment in self.environments)",
            "every promotion.rollbacks entry must name an environment listed in environments",
        ),
        (
            "!has(self.promotions) || self.promotions.all(r, r.environment in self.environments)",
            "every promotion.promotions entry must name an environment listed in environments",
        ),
        (
            "!has(self.reverifications) || "
            "self.reverifications.all(r, r.environment in self.environments)",
            "every promotion.reverifications entry must name an environment listed in environments",
        ),
    )

    environments: list[Annotated[str, Field(pattern=DNS_LABEL_PATTERN, max_length=63)]] = Field(
        min_length=1,
        max_length=20,
        description="Environments to go through, in order, e.g. [staging, production]; each once.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    config: list[EnvironmentConfig] = Field(
        default_factory=list, max_length=20, description="Per-environment config overrides."
    )
    approvals: list[Approval] = Field(
        default_factory=list, max_length=100, description="Recorded approvals."
    )
    rollbacks: list[EnvironmentRequest] = Field(
        default_factory=list,
        max_length=20,
        description="Rollbacks asked for, one per environment: where the release is live (or "
        "judged beside the live one) when the request is acted on, it is taken out and what it "
        "replaced is put back (the previous release, or nothing), and it is promoted no "
        "further; elsewhere the request is recorded and does nothing. Final for this release "
        "in that environment: to ship the model there again, create a new release.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["environment"],
        },
    )
    promotions: list[EnvironmentRequest] = Field(
        default_factory=list,
        max_length=20,
        description="Promotions asked for, one per environment: the release goes into the "
        "environment without waiting for what time would decide there, the soak after the "
        "previous environment and the rest of a judgement beside the live release (once its "
        "challenger is verified, it takes over). Approvals, freeze windows, config rules and "
        "verification still hold. Stands until the release is live there.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["environment"],
        },
    )
    reverifications: list[EnvironmentRequest] = Field(
        default_factory=list,
        max_length=20,
        description="Verifications asked for again, one per environment: where the release "
        "is live and verified, and the environment verifies, its verification runs again as a "
        "new Job; a failure is handled as the first one's (rolled back with autoRollback). "
        "Elsewhere the request is recorded and does nothing.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["environment"],
        },
    )

    @field_validator("environments")
    @classmethod
    def _unique_environments(cls, value: list[str]) -> list[str]:
        # Mirrored by x-kubernetes-list-type: set.
        duplicates = sorted({n for n in value if value.count(n) > 1})
        if duplicates:
            raise ValueError(f"environment {duplicates[0]!r} is listed twice; list each once")
        return value

    @model_validator(mode="after")
    def _overrides_name_listed_environments(self) -> PromotionSpec:
        for index, entry in enumerate(self.config):
            if entry.environment not in self.environments:
                raise ValueError(
                    f"config[{index}].environment: {entry.environment!r} is not in "
                    f"environments {self.environments}; add it there or fix the name"
                )
            keys = [item.name for item in entry.values]
            for key in keys:
                if keys.count(key) > 1:
                    raise ValueError(f"config[{index}].values: key {key!r} appears twice; keep one")
        for field, requests in (("rollbacks", self.rollbacks),
                                ("reverifications", self.reverifications),
                                ("promotions", self.promotions)):  # fmt: skip
            # Mirrored by the CEL rules above and x-kubernetes-list-type: map.
            asked: set[str] = set()
            for index, request in enumerate(requests):
                if request.environment not in self.environments:
                    raise ValueError(
                        f"{field}[{index}].environment: {request.environment!r} is not in "
                        f"environments {self.environments}; name an environment of the path"
                    )
                if request.environment in asked:
                    raise ValueError(
                        f"{field}[{index}]: {request.environment!r} has two entries; keep one "
                        "(a new request replaces the environment's entry)"
                    )
                asked.add(request.environment)
        return self


class Serving(StrEnum):
    IMAGE = "Image"
    REFERENCE_SERVER = "ReferenceServer"
    MODEL_SERVER = "ModelServer"


IMAGE_FOR_SERVING = (
    "self.serving == 'ReferenceServer' || has(self.image)",
    "serving Image needs image (the serving image to promote), and so does ModelServer (the "
    "model server's image); or set serving: ReferenceServer to serve the trained artifact",
)
SERVER_FOR_MODEL_SERVER = (
    "(has(self.serving) && self.serving == 'ModelServer') == has(self.server)",
    "serving ModelServer needs server (how the model server is told its model), and server "
    "is for serving ModelServer only",
)
MODEL_SERVER_SERVES_REGISTERED = (
    "!has(self.serving) || self.serving != 'ModelServer' || has(self.mlflow) || has(self.artifact)",
    "serving ModelServer serves a registered model (mlflow) or a stored one (artifact); a "
    "model trained here is served by the reference server (serving: ReferenceServer)",
)


class LocalServer(ApiModel):
    """How local mode runs the model server: no image runs on a laptop."""

    command: list[str] = Field(
        min_length=1,
        description="The server's command on this machine, e.g. [mlserver, start, "
        "$(MODELGATE_MODEL_DIR)]; $(VAR) names the serving contract's variables and the "
        "server's env, as Kubernetes expands a container's command.",
    )


class ModelServer(ApiModel):
    """A model server of your own that loads the release's model (MLServer,
    Triton, a KServe runtime): Modelgate puts the model's files where it says,
    tells it the ports, and judges its answers over the Open Inference Protocol
    v2 (REST). The serving contract: the model file in $(MODELGATE_MODEL_FILE)
    inside $(MODELGATE_MODEL_DIR); listen on $(MODELGATE_HTTP_PORT) (and
    $(MODELGATE_GRPC_PORT), $(MODELGATE_METRICS_PORT) for listeners besides)."""

    model_name: str | None = Field(
        default=None,
        alias="modelName",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
        description="The name the server serves the model under (/v2/models/<name>); "
        "default: spec.model.name. Scoring and verification ask for it.",
    )
    model_file: str = Field(
        default="model.pkl",
        alias="modelFile",
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$",
        description="The name the model file gets in $(MODELGATE_MODEL_DIR) "
        "($(MODELGATE_MODEL_FILE) is the whole path), wherever it runs: the import run, "
        "local mode and every environment's pods. The default, model.pkl, is what MLflow's "
        "sklearn flavor, MLServer and KServe's sklearn server look for.",
    )
    command: list[str] = Field(
        default_factory=list,
        description="The server container's command; empty uses the image's entrypoint.",
    )
    args: list[str] = Field(default_factory=list, description="The server container's arguments.")
    env: list[NameValue] = Field(
        default_factory=list,
        max_length=64,
        description="The server's environment, after the serving contract's variables (a "
        "value may name them or an earlier entry: $(MODELGATE_MODEL_FILE)), e.g. MLServer's "
        "MLSERVER_MODEL_IMPLEMENTATION and MLSERVER_MODEL_URI.",
    )
    local: LocalServer | None = Field(
        default=None, description="How local mode runs it (`modelgate run` needs it)."
    )


ONE_SOURCE = (
    "[has(self.training), has(self.mlflow), has(self.artifact)].filter(x, x).size() == 1",
    "name exactly one source of the model: training (trained here by a Job), mlflow (a "
    "model registered in MLflow) or artifact (a stored model file)",
)
SERVER_PREDICTIONS_NEED_THE_REFERENCE_SERVER = (
    "!has(self.gate.predictionsFrom) || self.gate.predictionsFrom != 'Server' || "
    "!has(self.training) || (has(self.serving) && self.serving == 'ReferenceServer')",
    "gate.predictionsFrom: Server scores a trained model with the server that will serve it: "
    "set serving: ReferenceServer (a serving image of your own is not run for scoring)",
)
NO_TRAINER_PREDICTIONS_WITHOUT_TRAINING = (
    "!has(self.gate.predictionsFrom) || self.gate.predictionsFrom != 'Trainer' || "
    "has(self.training)",
    "a model trained elsewhere has no trainer's predictions, its server scores it: omit "
    "gate.predictionsFrom or set Server",
)
ARTIFACT_IS_SERVED_AS_IMPORTED = (
    "!has(self.artifact) || (has(self.serving) && self.serving in ['ReferenceServer', "
    "'ModelServer'])",
    "a release of a stored model file serves that file: set serving: ReferenceServer, or "
    "ModelServer with a server of your own",
)
PICKLE_NEEDS_ITS_OWN_SERVER = (
    "!has(self.artifact) || !has(self.artifact.format) || self.artifact.format != 'Pickle' "
    "|| (has(self.serving) && self.serving == 'ModelServer')",
    "a pickled artifact is loaded only by a model server of its own: set serving: ModelServer "
    "(the reference server loads skops only)",
)
FEATURES_FOR_ITS_OWN_SERVER = (
    "!has(self.artifact) || !has(self.serving) || self.serving != 'ModelServer' || "
    "(has(self.artifact.features) && size(self.artifact.features) > 0)",
    "serving ModelServer with an artifact source needs artifact.features (the columns the "
    "server takes: Modelgate does not load the model to read them)",
)
REGISTERED_IS_REFERENCE_SERVED = (
    "!has(self.mlflow) || (has(self.serving) && self.serving in ['ReferenceServer', "
    "'ModelServer'])",
    "a release of a registered MLflow model serves the model it imports: set serving: "
    "ReferenceServer, or ModelServer with a server of your own",
)

NEW_RELEASE_FIX = "create a new ModelRelease (a new name) for another model, image or training"

# What defines the model a release carries, and so its evidence (training run,
# gate result, verified deployments): fixed once the release exists. The
# promotion path, its config, approvals and the gate may change.
IMMUTABLE_RULES = (
    (
        "self.model == oldSelf.model",
        f"spec.model is immutable: the release's evidence describes one model; {NEW_RELEASE_FIX}",
    ),
    (
        "(has(self.serving) ? self.serving : 'Image') == "
        "(has(oldSelf.serving) ? oldSelf.serving : 'Image')",
        f"spec.serving is immutable: it decides what is deployed; {NEW_RELEASE_FIX}",
    ),
    (
        "has(self.image) == has(oldSelf.image) && "
        "(!has(self.image) || self.image == oldSelf.image)",
        f"spec.image is immutable: it is what the gate and the verifications judged; "
        f"{NEW_RELEASE_FIX}",
    ),
    (
        "has(self.training) == has(oldSelf.training) && "
        "(!has(self.training) || self.training == oldSelf.training)",
        f"spec.training is immutable: the trained artifact comes from it; {NEW_RELEASE_FIX}",
    ),
    (
        "has(self.mlflow) == has(oldSelf.mlflow) && "
        "(!has(self.mlflow) || self.mlflow == oldSelf.mlflow)",
        f"spec.mlflow is immutable: the imported artifact comes from it; {NEW_RELEASE_FIX}",
    ),
    (
        "has(self.artifact) == has(oldSelf.artifact) && "
        "(!has(self.artifact) || self.artifact == oldSelf.artifact)",
        f"spec.artifact is immutable: the imported artifact comes from it; {NEW_RELEASE_FIX}",
    ),
    (
        "has(self.server) == has(oldSelf.server) && "
        "(!has(self.server) || self.server == oldSelf.server)",
        f"spec.server is immutable: the gate judged what that server answers; {NEW_RELEASE_FIX}",
    ),
)
IMMUTABLE_FIELDS = ("model", "serving", "image", "training", "mlflow", "artifact", "server")


class ModelReleaseSpec(ApiModel):
    """Desired state of a ModelRelease."""

    model_config = cel(
        IMAGE_FOR_SERVING,
        ONE_SOURCE,
        REGISTERED_IS_REFERENCE_SERVED,
        ARTIFACT_IS_SERVED_AS_IMPORTED,
        PICKLE_NEEDS_ITS_OWN_SERVER,
        FEATURES_FOR_ITS_OWN_SERVER,
        SERVER_FOR_MODEL_SERVER,
        MODEL_SERVER_SERVES_REGISTERED,
        SERVER_PREDICTIONS_NEED_THE_REFERENCE_SERVER,
        NO_TRAINER_PREDICTIONS_WITHOUT_TRAINING,
        *IMMUTABLE_RULES,
    )

    model: ModelIdentity = Field(description="Model name and version.")
    serving: Serving = Field(
        default=Serving.IMAGE,
        description="Image: promote `image`, a model server you built. ReferenceServer: "
        "serve the trained artifact with Modelgate's reference server; what is promoted is "
        "the server image together with the artifact's URI and SHA-256. ModelServer: "
        "`image` is a model server of your own (MLServer, Triton, a KServe runtime) that "
        "loads the registered model; `server` says how it is told.",
    )
    image: str | None = Field(
        default=None,
        pattern=IMAGE_PATTERN,
        description="Serving image promoted through the environments (pin by digest). "
        "With serving ReferenceServer: optional, a reference server image of your own "
        "instead of the operator's.",
    )
    training: Training | None = Field(
        default=None, description="How the model is trained here (one source of the model)."
    )
    mlflow: MlflowSource | None = Field(
        default=None,
        description="Or a model registered in MLflow, trained elsewhere (the other source).",
    )
    artifact: ArtifactSource | None = Field(
        default=None,
        description="Or a model file already stored, trained elsewhere (the third source).",
    )
    server: ModelServer | None = Field(
        default=None, description="With serving ModelServer: how the server gets its model."
    )
    gate: GateReference = Field(description="Quality gate the candidate must pass.")
    promotion: PromotionSpec = Field(description="Environments and their overrides.")
    evaluation: Evaluation = Field(
        default_factory=Evaluation,
        description="Resources and deadline of the gate evaluation Job. Changing it "
        "after an evaluation failed (out of memory, past its deadline) evaluates again.",
    )
    abort: Request | None = Field(
        default=None,
        description="Stop the release where it is: it is promoted no further, and a "
        "challenger it has judged beside a live release is removed (the live one keeps all "
        "traffic). Where it is live it stays (spec.promotion.rollbacks takes it out); a Job "
        "already running runs to its end. Remove it to go on from where it stopped.",
    )
    retry: Request | None = Field(
        default=None,
        description="Run the failed step again, as a new run beside the failed one (whose "
        "Job and logs stay): a failed training or import runs again, a failed scoring "
        "scores again, a gate that failed or could not be evaluated is evaluated again "
        "(say, after the data was fixed). Acted on once per requestedAt.",
    )

    @model_validator(mode="after")
    def _image_for_serving(self) -> ModelReleaseSpec:
        if self.serving == Serving.IMAGE and self.image is None:
            raise ValueError(IMAGE_FOR_SERVING[1])
        if [self.training, self.mlflow, self.artifact].count(None) != 2:
            raise ValueError(ONE_SOURCE[1])
        if self.mlflow is not None and self.serving == Serving.IMAGE:
            raise ValueError(REGISTERED_IS_REFERENCE_SERVED[1])
        artifact = self.artifact
        if artifact is not None and self.serving == Serving.IMAGE:
            raise ValueError(ARTIFACT_IS_SERVED_AS_IMPORTED[1])
        own_server = self.serving == Serving.MODEL_SERVER
        if artifact is not None and artifact.format == ArtifactFormat.PICKLE and not own_server:
            raise ValueError(PICKLE_NEEDS_ITS_OWN_SERVER[1])
        if artifact is not None and own_server and not artifact.features:
            raise ValueError(FEATURES_FOR_ITS_OWN_SERVER[1])
        if own_server != (self.server is not None):
            raise ValueError(SERVER_FOR_MODEL_SERVER[1])
        if own_server and self.training is not None:
            raise ValueError(MODEL_SERVER_SERVES_REGISTERED[1])
        wanted = self.gate.predictions_from
        if (
            wanted == PredictionsFrom.SERVER
            and self.training is not None
            and self.serving != Serving.REFERENCE_SERVER
        ):
            raise ValueError(SERVER_PREDICTIONS_NEED_THE_REFERENCE_SERVER[1])
        if wanted == PredictionsFrom.TRAINER and self.training is None:
            raise ValueError(NO_TRAINER_PREDICTIONS_WITHOUT_TRAINING[1])
        return self

    @property
    def scored_by_server(self) -> bool:
        """A trained model whose gate judges the server's predictions (a
        scoring run after training)."""
        return self.training is not None and self.gate.predictions_from == PredictionsFrom.SERVER

    @property
    def served_model_name(self) -> str:
        """The name the model is served under."""
        named = self.server.model_name if self.server is not None else None
        return named or self.model.name

    @property
    def data(self) -> TrainingData:
        """The model's datasets, whichever its source."""
        source = self.training or self.mlflow or self.artifact
        assert source is not None  # the validator above
        return source.data


def immutable_changes(old: ModelReleaseSpec, new: ModelReleaseSpec) -> list[str]:
    """Why ``new`` may not replace ``old`` (the CEL transition rules' messages,
    for local mode and the webhook), empty when it may."""
    return [
        message
        for name, (_rule, message) in zip(IMMUTABLE_FIELDS, IMMUTABLE_RULES, strict=True)
        if getattr(old, name) != getattr(new, name)
    ]


class Phase(StrEnum):
    PENDING = "Pending"
    TRAINING = "Training"
    EVALUATING = "Evaluating"
    GATE_FAILED = "GateFailed"
    PROMOTING = "Promoting"
    BLOCKED = "Blocked"
    RELEASED = "Released"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"
    ABORTED = "Aborted"


class TrainingStatus(ApiModel):
    """The training run of the current training spec."""

    job_name: str = Field(description="Deterministic name of the training Job / process.")
    key: str = Field(description="Hash of the training spec; a new key means a new run.")
    state: Literal["Running", "Succeeded", "Failed"] = Field(description="Run state.")
    started_at: str | None = Field(default=None, description="Start time.")
    completed_at: str | None = Field(default=None, description="End time.")
    message: str | None = Field(default=None, description="Failure reason, if any.")
    retries: int = Field(
        default=0, ge=0, description="Pods that failed and were retried within the Job."
    )


class ArtifactRecord(ApiModel):
    """An immutable, content-addressed artifact."""

    name: str = Field(description="model, predictions, metadata, gate-report, ...")
    uri: str = Field(description="Where it is stored.")
    sha256: str = Field(pattern=r"^[a-f0-9]{64}$", description="SHA-256 of the content.")
    size: int = Field(ge=0, description="Size in bytes.")


class CheckOutcome(StrEnum):
    PASSED = "Passed"
    FAILED = "Failed"
    INCONCLUSIVE = "Inconclusive"


class CheckResult(ApiModel):
    """Compact result of one check (the full table is in the report artifact)."""

    name: str = Field(description="Check name.")
    kind: str = Field(
        description="metric, slice, baseline, fairness, data, drift, explainability or behavior."
    )
    metric: str | None = Field(default=None, description="Metric or statistic measured.")
    severity: str = Field(description="blocking or warning.")
    outcome: CheckOutcome = Field(description="Passed, Failed or Inconclusive.")
    value: float | None = Field(default=None, description="Measured value (worst slice).")
    min: float | None = Field(default=None, description="Lower threshold.")
    max: float | None = Field(default=None, description="Upper threshold.")
    baseline: float | None = Field(default=None, description="Baseline value, if any.")
    slice: str | None = Field(default=None, description="Worst slice, if sliced.")
    sample_size: int | None = Field(default=None, description="Rows the value was computed on.")
    message: str = Field(default="", description="Why this outcome.")


class GateStatus(ApiModel):
    """Compact result of the gate evaluation."""

    name: str | None = Field(default=None, description="QualityGate evaluated.")
    inputs_hash: str = Field(
        description="Hash of the checks and the predictions evaluated; a change re-evaluates."
    )
    outcome: CheckOutcome = Field(description="Passed, Failed or Inconclusive.")
    evaluated_at: str = Field(description="When (RFC 3339).")
    passed: int = Field(default=0, description="Checks passed.")
    failed: int = Field(default=0, description="Checks failed.")
    inconclusive: int = Field(default=0, description="Checks inconclusive.")
    checks: list[CheckResult] = Field(default_factory=list, description="Per-check results.")
    failed_evaluation: str | None = Field(
        default=None,
        description="Set when the evaluation itself failed (the checks are Inconclusive): the "
        "hash of spec.evaluation it ran with; a changed spec.evaluation evaluates again.",
    )


class EnvironmentPhase(StrEnum):
    PENDING = "Pending"
    WAITING = "Waiting"
    BLOCKED = "Blocked"
    DEPLOYING = "Deploying"
    VERIFYING = "Verifying"
    ANALYZING = "Analyzing"
    JUDGING = "Judging"
    DEPLOYED = "Deployed"
    SUPERSEDED = "Superseded"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"


class EnvironmentProgress(ApiModel):
    """Progress of the release in one environment."""

    name: str = Field(description="Environment name.")
    phase: EnvironmentPhase = Field(
        description="Pending, Waiting, Blocked, Deploying, Verifying, Judging (beside the "
        "live model, on live traffic), Analyzing, Deployed, Superseded, RolledBack or Failed."
    )
    image: str | None = Field(default=None, description="Image deployed.")
    config_hash: str | None = Field(default=None, description="SHA-256 of the merged config.")
    deployed_at: str | None = Field(default=None, description="When it went live.")
    approved_by: str | None = Field(default=None, description="Who approved, if required.")
    approved_at: str | None = Field(default=None, description="When it was approved.")
    verified_at: str | None = Field(default=None, description="When verification passed.")
    verification_job: str | None = Field(default=None, description="Verification Job.")
    analysis: AnalysisProgress | None = Field(
        default=None, description="The analysis of the live model here (policy.analysis)."
    )
    judged: RolloutProgress | None = Field(
        default=None,
        description="The new release judged against the live one on live traffic before it "
        "took over (policy.rollout: Shadow, Canary or Experiment).",
    )
    revision: str | None = Field(
        default=None, description="GitOps: the commit that promoted the release here."
    )
    rollout: int | None = Field(
        default=None,
        ge=1,
        description="The latest rollout of this release to the environment: 1 for its first "
        "deployment, one more for each config change deployed after it (a number is never "
        "used twice; the Environment's history says which one is live).",
    )
    previous_config_hash: str | None = Field(
        default=None,
        description="The config of this release that was live here before the change being "
        "rolled out (what a failed verification puts back).",
    )
    unfinished: bool | None = Field(
        default=None,
        description="Superseded here by another release before this one was realized (its "
        "rollout ready, verified, its analysis passed): this release is promoted no further.",
    )
    rollback_request: str | None = Field(
        default=None,
        description="requestedAt of the spec.promotion.rollbacks entry for this environment "
        "last acted on.",
    )
    reverify_request: str | None = Field(
        default=None,
        description="requestedAt of the spec.promotion.reverifications entry for this "
        "environment last acted on.",
    )
    rolled_back_by: str | None = Field(
        default=None,
        description="Who asked for the rollback that took the release out of here (empty when "
        "a failed verification or analysis did).",
    )
    message: str | None = Field(default=None, description="What it waits for or what blocks it.")


class RegistrySync(ApiModel):
    """The registry kept in step with one environment: the alias there."""

    environment: str = Field(description="Environment.")
    alias: str = Field(description="The alias given while the release is live there.")
    reason: Literal["Live", "RolledBack"] = Field(
        description="Live: the alias names this version (with tags). RolledBack: the alias "
        "was moved to the version put back, or removed."
    )
    state: Literal["Synced", "Failed"] = Field(description="Whether the registry took it.")
    version: str | None = Field(
        default=None, description="The version the alias names now (none: removed)."
    )
    message: str | None = Field(default=None, description="What was done, or why not.")
    at: str = Field(description="When (RFC 3339); a failure is tried again 30 s later.")


class MlflowResolution(ApiModel):
    """The one MLflow version a release carries, as resolved."""

    version: str = Field(description="Registered model version.")
    run_id: str | None = Field(default=None, alias="runId", description="The run that logged it.")
    alias: str | None = Field(default=None, description="The alias it was resolved from, if any.")
    resolved_at: str = Field(alias="resolvedAt", description="When (RFC 3339).")
    synced: list[RegistrySync] = Field(
        default_factory=list,
        max_length=64,
        description="The registry kept in step, by environment (never blocks a release).",
    )


class SourceStatus(ApiModel):
    """Where the release's model came from, fixed once resolved."""

    mlflow: MlflowResolution | None = Field(default=None, description="MLflow registry.")


class RetryStep(StrEnum):
    TRAINING = "Training"
    SCORING = "Scoring"
    EVALUATION = "Evaluation"


class RetryStatus(ApiModel):
    """The retries asked for through spec.retry and what each did."""

    handled: str | None = Field(
        default=None, description="requestedAt of the last spec.retry acted on."
    )
    handled_at: str | None = Field(default=None, description="When it was acted on.")
    step: RetryStep | None = Field(
        default=None, description="The step it ran again; empty when nothing had failed."
    )
    message: str | None = Field(default=None, description="What it did, or why nothing.")
    training: int = Field(
        default=0, ge=0, description="Training (or import) runs started again by retries."
    )
    scoring: int = Field(default=0, ge=0, description="Scoring runs started again by retries.")
    evaluation: int = Field(
        default=0, ge=0, description="Gate evaluations started again by retries."
    )


class ModelReleaseStatus(ApiModel):
    """Observed state of a ModelRelease."""

    observed_generation: int | None = Field(default=None, description="Generation observed.")
    phase: Phase | None = Field(default=None, description="Short phase, for display only.")
    conditions: list[Condition] = Field(
        default_factory=list,
        description="Trained, GatePassed, ConfigValid, Deployed, Ready, Reconciling, Stalled.",
    )
    source: SourceStatus | None = Field(
        default=None, description="The registered version the release resolved, once."
    )
    training: TrainingStatus | None = Field(
        default=None, description="Training run (or the import run of a registered model)."
    )
    scoring: TrainingStatus | None = Field(
        default=None,
        description="With gate.predictionsFrom Server: the scoring run that replaced the "
        "training run's predictions with the server's.",
    )
    artifacts: list[ArtifactRecord] = Field(default_factory=list, description="Artifacts.")
    gate: GateStatus | None = Field(default=None, description="Gate result.")
    environments: list[EnvironmentProgress] = Field(
        default_factory=list, description="Per-environment progress."
    )
    live_in: str | None = Field(
        default=None, description="Furthest environment the release is live in."
    )
    retry: RetryStatus | None = Field(
        default=None, description="Retries asked for (spec.retry) and what they did."
    )


class ModelRelease(ResourceModel):
    """A candidate model version: trained, gated and promoted."""

    kind: Literal["ModelRelease"] = Field(default="ModelRelease", description="ModelRelease.")
    spec: ModelReleaseSpec = Field(description="Model, training, gate and promotion.")
    status: ModelReleaseStatus | None = Field(default=None, description="Observed state.")

    def overrides_for(self, environment: str) -> list[NameValue]:
        for entry in self.spec.promotion.config:
            if entry.environment == environment:
                return entry.values
        return []
