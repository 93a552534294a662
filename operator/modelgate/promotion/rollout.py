"""Step 5b: the new release judged beside the live one on live traffic
(policy.rollout: Shadow, Canary or Experiment) before it takes over.

Pure, like the analysis: the driver asks :func:`due_queries` what to measure
now, runs those queries against Prometheus per arm and hands the answers back;
this step records each look and decides. The challenger is deployed beside
the champion (getting no traffic), verified there, then given its share (or a
mirror); every look compares the arms with the always-valid sequential test
(``modelgate.experiments``), so looking as often as it likes never raises the
false promotion rate. The outcome: the challenger takes all traffic (a
Deploy that replaces the champion, then the usual verification and
analysis), or the champion keeps it (the challenger is removed).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

from modelgate.api.common import format_time, parse_duration, parse_time
from modelgate.api.environment import Environment
from modelgate.api.modelrelease import EnvironmentPhase, EnvironmentProgress, ModelRelease
from modelgate.api.rollout import (
    CHALLENGER,
    CHAMPION,
    ArmValue,
    ExperimentMetric,
    MetricComparison,
    OnInconclusive,
    Role,
    Rollout,
    RolloutPhase,
    RolloutProgress,
    ShadowComparison,
    Statistic,
    Strategy,
)
from modelgate.experiments.judge import (
    Judgement,
    MetricPlan,
    MetricResult,
    Outcome,
    judge,
    judge_step,
)
from modelgate.experiments.sequential import Arm, Direction, from_moments, proportion
from modelgate.experiments.sizing import sequential_samples
from modelgate.promotion.analysis import render
from modelgate.promotion.context import WAIT_FOR_ROLLOUT, Context, min_delay
from modelgate.promotion.keys import release_key
from modelgate.promotion.plan import (
    DeploymentObservation,
    Event,
    MeasurementObservation,
    Observed,
    RemoveChallenger,
    SetTraffic,
)

# Before the split, the champion's last hour sizes the experiment.
SIZING_WINDOW = timedelta(hours=1)
# The looks a shadow takes: built-in queries of the router's counters.
SHADOW_METRIC = "shadow"
SHADOW_FIELDS = {
    "requests": "modelgate_shadow_requests_total",
    "rows": "modelgate_shadow_rows_total",
    "disagreements": "modelgate_shadow_disagreements_total",
    "scoreDifference": "modelgate_shadow_score_difference_total",
    "errors": "modelgate_shadow_errors_total",
    "championSeconds": "modelgate_shadow_champion_seconds_total",
    "challengerSeconds": "modelgate_shadow_challenger_seconds_total",
}


# A challenger's entry while it is deployed, verified and judged beside the champion.
_BESIDE = (EnvironmentPhase.DEPLOYING, EnvironmentPhase.VERIFYING, EnvironmentPhase.JUDGING)
# A canary step's guardrails are judged at this level (steps are short).
CANARY_ALPHA = 0.05


@dataclass(frozen=True)
class ArmQuery:
    """One query the driver is to run now for a rollout's look."""

    environment: str
    metric: str
    arm: str  # champion | challenger (a shadow's built-ins: champion)
    field: str  # count | successes | sum | sumOfSquares, or a shadow counter
    query: str


def spec_hash(rollout: Rollout) -> str:
    return hashlib.sha256(
        json.dumps(rollout.wire(), sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def judged_by(env: Environment) -> Rollout | None:
    """The environment's rollout when it judges a new release before it takes over."""
    rollout = env.spec.policy.rollout
    if rollout is None or rollout.strategy == Strategy.REPLACE:
        return None
    return rollout


def traffic_description(rollout: Rollout) -> str:
    """How the split reaches callers: a mirror or a sticky split is the
    router's work (behind the Gateway's route in a cluster)."""
    routed = None
    if rollout.strategy == Strategy.SHADOW:
        routed = "Modelgate's router, mirroring every request"
    elif rollout.sticky_header is not None:
        routed = f"Modelgate's router, sticky by {rollout.sticky_header}"
    if rollout.traffic is not None and rollout.traffic.gateway is not None:
        gateway = rollout.traffic.gateway
        where = f"{gateway.namespace}/{gateway.name}" if gateway.namespace else gateway.name
        if routed is not None:
            return f"HTTPRoute on Gateway {where} to {routed}"
        return f"HTTPRoute on Gateway {where} (exact weights)"
    if routed is not None:
        return routed
    return (
        "by replicas behind the model's Service (coarse: the share is the challenger's "
        "replicas out of all; set policy.rollout.traffic.gateway for exact weights)"
    )


# -- queries -------------------------------------------------------------------


def _render(query: str, release: ModelRelease, env: Environment, arm: str, window: str) -> str:
    return render(query, release, env, arm=arm, window=window)


def _fields(metric: ExperimentMetric) -> dict[str, str]:
    found = {"count": metric.count}
    for name, query in (
        ("successes", metric.successes),
        ("sum", metric.sum),
        ("sumOfSquares", metric.sum_of_squares),
    ):
        if query is not None:
            found[name] = query
    return found


def _window(seconds: float) -> str:
    return f"{max(1, math.ceil(seconds))}s"


def _shadow_query(counter: str, release: ModelRelease, env: Environment, window: str) -> str:
    labels = (
        f'namespace="{env.spec.namespace}",environment="{env.name}",'
        f'model="{release.spec.model.name}"'
    )
    return f"sum(increase({counter}{{{labels}}}[{window}]))"


def due_queries(
    release: ModelRelease, environments: dict[str, Environment], now: datetime
) -> list[ArmQuery]:
    """What to measure now, from the rollouts the release's status records:
    before the split, the champion's primary metric (to size the experiment);
    after it, every metric of both arms over the window since the split."""
    found: list[ArmQuery] = []
    for entry in release.status.environments if release.status else []:
        env = environments.get(entry.name)
        progress = entry.judged
        if env is None or progress is None or entry.phase not in _BESIDE:
            continue
        rollout = judged_by(env)
        if rollout is None or spec_hash(rollout) != progress.spec_hash:
            continue
        last = parse_time(progress.looked_at) if progress.looked_at else None
        over = progress.deadline is not None and now >= parse_time(progress.deadline)
        if last is not None and now < last + parse_duration(rollout.interval) and not over:
            continue
        if progress.phase == RolloutPhase.WAITING:
            primary = next((m for m in rollout.metrics if m.role == Role.PRIMARY), None)
            if primary is not None and progress.required_samples is None:
                window = _window(SIZING_WINDOW.total_seconds())
                found += [
                    ArmQuery(entry.name, primary.name, CHAMPION, field,
                             _render(query, release, env, CHAMPION, window))
                    for field, query in _fields(primary).items()
                ]  # fmt: skip
            continue
        if (
            progress.phase != RolloutPhase.RUNNING
            or progress.split_at is None
            or entry.phase != EnvironmentPhase.JUDGING
        ):
            continue
        window = _window((now - parse_time(progress.split_at)).total_seconds())
        if rollout.strategy == Strategy.SHADOW:
            found += [
                ArmQuery(entry.name, SHADOW_METRIC, CHAMPION, field,
                         _shadow_query(counter, release, env, window))
                for field, counter in SHADOW_FIELDS.items()
            ]  # fmt: skip
            continue
        for metric in rollout.metrics:
            for arm in (CHAMPION, CHALLENGER):
                found += [
                    ArmQuery(entry.name, metric.name, arm, field,
                             _render(query, release, env, arm, window))
                    for field, query in _fields(metric).items()
                ]  # fmt: skip
    return found


# -- judging -------------------------------------------------------------------


def _answers(
    observed: Observed, environment: str, metric: str, arm: str, fields: list[str]
) -> tuple[dict[str, float], str | None] | None:
    """The values of one arm's fields at this look, or why not (None: not looked)."""
    values: dict[str, float] = {}
    for field in fields:
        seen: MeasurementObservation | None = observed.arm_measurements.get(
            (environment, metric, arm, field)
        )
        if seen is None:
            return None
        if seen.error is not None:
            return {}, seen.error
        values[field] = 0.0 if seen.value is None or math.isnan(seen.value) else seen.value
    return values, None


def _arm(metric: ExperimentMetric, values: dict[str, float]) -> Arm:
    # increase() extrapolates: counts are near-integers, rounded here.
    count = max(0, round(values["count"]))
    if metric.statistic == Statistic.PROPORTION:
        return proportion(min(count, max(0, round(values["successes"]))), count)
    if count == 0:
        return Arm(0, 0.0, 0.0)
    total, squares = values["sum"], values["sumOfSquares"]
    # Rounding can leave the squares a hair below what the mean allows.
    squares = max(squares, total * total / count)
    return from_moments(count, total, squares)


def _plan(metric: ExperimentMetric) -> MetricPlan:
    return MetricPlan(
        metric.name,
        metric.role,  # type: ignore[arg-type]
        Direction(metric.better),
        metric.effect,
    )


def _comparison(metric: ExperimentMetric, result: MetricResult | None) -> MetricComparison:
    found = MetricComparison(
        name=metric.name,
        role=metric.role,
        better=metric.better,
        threshold=metric.effect,
        verdict=result.verdict if result is not None else "Undecided",
        p_value=result.p_value if result is not None and result.comparison else None,
    )
    if result is not None and result.comparison is not None:
        c = result.comparison
        found.effect, found.low, found.high = c.effect, c.low, c.high
        found.e_value = c.likelihood_ratio
    return found


def _measure(
    rollout: Rollout, observed: Observed, environment: str, previous: list[MetricComparison]
) -> tuple[dict[str, tuple[Arm, Arm]], dict[str, MetricComparison], bool]:
    """Each metric's arms at this look, the comparisons with their arms'
    values and errors filled in, and whether a look was taken at all."""
    measured: dict[str, tuple[Arm, Arm]] = {}
    comparisons = {c.name: c for c in previous}
    looked = False
    for metric in rollout.metrics:
        fields = list(_fields(metric))
        answers = [
            _answers(observed, environment, metric.name, arm, fields)
            for arm in (CHAMPION, CHALLENGER)
        ]
        if any(a is None for a in answers):
            continue
        looked = True
        entry = comparisons.get(metric.name) or _comparison(metric, None)
        errors = [a[1] for a in answers if a is not None and a[1] is not None]
        if errors:
            entry.error = errors[0]
            comparisons[metric.name] = entry
            continue
        entry.error = None
        champion, challenger = (_arm(metric, a[0]) for a in answers if a is not None)
        entry.champion = ArmValue(samples=champion.samples, value=champion.mean)
        entry.challenger = ArmValue(samples=challenger.samples, value=challenger.mean)
        comparisons[metric.name] = entry
        measured[metric.name] = (champion, challenger)
    return measured, comparisons, looked


def _required_samples(rollout: Rollout, observed: Observed, environment: str) -> int | None:
    """Samples per arm the experiment needs, from the champion's variance."""
    primary = next((m for m in rollout.metrics if m.role == Role.PRIMARY), None)
    settings = rollout.experiment
    if primary is None or settings is None:
        return None
    answer = _answers(observed, environment, primary.name, CHAMPION, list(_fields(primary)))
    if answer is None or answer[1] is not None:
        return None
    arm = _arm(primary, answer[0])
    variance = arm.variance
    if arm.samples < 2 or variance <= 0:
        if primary.statistic != Statistic.PROPORTION:
            return None
        variance = 0.25  # a rate's largest variance: the most it could need
    effect = primary.effect
    try:
        return sequential_samples(
            variance, variance, effect, settings.alpha, settings.power, tau=effect
        )
    except ValueError:
        return None


@dataclass(frozen=True)
class Decision:
    """What a look decided: go on, or the outcome and why."""

    outcome: Outcome
    reason: str


def _shadow_look(
    rollout: Rollout, progress: RolloutProgress, observed: Observed, environment: str, over: bool
) -> Decision | None:
    answer = _answers(observed, environment, SHADOW_METRIC, CHAMPION, list(SHADOW_FIELDS))
    if answer is None:
        return None
    values, error = answer
    if error is not None:
        progress.message = f"shadow not measured, asking again: {error}"
        return Decision(Outcome.RUNNING, progress.message)
    settings = rollout.shadow
    assert settings is not None
    requests, rows = max(0, round(values["requests"])), max(0, round(values["rows"]))
    found = ShadowComparison(
        rows=rows,
        disagreements=min(rows, max(0, round(values["disagreements"]))),
        requests=requests,
        errors=max(0, round(values["errors"])),
    )
    if rows:
        found.score_difference = values["scoreDifference"] / rows
    if requests and values["championSeconds"] > 0:
        found.latency_ratio = values["challengerSeconds"] / values["championSeconds"]
    progress.shadow = found
    rate = found.disagreements / rows if rows else 0.0
    numbers = (
        f"{found.disagreements:,} of {rows:,} mirrored rows labelled differently "
        f"({rate:.2%}, at most {settings.max_disagreement:.2%})"
    )
    if found.score_difference is not None:
        numbers += f", mean score difference {found.score_difference:.4g}"
    if found.latency_ratio is not None:
        numbers += f", latency ratio {found.latency_ratio:.3g}"
    if not over:
        return Decision(Outcome.RUNNING, f"mirroring: {numbers}")
    if rows < settings.min_rows:
        return Decision(
            Outcome.INCONCLUSIVE,
            f"the shadow ended with {rows:,} mirrored rows, fewer than "
            f"{settings.min_rows:,}: {numbers}",
        )
    failures = []
    if rate > settings.max_disagreement:
        failures.append(f"disagreement {rate:.2%} above {settings.max_disagreement:.2%}")
    limit = settings.max_score_difference
    if limit is not None and (found.score_difference or 0.0) > limit:
        failures.append(f"score difference {found.score_difference:.4g} above {limit:g}")
    ratio = settings.max_latency_ratio
    if ratio is not None and found.latency_ratio is not None and found.latency_ratio > ratio:
        failures.append(f"latency ratio {found.latency_ratio:.3g} above {ratio:g}")
    if found.errors / max(1, requests + found.errors) > settings.max_errors:
        failures.append(f"{found.errors:,} failed answers, above {settings.max_errors:.2%}")
    if failures:
        return Decision(Outcome.ROLL_BACK, "the shadow disagrees: " + "; ".join(failures))
    return Decision(Outcome.PROMOTE, f"the shadow agrees: {numbers}")


def _look(
    ctx: Context,
    rollout: Rollout,
    progress: RolloutProgress,
    observed: Observed,
    environment: str,
) -> Decision | None:
    """Take this look's measurements (if one was taken) and judge them."""
    assert progress.deadline is not None
    over = ctx.now >= parse_time(progress.deadline)
    if rollout.strategy == Strategy.SHADOW:
        decision = _shadow_look(rollout, progress, observed, environment, over)
    else:
        measured, comparisons, looked = _measure(rollout, observed, environment, progress.metrics)
        if not looked:
            return None
        previous = {c.name: c.p_value for c in progress.metrics if c.p_value is not None}
        plans = tuple(_plan(m) for m in rollout.metrics)
        judgement: Judgement
        if rollout.strategy == Strategy.EXPERIMENT:
            settings = rollout.experiment
            assert settings is not None
            judgement = judge(
                plans, measured, alpha=settings.alpha, min_samples=settings.min_samples,
                previous_p_values=previous, deadline_passed=over,
            )  # fmt: skip
        else:
            canary = rollout.canary
            assert canary is not None
            judgement = judge_step(
                plans, measured, alpha=CANARY_ALPHA, min_samples=canary.min_samples,
                previous_p_values=previous, step_over=over,
            )  # fmt: skip
        results = {r.plan.name: r for r in judgement.results}
        for metric in rollout.metrics:
            fresh = _comparison(
                metric, results.get(metric.name) if metric.name in measured else None
            )
            kept = comparisons.get(metric.name)
            if kept is not None:
                fresh.champion, fresh.challenger = kept.champion, kept.challenger
                fresh.error = kept.error
                if metric.name not in measured:
                    fresh.p_value = kept.p_value
            comparisons[metric.name] = fresh
        progress.metrics = [comparisons[m.name] for m in rollout.metrics]
        decision = Decision(judgement.outcome, judgement.reason)
    if decision is None:
        return None
    progress.looks += 1
    progress.looked_at = format_time(ctx.now)
    return decision


# -- the step -----------------------------------------------------------------


def _wanted(rollout: Rollout, progress: RolloutProgress) -> tuple[int, bool, timedelta]:
    """The challenger's weight and mirror for the current step, and its length."""
    if rollout.strategy == Strategy.SHADOW:
        assert rollout.shadow is not None
        return 0, True, parse_duration(rollout.shadow.duration)
    if rollout.strategy == Strategy.CANARY:
        assert rollout.canary is not None
        step = rollout.canary.steps[(progress.step or 1) - 1]
        return step.weight, False, parse_duration(step.duration)
    assert rollout.experiment is not None
    return (
        rollout.experiment.split.challenger,
        False,
        parse_duration(rollout.experiment.deadline),
    )


def _set_traffic(
    ctx: Context, env: Environment, rollout: Rollout, champion: str, weight: int, mirror: bool
) -> SetTraffic:
    traffic = rollout.traffic
    gateway = traffic.gateway if traffic is not None else None
    return SetTraffic(
        environment=env.name,
        namespace=env.spec.namespace,
        model=ctx.release.spec.model.name,
        champion=champion,
        challenger=release_key(ctx.release),
        weight=weight,
        mirror=mirror,
        sticky_header=rollout.sticky_header,
        gateway=(gateway.name, gateway.namespace or env.spec.namespace, gateway.section_name)
        if gateway is not None
        else None,
        hostnames=tuple(traffic.hostnames) if traffic is not None else (),
    )


def remove_challenger(ctx: Context, env: Environment, reason: str) -> RemoveChallenger:
    return RemoveChallenger(
        environment=env.name,
        namespace=env.spec.namespace,
        model=ctx.release.spec.model.name,
        release=release_key(ctx.release),
        reason=reason[:2000],
    )


def removals_for_deleted(
    key: str,
    model: str,
    environments: Mapping[str, Environment],
    challengers: Mapping[str, DeploymentObservation],
    reason: str | None = None,
) -> list[RemoveChallenger]:
    """A deleted (or aborted) release's challengers, wherever they still
    run: nothing is left to judge them, and callers must not keep reaching
    them."""
    return [
        RemoveChallenger(
            environment=name,
            namespace=environments[name].spec.namespace,
            model=model,
            release=key,
            reason=reason or f"release {key} was deleted",
        )
        for name, beside in sorted(challengers.items())
        if beside.release == key and name in environments
    ]


def start(
    ctx: Context, env: Environment, rollout: Rollout, live: DeploymentObservation
) -> RolloutProgress:
    """The record of a new judgement of this release against ``live``."""
    return RolloutProgress(
        strategy=rollout.strategy,
        phase=RolloutPhase.WAITING,
        spec_hash=spec_hash(rollout),
        champion=live.release,
        traffic=ctx.describe_traffic(env)
        if ctx.describe_traffic is not None
        else traffic_description(rollout),
        step=1 if rollout.strategy == Strategy.CANARY else None,
    )


# reason, message, stalled (as deployment's Blocker)
Verdict = tuple[str, str, bool]


def judge_beside(
    ctx: Context,
    env: Environment,
    rollout: Rollout,
    entry: EnvironmentProgress,
    challenger: DeploymentObservation,
    observed: Observed,
) -> tuple[EnvironmentProgress, Verdict | None, bool]:
    """The challenger runs beside the champion, ready and verified (where
    the environment verifies): split the traffic, look, decide. Returns the
    entry, what blocks the path, and whether the challenger takes over now."""
    progress = entry.judged
    assert progress is not None
    name = env.name
    if progress.phase == RolloutPhase.PROMOTED:
        return entry, None, True
    if progress.phase == RolloutPhase.WAITING:
        progress.phase = RolloutPhase.RUNNING
        if progress.required_samples is not None:
            ctx.plan.events.append(
                Event(
                    "Normal",
                    "ExperimentSized",
                    f"{name}: {progress.required_samples:,} observations per arm detect the "
                    "primary metric's minimum detectable effect with the stated power",
                )
            )
    weight, mirror, length = _wanted(rollout, progress)
    entry.phase = EnvironmentPhase.JUDGING
    if challenger.weight != weight or challenger.mirror != mirror:
        ctx.plan.actions.append(_set_traffic(ctx, env, rollout, progress.champion, weight, mirror))
        how = "a mirrored copy" if mirror else f"{weight}%"
        entry.message = f"giving the challenger {how} of the traffic in {name}"
        progress.split_at = None
        ctx.plan.requeue_after = min_delay(ctx.plan.requeue_after, WAIT_FOR_ROLLOUT)
        return entry, None, False
    if progress.split_at is None:
        progress.split_at = format_time(ctx.now)
        progress.deadline = format_time(ctx.now + length)
        progress.weight, progress.mirror = weight, mirror
        progress.looked_at = format_time(ctx.now)  # the first look after one interval
        what = "mirrors" if mirror else f"sends {weight}% of"
        step = f" (step {progress.step} of {len(rollout.canary.steps)})" if rollout.canary else ""
        ctx.plan.events.append(
            Event("Normal", "TrafficSplit", f"{name}: the challenger {what} the traffic{step}")
        )
    decision = _look(ctx, rollout, progress, observed, name)
    if decision is None or decision.outcome == Outcome.RUNNING:
        if decision is not None:
            progress.message = decision.reason
        entry.message = progress.message or f"{rollout.strategy} running in {name}"
        assert progress.deadline is not None
        assert progress.looked_at is not None
        following = min(
            parse_time(progress.looked_at) + parse_duration(rollout.interval),
            parse_time(progress.deadline),
        )
        wait = max(following - ctx.now, timedelta(seconds=1))
        ctx.plan.requeue_after = min_delay(ctx.plan.requeue_after, wait)
        return entry, None, False
    return _decided(ctx, env, rollout, entry, progress, decision)


def _decided(
    ctx: Context,
    env: Environment,
    rollout: Rollout,
    entry: EnvironmentProgress,
    progress: RolloutProgress,
    decision: Decision,
) -> tuple[EnvironmentProgress, Verdict | None, bool]:
    name = env.name
    outcome, reason = decision.outcome, decision.reason
    if rollout.strategy == Strategy.CANARY and outcome == Outcome.PROMOTE:
        assert rollout.canary is not None
        step = progress.step or 1
        if step < len(rollout.canary.steps):
            ctx.plan.events.append(
                Event("Normal", "CanaryStepPassed", f"{name}: step {step}: {reason}")
            )
            progress.step = step + 1
            progress.split_at = None
            progress.metrics = []
            weight, mirror, _ = _wanted(rollout, progress)
            ctx.plan.actions.append(
                _set_traffic(ctx, env, rollout, progress.champion, weight, mirror)
            )
            entry.message = f"canary step {step + 1}: giving the challenger {weight}%"
            ctx.plan.requeue_after = min_delay(ctx.plan.requeue_after, WAIT_FOR_ROLLOUT)
            return entry, None, False
    progress.decided_at = format_time(ctx.now)
    if outcome == Outcome.INCONCLUSIVE:
        progress.phase = RolloutPhase.INCONCLUSIVE
        takes_over = (
            rollout.experiment is not None
            and rollout.experiment.on_inconclusive == OnInconclusive.PROMOTE
        )
        ctx.plan.events.append(Event("Warning", "RolloutInconclusive", f"{name}: {reason}"))
        if takes_over:
            progress.message = f"inconclusive, promoted as onInconclusive says: {reason}"
            return entry, None, True
        progress.message = f"inconclusive: {reason}"
        return _kept_by_champion(ctx, env, entry, progress, "RolloutInconclusive")
    if outcome == Outcome.PROMOTE:
        progress.phase = RolloutPhase.PROMOTED
        progress.message = reason
        ctx.plan.events.append(Event("Normal", "ChallengerWon", f"{name}: {reason}"))
        return entry, None, True
    progress.phase = RolloutPhase.ROLLED_BACK
    progress.message = reason
    return _kept_by_champion(ctx, env, entry, progress, "ChallengerLost")


def _kept_by_champion(
    ctx: Context,
    env: Environment,
    entry: EnvironmentProgress,
    progress: RolloutProgress,
    reason: str,
) -> tuple[EnvironmentProgress, Verdict | None, bool]:
    entry.phase = EnvironmentPhase.ROLLED_BACK
    entry.message = (
        f"{progress.strategy} against {progress.champion}: {progress.message}; the champion "
        "keeps all traffic and this release is promoted no further"
    )
    # The challenger is removed by the caller, level-based, while it runs.
    ctx.plan.events.append(Event("Warning", reason, f"{env.name}: {entry.message}"))
    return entry, (reason, f"{env.name}: {entry.message}", True), False


def size_before_split(
    rollout: Rollout,
    progress: RolloutProgress,
    observed: Observed,
    environment: str,
    now: datetime,
) -> None:
    """While the challenger is deployed and verified: size the experiment from
    the champion's last hour, once."""
    if rollout.strategy != Strategy.EXPERIMENT or progress.required_samples is not None:
        return
    primary = next((m for m in rollout.metrics if m.role == Role.PRIMARY), None)
    if primary is None:
        return
    if (environment, primary.name, CHAMPION, "count") not in observed.arm_measurements:
        return
    progress.looked_at = format_time(now)
    progress.required_samples = _required_samples(rollout, observed, environment)
