"""The human-readable gate report: one self-contained HTML page.

No network and no scripts: styles are inline, charts are inline SVG. Every
string that came from data (check names, category values, messages) is
HTML-escaped, so a category named ``<script>`` or ``=cmd|...`` is shown as
text, never run.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelgate.api.qualitygate import Check, Task
from modelgate.gates import drift as drift_stats
from modelgate.gates.engine import GateInputs, encode_predictions
from modelgate.gates.metrics import Undefined
from modelgate.gates.outcome import FAILED, INCONCLUSIVE, PASSED, CheckEvaluation, GateEvaluation
from modelgate.gates.table import TableError

COLORS = {PASSED: "#1a7f37", FAILED: "#cf222e", INCONCLUSIVE: "#9a6700"}
MAX_CURVE_POINTS = 200
MAX_BARS = 40
TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.4g}"


# -- SVG building blocks --------------------------------------------------------


@dataclass
class Bar:
    label: str
    value: float
    color: str = "#0969da"


def bar_chart(
    title: str,
    bars: Sequence[Bar],
    lines: Sequence[tuple[str, float]] = (),
    width: int = 640,
) -> str:
    """Horizontal bars with optional vertical threshold lines."""
    bars = list(bars)[:MAX_BARS]
    if not bars:
        return ""
    row, left, right = 22, 220, 70
    height = row * len(bars) + 40
    values = [b.value for b in bars if math.isfinite(b.value)] + [v for _, v in lines]
    low = min(0.0, *values) if values else 0.0
    high = max(1e-12, *values) if values else 1.0
    span = (high - low) or 1.0

    def x(value: float) -> float:
        return left + (value - low) / span * (width - left - right)

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}"><title>{esc(title)}</title>'
    ]
    for index, bar in enumerate(bars):
        y = 20 + index * row
        label = bar.label if len(bar.label) <= 34 else bar.label[:33] + "…"
        parts.append(
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{esc(label)}'
            f"<title>{esc(bar.label)}</title></text>"
        )
        if math.isfinite(bar.value):
            start, end = sorted((x(0.0), x(bar.value)))
            parts.append(
                f'<rect x="{start:.1f}" y="{y + 3}" width="{max(end - start, 1):.1f}" '
                f'height="{row - 6}" fill="{bar.color}"/>'
                f'<text x="{end + 4:.1f}" y="{y + 14}">{fmt(bar.value)}</text>'
            )
        else:
            parts.append(f'<text x="{left + 4}" y="{y + 14}" fill="#9a6700">n/a</text>')
    for name, value in lines:
        position = x(value)
        parts.append(
            f'<line x1="{position:.1f}" x2="{position:.1f}" y1="14" y2="{height - 18}" '
            f'stroke="#cf222e" stroke-dasharray="4 3"/>'
            f'<text x="{position:.1f}" y="{height - 4}" text-anchor="middle" fill="#cf222e">'
            f"{esc(name)} {fmt(value)}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def line_chart(
    title: str,
    series: Sequence[tuple[str, Sequence[float], Sequence[float], str]],
    x_label: str,
    y_label: str,
    diagonal: bool = False,
    size: int = 300,
) -> str:
    """Curves on the unit square (ROC, PR, calibration)."""
    pad = 40
    inner = size - 2 * pad

    def point(px: float, py: float) -> str:
        return f"{pad + px * inner:.1f},{pad + (1 - py) * inner:.1f}"

    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {size} {size}" width="{size}" '
        f'height="{size}"><title>{esc(title)}</title>'
        f'<rect x="{pad}" y="{pad}" width="{inner}" height="{inner}" fill="none" '
        f'stroke="#8c959f"/>'
        f'<text x="{size / 2}" y="{size - 8}" text-anchor="middle">{esc(x_label)}</text>'
        f'<text x="12" y="{size / 2}" transform="rotate(-90 12 {size / 2})" '
        f'text-anchor="middle">{esc(y_label)}</text>'
        f'<text x="{size / 2}" y="24" text-anchor="middle" font-weight="bold">{esc(title)}</text>'
    ]
    for tick in TICKS:
        # Gridlines and numbers on both axes: the curves live on [0, 1].
        x, y = pad + tick * inner, pad + (1 - tick) * inner
        parts.append(
            f'<line x1="{x:.1f}" y1="{pad}" x2="{x:.1f}" y2="{pad + inner}" stroke="#eaeef2"/>'
            f'<line x1="{pad}" y1="{y:.1f}" x2="{pad + inner}" y2="{y:.1f}" stroke="#eaeef2"/>'
            f'<text x="{x:.1f}" y="{pad + inner + 13}" text-anchor="middle" '
            f'font-size="10">{tick:g}</text>'
            f'<text x="{pad - 4}" y="{y + 3:.1f}" text-anchor="end" font-size="10">{tick:g}</text>'
        )
    if diagonal:
        parts.append(
            f'<line x1="{pad}" y1="{pad + inner}" x2="{pad + inner}" y2="{pad}" '
            f'stroke="#8c959f" stroke-dasharray="4 3"/>'
        )
    for name, xs, ys, color in series:
        points = " ".join(point(float(a), float(b)) for a, b in zip(xs, ys, strict=True))
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{color}" stroke-width="2">'
            f"<title>{esc(name)}</title></polyline>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _thin(xs: np.ndarray[Any, Any], ys: np.ndarray[Any, Any]) -> tuple[list[float], list[float]]:
    if len(xs) > MAX_CURVE_POINTS:
        keep = np.unique(np.linspace(0, len(xs) - 1, MAX_CURVE_POINTS).astype(int))
        xs, ys = xs[keep], ys[keep]
    return [float(v) for v in xs], [float(v) for v in ys]


# -- sections -------------------------------------------------------------------


@dataclass
class Curves:
    """Points of the ROC and precision-recall curves (thresholds at distinct
    scores, descending) and the ten-bin calibration of a binary model."""

    fpr: np.ndarray[Any, Any]
    tpr: np.ndarray[Any, Any]
    recall: np.ndarray[Any, Any]
    precision: np.ndarray[Any, Any]
    mean_score: list[float]
    observed: list[float]


def curves_from_counts(
    tps: np.ndarray[Any, Any],
    fps: np.ndarray[Any, Any],
    calibration: np.ndarray[Any, Any],
) -> Curves:
    """From cumulative true/false positives per threshold and per calibration
    bin (rows, score sum, positives)."""
    positives, negatives = tps[-1], fps[-1]
    filled = calibration[:, 0] > 0
    return Curves(
        fpr=np.r_[0.0, fps / negatives],
        tpr=np.r_[0.0, tps / positives],
        recall=tps / positives,
        precision=tps / (tps + fps),
        mean_score=[float(v) for v in calibration[filled, 1] / calibration[filled, 0]],
        observed=[float(v) for v in calibration[filled, 2] / calibration[filled, 0]],
    )


def calibration_bins(
    score: np.ndarray[Any, Any], truth: np.ndarray[Any, Any]
) -> np.ndarray[Any, Any]:
    """Rows, score sum and positives in each tenth of the score range."""
    bins = np.clip((score * 10).astype(int), 0, 9)
    return np.column_stack(
        [
            np.bincount(bins, minlength=10),
            np.bincount(bins, weights=score, minlength=10),
            np.bincount(bins, weights=truth.astype(float), minlength=10),
        ]
    ).astype(np.float64)


def table_curves(inputs: GateInputs) -> Curves | None:
    """The in-memory engine's curves, from the whole predictions table."""
    if inputs.task != Task.BINARY or not inputs.predictions.has("y_score"):
        return None
    try:
        encoded = encode_predictions(inputs.predictions, inputs.task, inputs.positive_label)
    except (TableError, Undefined):
        return None
    score = encoded.score
    truth = encoded.true_positive
    if score is None or not np.all(np.isfinite(score)) or truth.all() or not truth.any():
        return None
    order = np.argsort(-score, kind="mergesort")
    sorted_truth = truth[order]
    ends = np.r_[np.flatnonzero(np.diff(score[order])), len(score) - 1]
    tps = np.cumsum(sorted_truth)[ends]
    fps = (ends + 1) - tps
    return curves_from_counts(tps, fps, calibration_bins(score, truth))


@dataclass
class ReportCharts:
    """What the charts show, whichever engine measured it."""

    curves: Curves | None = None
    # Drift check name -> (training, evaluation) bin shares, what each bin holds.
    drift: dict[str, tuple[np.ndarray[Any, Any], np.ndarray[Any, Any], list[str]]] = field(
        default_factory=dict
    )
    importance: list[dict[str, Any]] = field(default_factory=list)


def table_charts(checks: Sequence[Check], inputs: GateInputs) -> ReportCharts:
    charts = ReportCharts(
        curves=table_curves(inputs),
        importance=list((inputs.metadata or {}).get("importance") or []),
    )
    for check in checks:
        spec = check.drift
        if spec is None or inputs.training is None or inputs.evaluation is None:
            continue
        try:
            # The same bins PSI and Jensen-Shannon use, whatever the statistic.
            charts.drift[check.name] = drift_stats.binned_shares(
                inputs.training, inputs.evaluation, spec.column, spec.bins
            )
        except (TableError, Undefined):
            continue
    return charts


def _curves(curves: Curves | None) -> str:
    if curves is None:
        return ""
    roc = line_chart(
        "ROC curve", [("ROC", *_thin(curves.fpr, curves.tpr), "#0969da")], "FPR", "TPR", True
    )
    pr = line_chart(
        "Precision-recall",
        [("PR", *_thin(curves.recall, curves.precision), "#8250df")],
        "recall",
        "precision",
    )
    calibration = line_chart(
        "Calibration",
        [("observed", curves.mean_score, curves.observed, "#1a7f37")],
        "mean predicted score",
        "observed positive rate",
        True,
    )
    return f'<h2>Curves</h2><div class="row">{roc}{pr}{calibration}</div>'


def _slice_section(check: CheckEvaluation) -> str:
    if not check.slices:
        return ""
    bars = [
        Bar(s.slice, s.value if s.value is not None else math.nan, COLORS[s.outcome])
        for s in check.slices
    ]
    if check.kind == "fairness":
        # The threshold bounds the spread between groups, not each group's rate.
        lines: list[tuple[str, float]] = []
        title = f"{check.name}: selection rate per group ({check.metric} = {fmt(check.value)})"
    else:
        lines = [(n, v) for n, v in (("min", check.min), ("max", check.max)) if v is not None]
        title = f"{check.name}: {check.metric or check.kind} per slice"
    chart = bar_chart(title, bars, lines)
    rows = "".join(
        f'<tr class="{esc(s.outcome.lower())}"><td>{esc(s.slice)}</td><td>{fmt(s.value)}</td>'
        f"<td>{s.sample_size}</td><td>{esc(s.outcome)}</td><td>{esc(s.message)}</td></tr>"
        for s in check.slices
    )
    table = (
        "<details><summary>every slice</summary><table><thead><tr><th>slice</th>"
        "<th>value</th><th>rows</th><th>outcome</th><th>note</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></details>"
    )
    return f"<h3>{esc(title)}</h3>{chart}{table}"


def _drift_section(check: Check, charts: ReportCharts) -> str:
    spec = check.drift
    if spec is None or check.name not in charts.drift:
        return ""
    reference, current, labels = charts.drift[check.name]
    bars: list[Bar] = []
    for label, ref, cur in zip(labels, reference, current, strict=True):
        bars.append(Bar(f"{label} training", float(ref), "#8c959f"))
        bars.append(Bar(f"{label} evaluation", float(cur), "#0969da"))
    title = f"{check.name}: share of rows per bin of {spec.column} (training, evaluation)"
    return f"<h3>{esc(title)}</h3>{bar_chart(title, bars)}"


def _importance_section(charts: ReportCharts) -> str:
    importance = charts.importance
    if not importance:
        return ""
    ranked = sorted(importance, key=lambda item: -float(item["mean"]))
    bars = [Bar(str(item["feature"]), float(item["mean"])) for item in ranked]
    return "<h2>Permutation importance</h2>" + bar_chart("Permutation importance", bars)


def _checks_table(evaluation: GateEvaluation) -> str:
    rows = []
    for c in evaluation.checks:
        threshold = " ".join(
            f"{name} {fmt(v)}" for name, v in (("min", c.min), ("max", c.max)) if v is not None
        )
        rows.append(
            f'<tr class="{esc(c.outcome.lower())}"><td>{esc(c.name)}</td><td>{esc(c.kind)}</td>'
            f"<td>{esc(c.metric or '')}</td><td>{fmt(c.value)}</td><td>{esc(threshold)}</td>"
            f"<td>{fmt(c.baseline)}</td><td>{esc(c.slice or '')}</td>"
            f"<td>{esc(c.sample_size if c.sample_size is not None else '')}</td>"
            f"<td>{esc(c.severity)}</td>"
            f'<td><b style="color:{COLORS[c.outcome]}">{esc(c.outcome)}</b></td>'
            f"<td>{esc(c.message)}</td></tr>"
        )
    return (
        "<table><thead><tr><th>check</th><th>kind</th><th>metric</th><th>value</th>"
        "<th>threshold</th><th>baseline</th><th>slice</th><th>rows</th><th>severity</th>"
        "<th>outcome</th><th>message</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;
color:#1f2328;max-width:1400px}
h1{margin-bottom:4px} .outcome{display:inline-block;padding:6px 14px;border-radius:6px;
color:#fff;font-size:20px;font-weight:bold}
table{border-collapse:collapse;font-size:13px;margin:12px 0}
td,th{border:1px solid #d0d7de;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa} tr.failed td{background:#ffebe9} tr.inconclusive td{background:#fff8c5}
.row{display:flex;flex-wrap:wrap;gap:16px} .chart{font-size:11px;font-family:inherit}
.meta{color:#59636e}
"""


def render_html(
    evaluation: GateEvaluation,
    checks: Sequence[Check],
    charts: ReportCharts,
    title: str,
    subtitle: str = "",
) -> str:
    """The whole report page."""
    counts = evaluation.counts()
    color = COLORS[evaluation.outcome]
    by_name = {c.name: c for c in checks}
    sections = [_curves(charts.curves)]
    slice_parts = [_slice_section(c) for c in evaluation.checks if c.slices]
    if any(slice_parts):
        sections.append("<h2>Slices and groups</h2>" + "".join(slice_parts))
    drift_parts = [
        _drift_section(by_name[c.name], charts) for c in evaluation.checks if c.kind == "drift"
    ]
    if any(drift_parts):
        sections.append("<h2>Drift</h2>" + "".join(drift_parts))
    sections.append(_importance_section(charts))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head><body>"
        f'<h1>{esc(title)}</h1><p class="meta">{esc(subtitle)}</p>'
        f'<p><span class="outcome" id="outcome" style="background:{color}">'
        f"{esc(evaluation.outcome)}</span> "
        f"{counts[PASSED]} passed, {counts[FAILED]} failed, "
        f"{counts[INCONCLUSIVE]} inconclusive of {len(evaluation.checks)} checks</p>"
        "<h2>Checks</h2>" + _checks_table(evaluation) + "".join(sections) + "</body></html>"
    )
