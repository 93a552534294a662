"""Pure promotion core: phases, conditions and the next action. No Kubernetes."""

from modelgate.promotion.plan import (
    Action,
    Deploy,
    DeploymentObservation,
    EvaluateGate,
    Event,
    Observed,
    Plan,
    Rollback,
    StartTraining,
    StartVerification,
    SyncRegistry,
    TrainingObservation,
)
from modelgate.promotion.reconcile import reconcile

__all__ = [
    "Action",
    "Deploy",
    "DeploymentObservation",
    "EvaluateGate",
    "Event",
    "Observed",
    "Plan",
    "Rollback",
    "StartTraining",
    "StartVerification",
    "SyncRegistry",
    "TrainingObservation",
    "reconcile",
]
