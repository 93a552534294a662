"""Step 6: the analysis of the live model while it soaks in an environment.

Pure: the driver asks :func:`due_queries` what to measure now, runs those
queries against Prometheus, and hands the answers back as observations; the
step records each one and judges the analysis. A failed analysis rolls back
as a failed verification does; an inconclusive one blocks (fail closed).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from modelgate.api.analysis import (
    PLACEHOLDER_PATTERN,
    Analysis,
    AnalysisMetric,
    AnalysisPhase,
    AnalysisProgress,
    Measurement,
    MetricProgress,
    NoData,
)
from modelgate.api.common import format_time, parse_duration, parse_time
from modelgate.api.environment import Environment
from modelgate.api.modelrelease import EnvironmentPhase, EnvironmentProgress, ModelRelease
from modelgate.promotion import conditions as cond
from modelgate.promotion.context import Context, min_delay
from modelgate.promotion.plan import Event, MeasurementObservation, Observed
from modelgate.promotion.verification import put_back, rollback_of

KEPT_MEASUREMENTS = 10


@dataclass(frozen=True)
class AnalysisQuery:
    """One measurement the driver is to take now."""

    environment: str
    metric: str
    query: str


def spec_hash(analysis: Analysis) -> str:
    return hashlib.sha256(
        json.dumps(analysis.wire(), sort_keys=True, separators=(",", ":")).encode()
    ).hexdigest()


def render(query: str, release: ModelRelease, env: Environment, **extra: str) -> str:
    """The query with the release's values in place of its placeholders (the
    namespace is the one the model runs in, as its metrics are labelled);
    ``extra`` fills more (a rollout's arm and window)."""
    values = {
        "release": release.name,
        "model": release.spec.model.name,
        "version": release.spec.model.version or "",
        "environment": env.name,
        "namespace": env.spec.namespace,
        **extra,
    }
    return PLACEHOLDER_PATTERN.sub(lambda m: values[m.group(1)], query)


def _next_due(metric: AnalysisMetric, progress: MetricProgress, started: datetime) -> datetime:
    if not progress.measurements:
        return started + parse_duration(metric.initial_delay or "0s")
    # From the last measurement, not from a schedule: an operator that was
    # down does not catch up with a burst of queries.
    return parse_time(progress.measurements[-1].at) + parse_duration(metric.interval)


def due_queries(
    release: ModelRelease, environments: dict[str, Environment], now: datetime
) -> list[AnalysisQuery]:
    """What to measure now, from the analyses the release's status records."""
    found: list[AnalysisQuery] = []
    for entry in release.status.environments if release.status else []:
        env = environments.get(entry.name)
        running = entry.analysis
        if (
            env is None
            or running is None
            or running.phase != AnalysisPhase.RUNNING
            or entry.phase != EnvironmentPhase.ANALYZING
        ):
            continue
        spec = env.spec.policy.analysis
        if spec is None or spec_hash(spec) != running.spec_hash:
            continue
        started = parse_time(running.started_at)
        for metric, progress in zip(spec.metrics, running.metrics, strict=False):
            if progress.phase == AnalysisPhase.RUNNING and now >= _next_due(
                metric, progress, started
            ):
                found.append(AnalysisQuery(entry.name, metric.name, progress.query))
    return found


def start(ctx: Context, env: Environment, entry: EnvironmentProgress) -> None:
    """The release has just become live (and verified) in ``env``: its
    analysis starts now, when the environment has one."""
    spec = env.spec.policy.analysis
    if spec is None:
        return
    entry.analysis = AnalysisProgress(
        phase=AnalysisPhase.RUNNING,
        spec_hash=spec_hash(spec),
        started_at=format_time(ctx.now),
        metrics=[
            MetricProgress(
                name=m.name,
                query=render(m.query, ctx.release, env),
                phase=AnalysisPhase.RUNNING,
                min=m.min,
                max=m.max,
                wanted=m.measurements,
            )
            for m in spec.metrics
        ],
    )
    ctx.plan.events.append(
        Event(
            "Normal",
            "AnalysisStarted",
            f"{env.name}: {', '.join(m.name for m in spec.metrics)}",
        )
    )


def _outcome(metric: AnalysisMetric, value: float | None) -> AnalysisPhase:
    if value is None or math.isnan(value):
        return {
            NoData.INCONCLUSIVE: AnalysisPhase.INCONCLUSIVE,
            NoData.PASSED: AnalysisPhase.PASSED,
            NoData.FAILED: AnalysisPhase.FAILED,
        }[NoData(metric.no_data)]
    low = metric.min if metric.min is not None else -math.inf
    high = metric.max if metric.max is not None else math.inf
    return AnalysisPhase.PASSED if low <= value <= high else AnalysisPhase.FAILED


def _record(metric: AnalysisMetric, progress: MetricProgress, seen: MeasurementObservation) -> None:
    if seen.error is not None and not seen.invalid:
        progress.error = seen.error  # Prometheus did not answer: asked again next time
        return
    progress.error = seen.error if seen.invalid else None
    value = None if seen.value is None or math.isnan(seen.value) else seen.value
    outcome = AnalysisPhase.INCONCLUSIVE if seen.invalid else _outcome(metric, value)
    progress.taken += 1
    if outcome == AnalysisPhase.FAILED:
        progress.failed += 1
    elif outcome == AnalysisPhase.INCONCLUSIVE:
        progress.inconclusive += 1
    progress.measurements = [
        *progress.measurements,
        Measurement(at=seen.at, value=value, outcome=outcome),
    ][-KEPT_MEASUREMENTS:]
    if progress.failed > metric.failure_limit:
        progress.phase = AnalysisPhase.FAILED
    elif progress.inconclusive > metric.inconclusive_limit:
        progress.phase = AnalysisPhase.INCONCLUSIVE
    elif progress.taken >= progress.wanted:
        progress.phase = AnalysisPhase.PASSED


def _bounds(progress: MetricProgress) -> str:
    if progress.min is not None and progress.max is not None:
        return f"{progress.min:g} <= value <= {progress.max:g}"
    if progress.min is not None:
        return f"value >= {progress.min:g}"
    return f"value <= {progress.max:g}"


def describe(progress: MetricProgress) -> str:
    """A metric's verdict with its query, its values and its threshold."""
    values = ", ".join(
        "no data" if m.value is None else f"{m.value:.6g}" for m in progress.measurements
    )
    counts = (
        f"{progress.failed} failed, {progress.inconclusive} inconclusive of "
        f"{progress.taken} measurements"
    )
    found = f"metric {progress.name} {progress.phase}: {counts} (values {values or 'none'}; "
    found += f"passes when {_bounds(progress)}); query: {progress.query}"
    return found + (f"; {progress.error}" if progress.error else "")


def _judge(running: AnalysisProgress) -> tuple[AnalysisPhase, str]:
    phases = [m.phase for m in running.metrics]
    for verdict in (AnalysisPhase.FAILED, AnalysisPhase.INCONCLUSIVE):
        if verdict in phases:
            bad = [describe(m) for m in running.metrics if m.phase == verdict]
            return verdict, "; ".join(bad)
    if all(p == AnalysisPhase.PASSED for p in phases):
        return AnalysisPhase.PASSED, f"analysis passed: {len(phases)} metrics"
    waiting = [m for m in running.metrics if m.phase == AnalysisPhase.RUNNING]
    unanswered = [f"{m.name}: {m.error}" for m in waiting if m.error]
    message = "analysis running: " + ", ".join(f"{m.name} {m.taken}/{m.wanted}" for m in waiting)
    if unanswered:
        message += "; not measured, asking again (" + "; ".join(unanswered) + ")"
    return AnalysisPhase.RUNNING, message


# reason, message, stalled (as deployment's Blocker)
Verdict = tuple[str, str, bool]


def analyze(
    ctx: Context, env: Environment, entry: EnvironmentProgress, observed: Observed
) -> tuple[EnvironmentProgress, Verdict | None]:
    """Take the measurements observed for ``entry``'s analysis (started by
    :func:`start`) and judge it: still running (promotion waits, requeued
    for the next measurement), passed, failed (rolled back) or inconclusive
    (blocked)."""
    running, spec = entry.analysis, env.spec.policy.analysis
    if running is None or spec is None:
        return entry, None
    if spec_hash(spec) != running.spec_hash:
        if running.phase not in (AnalysisPhase.RUNNING, AnalysisPhase.INCONCLUSIVE):
            return entry, None  # a verdict stands: an edit does not re-judge it
        start(ctx, env, entry)  # edited before a verdict: measure again
        running = entry.analysis
        assert running is not None
    was = running.phase
    if was == AnalysisPhase.RUNNING:
        started = parse_time(running.started_at)
        for metric, progress in zip(spec.metrics, running.metrics, strict=True):
            seen = observed.measurements.get((env.name, metric.name))
            if progress.phase == AnalysisPhase.RUNNING and seen is not None:
                _record(metric, progress, seen)
        running.phase, running.message = _judge(running)
        if running.phase == AnalysisPhase.RUNNING:
            for metric, progress in zip(spec.metrics, running.metrics, strict=True):
                if progress.phase != AnalysisPhase.RUNNING:
                    continue
                due = _next_due(metric, progress, started)
                wait = max(due - ctx.now, timedelta(seconds=1))
                if progress.error:
                    wait = min(wait, parse_duration(metric.interval), timedelta(seconds=30))
                ctx.plan.requeue_after = min_delay(ctx.plan.requeue_after, wait)
    name, message = env.name, running.message or ""
    if running.phase == AnalysisPhase.PASSED:
        entry.phase, entry.message = EnvironmentPhase.DEPLOYED, None
        if was != AnalysisPhase.PASSED:
            ctx.plan.events.append(Event("Normal", "AnalysisPassed", f"{name}: {message}"))
        return entry, None
    if running.phase == AnalysisPhase.RUNNING:
        entry.phase, entry.message = EnvironmentPhase.ANALYZING, message
        return entry, ("Analyzing", f"{name}: {message}", False)
    if running.phase == AnalysisPhase.INCONCLUSIVE:
        entry.phase = EnvironmentPhase.ANALYZING
        entry.message = (
            f"analysis inconclusive, promotion blocked: {message}; fix the query or the "
            "metrics, then edit the Environment's analysis to measure again"
        )
        if was != running.phase:
            ctx.plan.events.append(Event("Warning", "AnalysisInconclusive", f"{name}: {message}"))
        return entry, ("AnalysisInconclusive", f"{name}: {entry.message}", True)
    if env.spec.policy.auto_rollback:
        entry.phase = EnvironmentPhase.ROLLED_BACK
        entry.message = f"analysis failed ({message}); {put_back(entry)} was put back"
        ctx.plan.actions.append(rollback_of(ctx, env, entry))
        if was != running.phase:
            ctx.plan.events.append(Event("Warning", "RolledBack", f"{name}: {entry.message}"))
    else:
        entry.phase = EnvironmentPhase.FAILED
        entry.message = f"analysis failed ({message}); autoRollback is off"
    if was != running.phase:
        ctx.plan.events.append(Event("Warning", "AnalysisFailed", f"{name}: {message}"))
    return entry, ("AnalysisFailed", f"{name}: {entry.message}", True)


def analyzed_condition(ctx: Context, progress: list[EnvironmentProgress]) -> None:
    """Analyzed: False when an analysis failed or is inconclusive (naming the
    query, the values and the threshold), Unknown while one runs, True once
    every analysis this release ran has passed."""
    judged = [
        p
        for p in progress
        if p.analysis is not None
        # An analysis a rollback on request ended judged nothing.
        and not (p.rolled_back_by is not None and p.analysis.phase == AnalysisPhase.RUNNING)
    ]
    if not judged:
        return
    bad = [
        p
        for p in judged
        if p.analysis is not None
        and p.analysis.phase in (AnalysisPhase.FAILED, AnalysisPhase.INCONCLUSIVE)
    ]
    running = [
        p.name
        for p in judged
        if p.analysis is not None and p.analysis.phase == AnalysisPhase.RUNNING
    ]
    if bad:
        first = bad[0].analysis
        assert first is not None
        reason = "AnalysisFailed" if first.phase == AnalysisPhase.FAILED else "AnalysisInconclusive"
        message = "; ".join(f"{p.name}: {p.analysis.message}" for p in bad if p.analysis)
        ctx.condition(cond.ANALYZED, False, reason, message)
    elif running:
        ctx.condition(cond.ANALYZED, None, "Analyzing", f"analyzing in {', '.join(running)}")
    else:
        ctx.condition(
            cond.ANALYZED,
            True,
            "AnalysisPassed",
            f"analysis passed in {', '.join(p.name for p in judged)}",
        )
