"""What ``kubectl modelgate get`` prints: tables of releases, environments
and gates, and one release as a tree. Pure: objects as the API server
returns them (dicts) in, text out."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

# Shown for every failing or inconclusive check, the passed ones counted.
NOT_PASSED = ("Failed", "Inconclusive", "Error")


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Columns padded as kubectl pads them (three spaces between)."""
    lines = [list(headers), *[[str(c) for c in r] for r in rows]]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    return "\n".join(
        "   ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def age(timestamp: str | None, now: datetime) -> str:
    """kubectl's AGE: the largest unit or two (5d3h, 4h12m, 7m, 30s)."""
    if not timestamp:
        return "<unknown>"
    then = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    seconds = max(0, int((now - then).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h" if hours and days < 10 else f"{days}d"
    if hours:
        return f"{hours}h{minutes}m" if minutes and hours < 10 else f"{hours}h"
    if minutes:
        return f"{minutes}m{seconds}s" if seconds and minutes < 10 else f"{minutes}m"
    return f"{seconds}s"


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("status") or {}


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def _condition(obj: dict[str, Any], kind: str) -> dict[str, Any]:
    for condition in _status(obj).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def releases_table(items: list[dict[str, Any]], now: datetime, namespaces: bool) -> str:
    headers = ["NAME", "MODEL", "VERSION", "PHASE", "GATE", "LIVE IN", "AGE"]
    rows = []
    for item in sorted(items, key=lambda i: (_meta(i).get("namespace", ""), _meta(i)["name"])):
        spec, status = item.get("spec") or {}, _status(item)
        gate = status.get("gate") or {}
        row = [
            _meta(item)["name"],
            (spec.get("model") or {}).get("name", ""),
            (spec.get("model") or {}).get("version", ""),
            status.get("phase", "Pending"),
            gate.get("outcome", "-"),
            status.get("liveIn") or "-",
            age(_meta(item).get("creationTimestamp"), now),
        ]
        rows.append([_meta(item).get("namespace", ""), *row] if namespaces else row)
    return table(["NAMESPACE", *headers] if namespaces else headers, rows)


def environments_table(items: list[dict[str, Any]], now: datetime, namespaces: bool) -> str:
    headers = ["NAME", "TIER", "TARGET", "DELIVERY", "LIVE", "READY", "AGE"]
    rows = []
    for item in sorted(items, key=lambda i: (_meta(i).get("namespace", ""), _meta(i)["name"])):
        spec, status = item.get("spec") or {}, _status(item)
        row = [
            _meta(item)["name"],
            spec.get("tier", ""),
            spec.get("namespace", ""),
            (spec.get("delivery") or {}).get("mode", "Direct"),
            status.get("liveRelease") or "-",
            _condition(item, "Ready").get("status", "Unknown"),
            age(_meta(item).get("creationTimestamp"), now),
        ]
        rows.append([_meta(item).get("namespace", ""), *row] if namespaces else row)
    return table(["NAMESPACE", *headers] if namespaces else headers, rows)


def gates_table(items: list[dict[str, Any]], now: datetime, namespaces: bool) -> str:
    headers = ["NAME", "TASK", "CHECKS", "READY", "AGE"]
    rows = []
    for item in sorted(items, key=lambda i: (_meta(i).get("namespace", ""), _meta(i)["name"])):
        spec = item.get("spec") or {}
        row = [
            _meta(item)["name"],
            spec.get("task", ""),
            str(len(spec.get("checks") or [])),
            _condition(item, "Ready").get("status", "Unknown"),
            age(_meta(item).get("creationTimestamp"), now),
        ]
        rows.append([_meta(item).get("namespace", ""), *row] if namespaces else row)
    return table(["NAMESPACE", *headers] if namespaces else headers, rows)


class _Tree:
    """Lines drawn as a tree: each node's children indented under it."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, prefix: str, last: bool, text: str) -> str:
        self.lines.append(f"{prefix}{'└─ ' if last else '├─ '}{text}")
        return prefix + ("   " if last else "│  ")


def release_tree(
    release: dict[str, Any], jobs: list[dict[str, Any]], pods: list[dict[str, Any]], now: datetime
) -> str:
    """The release, its training, gate and each environment of its path
    (rollout, approval, verification, analysis, judgement), then the Jobs
    it ran and their pods."""
    meta, spec, status = _meta(release), release.get("spec") or {}, _status(release)
    model = spec.get("model") or {}
    ready = _condition(release, "Ready")
    tree = _Tree()
    head = (
        f"ModelRelease {meta.get('namespace')}/{meta.get('name')}: {status.get('phase', 'Pending')}"
        f" (model {model.get('name', '?')} {model.get('version', '?')})"
    )
    if ready.get("status") != "True" and ready.get("message"):
        head += f"\n  {ready.get('reason', '')}: {ready['message']}"
    parts: list[tuple[str, list[str]]] = []
    abort = spec.get("abort") or {}
    if abort.get("requestedAt"):
        by = f" by {abort['requestedBy']}" if abort.get("requestedBy") else ""
        parts.append(
            (
                f"Aborted{by} at {abort['requestedAt']}",
                [abort["reason"]] if abort.get("reason") else [],
            )
        )
    retry = _retry(spec.get("retry") or {}, status.get("retry") or {})
    if retry is not None:
        parts.append(retry)
    training = status.get("training")
    if training:
        line = f"Training: {training.get('state')} (Job {training.get('jobName')})"
        parts.append((line, [training["message"]] if training.get("message") else []))
    gate = status.get("gate")
    if gate:
        checks = [
            f"{c.get('outcome')}: {c.get('name')} ({c.get('severity')}): {c.get('message', '')}"
            for c in gate.get("checks") or []
            if c.get("outcome") in NOT_PASSED
        ]
        line = (
            f"Gate {gate.get('name') or '(inline)'}: {gate.get('outcome')} "
            f"({gate.get('passed', 0)} passed, {gate.get('failed', 0)} failed, "
            f"{gate.get('inconclusive', 0)} inconclusive)"
        )
        parts.append((line, checks))
    by_name = {e.get("name"): e for e in status.get("environments") or []}
    path = (spec.get("promotion") or {}).get("environments") or list(by_name)
    for name in path:
        parts.append(_environment(name, by_name.get(name), now))
    for job in sorted(jobs, key=lambda j: _meta(j).get("creationTimestamp") or ""):
        parts.append(_job(job, pods))
    for index, (line, children) in enumerate(parts):
        prefix = tree.add("", index == len(parts) - 1, line)
        for child_index, child in enumerate(children):
            tree.add(prefix, child_index == len(children) - 1, child)
    return "\n".join([head, *tree.lines])


def _retry(asked: dict[str, Any], done: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The last retry asked for (spec.retry) and what it did (status.retry)."""
    if not asked.get("requestedAt"):
        return None
    by = f" by {asked['requestedBy']}" if asked.get("requestedBy") else ""
    line = f"Retry asked{by} at {asked['requestedAt']}"
    children = [str(asked["reason"])] if asked.get("reason") else []
    if done.get("handled") == asked["requestedAt"]:
        children.append(str(done.get("message") or "acted on"))
    else:
        line += ": not acted on yet"
    return line, children


def _environment(name: str, entry: dict[str, Any] | None, now: datetime) -> tuple[str, list[str]]:
    if entry is None:
        return f"Environment {name}: not reached", []
    line = f"Environment {name}: {entry.get('phase')}"
    if entry.get("deployedAt"):
        line += f", deployed {age(entry['deployedAt'], now)} ago"
    children: list[str] = []
    if entry.get("message"):
        children.append(str(entry["message"]))
    if entry.get("configHash"):
        children.append(f"config {str(entry['configHash'])[:12]}")
    if entry.get("approvedBy"):
        children.append(f"approved by {entry['approvedBy']} at {entry.get('approvedAt', '?')}")
    if entry.get("verificationJob"):
        verified = f"verified at {entry['verifiedAt']}" if entry.get("verifiedAt") else "running"
        children.append(f"verification: {verified} (Job {entry['verificationJob']})")
    analysis = entry.get("analysis")
    if analysis:
        children.append(f"analysis: {analysis.get('phase')}: {analysis.get('message') or ''}")
    judged = entry.get("judged")
    if judged:
        text = f"{judged.get('strategy')} against {judged.get('champion')}: {judged.get('phase')}"
        if judged.get("message"):
            text += f": {judged['message']}"
        children.append(text)
    if entry.get("revision"):
        children.append(f"commit {str(entry['revision'])[:12]}")
    return line, children


def _job(job: dict[str, Any], pods: list[dict[str, Any]]) -> tuple[str, list[str]]:
    meta, status = _meta(job), _status(job)
    component = (meta.get("labels") or {}).get("app.kubernetes.io/component", "job")
    state = "Running"
    for condition in status.get("conditions") or []:
        if condition.get("status") == "True" and condition.get("type") in ("Complete", "Failed"):
            state = "Succeeded" if condition["type"] == "Complete" else "Failed"
    line = f"Job {meta.get('name')} ({component}): {state}"
    children = []
    for pod in pods:
        labels = _meta(pod).get("labels") or {}
        if labels.get("job-name") != meta.get("name"):
            continue
        phase = _status(pod).get("phase", "Pending")
        reasons = [
            (c.get("state") or {}).get("waiting", {}).get("reason")
            for c in _status(pod).get("containerStatuses") or []
        ]
        why = ", ".join(r for r in reasons if r)
        children.append(f"Pod {_meta(pod).get('name')}: {phase}" + (f" ({why})" if why else ""))
    return line, children


def now_utc() -> datetime:
    return datetime.now(UTC)
