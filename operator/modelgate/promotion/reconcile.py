"""The reconciliation core: from what is declared and observed, the next step.

``reconcile`` is a pure function. It reads a ModelRelease (with the status it
recorded so far), its QualityGate, the Environments and what the backends
observe (training run, deployments), and returns the new status, the actions
to perform and the events to emit. Local mode and the operator both drive it,
so they cannot disagree about what a release should do next.

It is a small driver around one module per step of a release: references,
a retry asked for, an abort, training, evaluation, deployment (promotion in path order)
and verification.

Safety rules it keeps:
- a deploy is only asked for when the observed deployment differs, so a
  restart or a duplicate event never deploys twice;
- an environment this release reached stays recorded as reached even after a
  later release replaced it there (Superseded), so an old release is never
  re-deployed over a newer one;
- anything not measured or not found blocks (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from modelgate.api.environment import Environment
from modelgate.api.modelrelease import ModelRelease, ModelReleaseStatus, Phase
from modelgate.api.qualitygate import QualityGate
from modelgate.promotion import conditions as cond
from modelgate.promotion.abort import aborted
from modelgate.promotion.context import Context, progressing, runs_every_rollout, stalled
from modelgate.promotion.deployment import promote
from modelgate.promotion.evaluation import evaluate
from modelgate.promotion.keys import gate_training_inputs
from modelgate.promotion.plan import Event, Observed, Plan
from modelgate.promotion.references import references_missing
from modelgate.promotion.registry_sync import sync_registry
from modelgate.promotion.retry import take_retry
from modelgate.promotion.scoring import score
from modelgate.promotion.training import train


def reconcile(
    release: ModelRelease,
    gate: QualityGate | None,
    environments: dict[str, Environment],
    observed: Observed,
    now: datetime,
    training_env: dict[str, str] | None = None,
    server_image: str | None = None,
    rollout_unsupported: Callable[[Environment], str | None] = runs_every_rollout,
    describe_traffic: Callable[[Environment], str] | None = None,
) -> Plan:
    """Decide the next status and actions for ``release``.

    ``training_env`` holds extra contract variables the driver needs (e.g. the
    output location); the core adds the ones derived from the spec.
    ``server_image`` is the driver's reference model server (serving
    ReferenceServer, built-in verification). ``rollout_unsupported``: why the
    driver cannot run a new release beside the live one in an environment
    (policy.rollout), None where it can; ``describe_traffic``: how its split
    reaches an environment's callers, when not as in a cluster.
    """
    previous = release.status or ModelReleaseStatus()
    status = previous.model_copy(deep=True)
    status.observed_generation = release.generation
    plan = Plan(status=status)
    ctx = Context(
        release, now, previous, status, plan, environments, server_image, rollout_unsupported,
        describe_traffic,
    )  # fmt: skip

    if references_missing(ctx, gate, environments):
        return _finish(ctx)
    take_retry(ctx)
    if aborted(ctx, environments, observed):
        return _finish(ctx)
    job_env = {**gate_training_inputs(release, gate), **(training_env or {})}
    if not train(ctx, gate, observed, job_env):
        return _finish(ctx)
    if not score(ctx, observed, job_env):
        return _finish(ctx)
    assert gate is not None or release.spec.gate.name is None
    if not evaluate(ctx, gate, observed):
        return _finish(ctx)
    promote(ctx, environments, observed)
    sync_registry(ctx)
    return _finish(ctx)


def _finish(ctx: Context) -> Plan:
    _ready_is_the_truth(ctx)
    if ctx.previous.phase != ctx.status.phase and ctx.status.phase is not None:
        kind = "Warning" if ctx.status.phase in _BAD_PHASES else "Normal"
        ready = cond.find(ctx.status.conditions, cond.READY)
        ctx.plan.events.append(
            Event(
                kind, f"Phase{ctx.status.phase}", ready.message if ready else str(ctx.status.phase)
            )
        )
    return ctx.plan


def gating_conditions(
    release: ModelRelease, environments: dict[str, Environment], status: ModelReleaseStatus
) -> list[str]:
    """The conditions that must all be True, for this generation, for Ready=True.
    Verified gates where an environment of the path verifies and something was
    verified or is being verified (a verification added to an Environment
    after this release went live there does not re-judge it); Analyzed
    likewise for analyses."""
    kinds = [cond.TRAINED, cond.GATE_PASSED, cond.CONFIG_VALID, cond.DEPLOYED]
    path = release.spec.promotion.environments
    if cond.find(status.conditions, cond.VERIFIED) is not None and any(
        name in environments and environments[name].spec.verification is not None for name in path
    ):
        kinds.append(cond.VERIFIED)
    if cond.find(status.conditions, cond.ANALYZED) is not None and any(
        name in environments and environments[name].spec.policy.analysis is not None
        for name in path
    ):
        kinds.append(cond.ANALYZED)
    return kinds


def _ready_is_the_truth(ctx: Context) -> None:
    """Ready=True only when every gating condition is True for the current
    generation; otherwise Ready=False with the first unmet one's reason, and
    Stalled (it is False) or Reconciling (it is Unknown or not yet decided)."""
    ready = cond.find(ctx.status.conditions, cond.READY)
    if ready is None or ready.status != "True":
        return
    generation = ctx.release.generation
    for kind in gating_conditions(ctx.release, ctx.environments, ctx.status):
        found = cond.find(ctx.status.conditions, kind)
        if found is not None and found.status == "True" and found.observed_generation == generation:
            continue
        if found is not None and found.status == "False":
            message = f"{kind}: {found.message}"
            ctx.status.phase = Phase.BLOCKED
            stalled(ctx, found.reason, message)
        else:
            message = (
                f"{kind} is not yet decided for generation {generation}"
                if found is None or found.status == "True"
                else f"{kind}: {found.message}"
            )
            ctx.status.phase = Phase.PROMOTING
            progressing(ctx, found.reason if found is not None else f"{kind}Pending", message)
        return


_BAD_PHASES = {Phase.GATE_FAILED, Phase.BLOCKED, Phase.FAILED, Phase.ROLLED_BACK, Phase.ABORTED}
