"""Prometheus metrics: operator health, training, model quality and delivery.

Everything is derived from status *transitions* (old status -> new status of a
release), so the same release seen again after a restart or a resync counts
nothing twice, and local mode and the operator record the same series.

Cardinality is bounded by design: labels are namespaces, environments, model
names, gate and check names and small enums, never release names, except in
``modelgate_live_release_info``, which holds one series per (namespace,
environment, model): the release live there now. README lists every metric.

No import-time side effects: a ``Metrics`` owns its own registry.
"""

from __future__ import annotations

import platform
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from importlib import metadata
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from modelgate.api.common import parse_time
from modelgate.api.modelrelease import (
    EnvironmentPhase,
    EnvironmentProgress,
    GateStatus,
    ModelRelease,
    ModelReleaseStatus,
)

MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0
RECONCILE_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
TRAINING_BUCKETS = (30, MINUTE * 2, MINUTE * 5, MINUTE * 15, MINUTE * 30, HOUR, HOUR * 2, HOUR * 4)
LEAD_TIME_BUCKETS = (
    MINUTE * 5,
    MINUTE * 15,
    MINUTE * 30,
    HOUR,
    HOUR * 3,
    HOUR * 12,
    DAY,
    DAY * 3,
    DAY * 7,
    DAY * 30,
)
RESTORE_BUCKETS = (MINUTE, MINUTE * 5, MINUTE * 15, HOUR, HOUR * 4, DAY)


def _version() -> str:
    try:
        return metadata.version("modelgate")
    except metadata.PackageNotFoundError:
        return "unknown"


class _StateCollector(Collector):
    """Gauges read from the operator's current view at scrape time."""

    def __init__(self, owner: Metrics) -> None:
        self.owner = owner

    def collect(self) -> Iterator[GaugeMetricFamily]:
        phases = GaugeMetricFamily(
            "modelgate_releases",
            "ModelReleases the operator knows, by namespace and phase.",
            labels=["namespace", "phase"],
        )
        live = GaugeMetricFamily(
            "modelgate_live_release_info",
            "The release live in each environment per model (value 1).",
            labels=["namespace", "environment", "model", "release", "version"],
        )
        oldest = GaugeMetricFamily(
            "modelgate_oldest_release_in_phase_seconds",
            "How long the longest-waiting release has been in its phase, by namespace and "
            "phase (alert on releases stuck in Training, Evaluating or Promoting).",
            labels=["namespace", "phase"],
        )
        now = datetime.now(UTC)
        with self.owner.lock:
            counts: dict[tuple[str, str], int] = {}
            since: dict[tuple[str, str], datetime] = {}
            for (namespace, _), (phase, entered) in self.owner.phases.items():
                counts[(namespace, phase)] = counts.get((namespace, phase), 0) + 1
                since[(namespace, phase)] = min(entered, since.get((namespace, phase), entered))
            for (namespace, phase), count in sorted(counts.items()):
                phases.add_metric([namespace, phase], count)
                age = max((now - since[(namespace, phase)]).total_seconds(), 0.0)
                oldest.add_metric([namespace, phase], age)
            for (namespace, environment, model), (release, version) in sorted(
                self.owner.live.items()
            ):
                live.add_metric([namespace, environment, model, release, version], 1)
        yield phases
        yield oldest
        yield live


class Metrics:
    """All of Modelgate's metrics, in one explicit registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.lock = threading.Lock()
        # (namespace, name) -> (phase, since); (namespace, environment, model) -> (release, version)
        self.phases: dict[tuple[str, str], tuple[str, datetime]] = {}
        self.live: dict[tuple[str, str, str], tuple[str, str]] = {}
        r = self.registry
        self.build_info = Gauge(
            "modelgate_build_info",
            "Modelgate version and Python version (value 1).",
            ["version", "python"],
            registry=r,
        )
        self.build_info.labels(_version(), platform.python_version()).set(1)
        self.reconciles = Counter(
            "modelgate_reconcile",
            "Reconciliations by kind and result (ok, retry, error, invalid).",
            ["kind", "result"],
            registry=r,
        )
        self.reconcile_seconds = Histogram(
            "modelgate_reconcile_duration_seconds",
            "Time one reconciliation took, by kind.",
            ["kind"],
            buckets=RECONCILE_BUCKETS,
            registry=r,
        )
        self.errors = Counter(
            "modelgate_reconcile_errors",
            "Reconciliation errors by kind and reason.",
            ["kind", "reason"],
            registry=r,
        )
        self.training_runs = Counter(
            "modelgate_training_runs",
            "Finished training runs by outcome (Succeeded, Failed).",
            ["namespace", "model", "outcome"],
            registry=r,
        )
        self.training_seconds = Histogram(
            "modelgate_training_duration_seconds",
            "Wall time of finished training runs.",
            ["namespace", "outcome"],
            buckets=TRAINING_BUCKETS,
            registry=r,
        )
        self.training_retries = Counter(
            "modelgate_training_retries",
            "Training pods that failed and were retried within their Job.",
            ["namespace", "model"],
            registry=r,
        )
        self.gate_evaluations = Counter(
            "modelgate_gate_evaluations",
            "Gate evaluations by gate and outcome (Passed, Failed, Inconclusive).",
            ["namespace", "gate", "outcome"],
            registry=r,
        )
        self.check_outcomes = Counter(
            "modelgate_gate_check_outcomes",
            "Check results by gate, check and outcome.",
            ["namespace", "gate", "check", "outcome"],
            registry=r,
        )
        self.check_value = Gauge(
            "modelgate_gate_check_value",
            "Latest measured value of each check, per model (the worst slice for slices).",
            ["namespace", "model", "check"],
            registry=r,
        )
        self.check_threshold = Gauge(
            "modelgate_gate_check_threshold",
            "Threshold of each check, per model; bound is min or max.",
            ["namespace", "model", "check", "bound"],
            registry=r,
        )
        self.gate_failure_streak = Gauge(
            "modelgate_gate_consecutive_failures",
            "Gate evaluations in a row that did not pass, per model (0 after a pass).",
            ["namespace", "model"],
            registry=r,
        )
        self.deployments = Counter(
            "modelgate_deployments",
            "Releases that went live in an environment (deployment frequency).",
            ["namespace", "environment", "model"],
            registry=r,
        )
        self.config_changes = Counter(
            "modelgate_config_changes",
            "Config changes to a release already live in an environment, by result: "
            "Deployed (rolled out), Refused (broke a rule; the live config stays), "
            "RolledBack (failed verification; the previous config is back).",
            ["namespace", "environment", "model", "result"],
            registry=r,
        )
        self.lead_time = Histogram(
            "modelgate_lead_time_seconds",
            "From ModelRelease creation to live (verified) in the environment.",
            ["namespace", "environment"],
            buckets=LEAD_TIME_BUCKETS,
            registry=r,
        )
        self.rollbacks = Counter(
            "modelgate_rollbacks",
            "Rollbacks after a failed verification or analysis (change failures).",
            ["namespace", "environment", "model"],
            registry=r,
        )
        self.verification_failures = Counter(
            "modelgate_verification_failures",
            "Post-deployment verifications that failed.",
            ["namespace", "environment", "model"],
            registry=r,
        )
        self.analysis_runs = Counter(
            "modelgate_analysis_runs",
            "Analyses of a live model judged, by outcome (Passed, Failed, Inconclusive).",
            ["namespace", "environment", "model", "outcome"],
            registry=r,
        )
        self.analysis_measurements = Counter(
            "modelgate_analysis_measurements",
            "Analysis measurements taken, by metric and outcome.",
            ["namespace", "environment", "model", "metric", "outcome"],
            registry=r,
        )
        self.analysis_value = Gauge(
            "modelgate_analysis_value",
            "The latest value an analysis metric measured.",
            ["namespace", "environment", "model", "metric"],
            registry=r,
        )
        where = ["namespace", "environment", "model"]
        self.rollouts = Counter(
            "modelgate_rollouts",
            "New releases judged against the live one on live traffic (policy.rollout), by "
            "strategy and outcome: Promoted, RolledBack or Inconclusive.",
            [*where, "strategy", "outcome"],
            registry=r,
        )
        self.rollout_weight = Gauge(
            "modelgate_rollout_weight",
            "The challenger's share of the traffic now, in per cent (0 when mirrored or done).",
            where,
            registry=r,
        )
        self.rollout_effect = Gauge(
            "modelgate_rollout_effect",
            "A rollout metric's latest effect: challenger minus champion, in its units.",
            [*where, "metric"],
            registry=r,
        )
        self.rollout_p_value = Gauge(
            "modelgate_rollout_p_value",
            "A rollout metric's always-valid p-value (the smallest over the looks so far).",
            [*where, "metric"],
            registry=r,
        )
        self.rollout_samples = Gauge(
            "modelgate_rollout_samples",
            "Observations of a rollout metric in each arm's window.",
            [*where, "metric", "arm"],
            registry=r,
        )
        self.restore_seconds = Histogram(
            "modelgate_time_to_restore_seconds",
            "From a failing release going live to the previous one being put back.",
            ["namespace", "environment"],
            buckets=RESTORE_BUCKETS,
            registry=r,
        )
        r.register(_StateCollector(self))

    # -- operator ---------------------------------------------------------------

    def reconciled(self, kind: str, result: str, seconds: float) -> None:
        self.reconciles.labels(kind, result).inc()
        self.reconcile_seconds.labels(kind).observe(seconds)

    def error(self, kind: str, reason: str) -> None:
        self.errors.labels(kind, reason).inc()

    def forget(self, namespace: str, name: str) -> None:
        """A release was deleted."""
        with self.lock:
            self.phases.pop((namespace, name), None)

    def set_live(
        self, namespace: str, environment: str, model: str, release: str, version: str | None
    ) -> None:
        with self.lock:
            self.live[(namespace, environment, model)] = (release, version or "")

    # -- what a status change means ---------------------------------------------

    def release_changed(
        self,
        release: ModelRelease,
        old: ModelReleaseStatus | None,
        new: ModelReleaseStatus,
        now: datetime,
    ) -> None:
        namespace, model = release.namespace, release.spec.model.name
        with self.lock:
            if new.phase is not None:
                key, phase = (namespace, release.name), str(new.phase)
                known = self.phases.get(key)
                if known is None or known[0] != phase:
                    self.phases[key] = (phase, now)
        self._training(namespace, model, old, new)
        if new.gate is not None and (
            old is None or old.gate is None or _gate_key(old.gate) != _gate_key(new.gate)
        ):
            self._gate(namespace, model, new.gate)
        before = {e.name: e for e in old.environments} if old is not None else {}
        for entry in new.environments:
            self._analysis(release, entry, before.get(entry.name))
            self._judged(release, entry, before.get(entry.name))
            self._environment(release, entry, before.get(entry.name), now)

    def _training(
        self, namespace: str, model: str, old: ModelReleaseStatus | None, new: ModelReleaseStatus
    ) -> None:
        run = new.training
        if run is None or run.state == "Running":
            return
        previous = old.training if old is not None else None
        if (
            previous is not None
            and previous.job_name == run.job_name
            and previous.state == run.state
        ):
            return
        self.training_runs.labels(namespace, model, run.state).inc()
        if run.retries:
            self.training_retries.labels(namespace, model).inc(run.retries)
        seconds = _between(run.started_at, run.completed_at)
        if seconds is not None:
            self.training_seconds.labels(namespace, run.state).observe(seconds)

    def _gate(self, namespace: str, model: str, gate: GateStatus) -> None:
        name = gate.name or "inline"
        self.gate_evaluations.labels(namespace, name, str(gate.outcome)).inc()
        streak = self.gate_failure_streak.labels(namespace, model)
        if str(gate.outcome) == "Passed":
            streak.set(0)
        else:
            streak.inc()
        for check in gate.checks:
            self.check_outcomes.labels(namespace, name, check.name, str(check.outcome)).inc()
            if check.value is not None:
                self.check_value.labels(namespace, model, check.name).set(check.value)
            for bound, value in (("min", check.min), ("max", check.max)):
                if value is not None:
                    self.check_threshold.labels(namespace, model, check.name, bound).set(value)

    def _analysis(
        self, release: ModelRelease, entry: EnvironmentProgress, before: EnvironmentProgress | None
    ) -> None:
        analysis = entry.analysis
        if analysis is None:
            return
        namespace, model, name = release.namespace, release.spec.model.name, entry.name
        earlier = before.analysis if before is not None else None
        same = earlier is not None and earlier.started_at == analysis.started_at
        taken = {m.name: m.taken for m in earlier.metrics} if earlier is not None and same else {}
        for metric in analysis.metrics:
            new = metric.taken - taken.get(metric.name, 0)
            for measurement in metric.measurements[-new:] if new > 0 else []:
                self.analysis_measurements.labels(
                    namespace, name, model, metric.name, str(measurement.outcome)
                ).inc()
                if measurement.value is not None:
                    self.analysis_value.labels(namespace, name, model, metric.name).set(
                        measurement.value
                    )
        verdict = str(analysis.phase)
        if verdict != "Running" and not (same and earlier is not None and earlier.phase == verdict):
            self.analysis_runs.labels(namespace, name, model, verdict).inc()

    def _judged(
        self, release: ModelRelease, entry: EnvironmentProgress, before: EnvironmentProgress | None
    ) -> None:
        judged = entry.judged
        if judged is None:
            return
        where = (release.namespace, entry.name, release.spec.model.name)
        running = str(judged.phase) == "Running"
        self.rollout_weight.labels(*where).set(judged.weight if running else 0)
        for metric in judged.metrics:
            if metric.effect is not None:
                self.rollout_effect.labels(*where, metric.name).set(metric.effect)
            if metric.p_value is not None:
                self.rollout_p_value.labels(*where, metric.name).set(metric.p_value)
            for arm, value in (("champion", metric.champion), ("challenger", metric.challenger)):
                if value is not None:
                    self.rollout_samples.labels(*where, metric.name, arm).set(value.samples)
        earlier = before.judged if before is not None else None
        if judged.decided_at is not None and (earlier is None or earlier.decided_at is None):
            self.rollouts.labels(*where, str(judged.strategy), str(judged.phase)).inc()

    def _environment(
        self,
        release: ModelRelease,
        entry: EnvironmentProgress,
        before: EnvironmentProgress | None,
        now: datetime,
    ) -> None:
        namespace, model, name = release.namespace, release.spec.model.name, entry.name
        was = before.phase if before is not None else None
        if entry.phase == was:
            return
        change = (entry.rollout or 1) > 1 or entry.previous_config_hash is not None
        if entry.phase == EnvironmentPhase.DEPLOYED and was != EnvironmentPhase.SUPERSEDED:
            self.deployments.labels(namespace, name, model).inc()
            if change:
                self.config_changes.labels(namespace, name, model, "Deployed").inc()
            else:
                # Lead time is of the release: creation to its first time live.
                created = release.metadata.creation_timestamp
                seconds = _between(created, now)
                if seconds is not None:
                    self.lead_time.labels(namespace, name).observe(seconds)
            self.set_live(namespace, name, model, release.name, release.spec.model.version)
        elif entry.phase == EnvironmentPhase.BLOCKED and entry.previous_config_hash is not None:
            self.config_changes.labels(namespace, name, model, "Refused").inc()
        elif entry.phase == EnvironmentPhase.ANALYZING:
            self.set_live(namespace, name, model, release.name, release.spec.model.version)
        elif entry.phase == EnvironmentPhase.ROLLED_BACK and entry.deployed_at is None:
            # A challenger removed: the live release never changed (no change
            # failure); only a failed verification of it counts as one.
            judged = entry.judged
            asked = entry.rolled_back_by is not None  # by a person: nothing failed a check
            if judged is not None and judged.split_at is None and not asked:
                self.verification_failures.labels(namespace, name, model).inc()
        elif entry.phase in (EnvironmentPhase.ROLLED_BACK, EnvironmentPhase.FAILED):
            analysis = entry.analysis
            failed_check = entry.rolled_back_by is None and (
                analysis is None or str(analysis.phase) != "Failed"
            )
            if failed_check:
                self.verification_failures.labels(namespace, name, model).inc()
            if entry.phase == EnvironmentPhase.ROLLED_BACK:
                self.rollbacks.labels(namespace, name, model).inc()
                if entry.previous_config_hash is not None:
                    self.config_changes.labels(namespace, name, model, "RolledBack").inc()
                seconds = _between(entry.deployed_at, now)
                if seconds is not None:
                    self.restore_seconds.labels(namespace, name).observe(seconds)

    # -- exposition ---------------------------------------------------------------

    def serve(
        self, port: int, addr: str = "0.0.0.0", unready: Callable[[], str | None] | None = None
    ) -> WSGIServer:
        """Serve /metrics and /readyz (200, or 503 with what ``unready`` says
        the operator still waits for); returns the server (``shutdown()``
        stops it)."""
        metrics = make_wsgi_app(self.registry)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") != "/readyz":
                return metrics(environ, start_response)  # type: ignore[no-any-return]
            waiting = unready() if unready is not None else None
            body = (waiting or "ready").encode()
            start_response(
                "200 OK" if waiting is None else "503 Service Unavailable",
                [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))],
            )
            return [body]

        server = make_server(addr, port, app, _ThreadingServer, handler_class=_QuietHandler)
        threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
        return server


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    """No access log: the kubelet probes every few seconds."""

    def log_message(self, format: str, *args: Any) -> None:
        return


def _gate_key(gate: GateStatus) -> tuple[str | None, str | None]:
    return gate.inputs_hash, gate.evaluated_at


def _between(start: str | None, end: str | datetime | None) -> float | None:
    if not start or end is None:
        return None
    try:
        first = parse_time(start)
        last = parse_time(end) if isinstance(end, str) else end
    except ValueError:
        return None
    return max((last - first).total_seconds(), 0.0)
