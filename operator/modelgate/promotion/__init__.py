"""Pure promotion core: phases, conditions and the next action. No Kubernetes."""

from modelgate.promotion.reconcile import (
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
    TrainingObservation,
    reconcile,
)

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
    "TrainingObservation",
    "reconcile",
]
