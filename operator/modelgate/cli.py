"""``modelgate``: run releases locally, generate CRDs, validate manifests.

Exit codes: 0 success, 1 a release is not Released / a manifest is invalid,
2 usage errors (bad flags, unreadable files).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import write_to_textfile

from modelgate import __version__
from modelgate.api import Environment, QualityGate
from modelgate.api.common import parse_duration
from modelgate.api.crdgen import render_all
from modelgate.api.loader import ManifestError, load_paths
from modelgate.api.modelrelease import ModelRelease
from modelgate.api.qualitygate import Task
from modelgate.backends.evaluation_job import finite
from modelgate.envconfig import merge_config, validate_config
from modelgate.promotion.conditions import READY, find
from modelgate.promotion.paths import graph_problems, path_problems
from modelgate.settings import PrometheusSettings

if TYPE_CHECKING:
    from modelgate.gates.source import Source

# The local and offline commands import what they run inside themselves:
# the gate engine (numpy, pyarrow) and local mode stay out of the operator's
# process, as the operator stack (kopf) stays out of theirs.

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INCONCLUSIVE = 0, 1, 2, 3
GATE_EXIT = {"Passed": EXIT_OK, "Failed": EXIT_FAILED, "Inconclusive": EXIT_INCONCLUSIVE}


class InputError(Exception):
    """A file the user named cannot be used; the message names it and why."""


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _summary_rows(releases: list[ModelRelease]) -> list[list[str]]:
    rows = [["NAME", "MODEL", "VERSION", "PHASE", "GATE", "LIVE", "MESSAGE"]]
    for release in releases:
        status = release.status
        ready = find(status.conditions, READY) if status else None
        message = ready.message if ready else ""
        rows.append(
            [
                release.name,
                release.spec.model.name,
                release.spec.model.version,
                str(status.phase) if status and status.phase else "-",
                str(status.gate.outcome) if status and status.gate else "-",
                status.live_in or "-" if status else "-",
                message if len(message) <= 160 else message[:157] + "...",
            ]
        )
    return rows


def command_run(args: argparse.Namespace) -> int:
    from modelgate.backends.local import LocalServers  # noqa: PLC0415
    from modelgate.localmode import LocalRun  # noqa: PLC0415

    state_dir: Path = args.state_dir
    if args.reset and state_dir.exists():
        LocalServers(state_dir).stop_all()
        shutil.rmtree(state_dir)
    log = (lambda _line: None) if args.output == "json" else print
    try:
        run = LocalRun(
            state_dir=state_dir,
            resources=load_paths(args.paths),
            log=log,
            max_wait=args.max_wait,
            prometheus=(
                PrometheusSettings(url=args.prometheus_url) if args.prometheus_url else None
            ),
        )
    except ManifestError as error:
        print(f"error: {error.source}:", file=sys.stderr)
        for problem in error.problems:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_FAILED
    if not run.releases:
        print("error: no ModelRelease found in the given paths", file=sys.stderr)
        return EXIT_USAGE
    outcomes = run.run()
    releases = [o.release for o in outcomes]
    for outcome in outcomes:
        for message in outcome.refused:
            release = outcome.release
            print(
                f"error: ModelRelease {release.namespace}/{release.name}: {message}",
                file=sys.stderr,
            )
    if args.metrics_textfile is not None:
        write_to_textfile(str(args.metrics_textfile), run.metrics.registry)
    if args.output == "json":
        objects = [
            *(g.wire() for g in run.gate_objects()),
            *(e.wire() for e in run.environment_objects()),
            *(r.wire() for r in releases),
        ]
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
    else:
        print()
        print(_table(_summary_rows(releases)))
        print()
        env_rows = [["ENVIRONMENT", "TIER", "LIVE RELEASE", "IMAGE", "SINCE", "SERVING AT"]]
        serving = False
        for env in run.environment_objects():
            status = env.status
            url = run.servers.url(env.namespace, env.name)
            serving = serving or url is not None
            env_rows.append(
                [
                    env.name,
                    str(env.spec.tier),
                    (status.live_release if status else None) or "-",
                    (status.live_image if status else None) or "-",
                    (status.live_since if status else None) or "-",
                    f"{url}/v1/predict" if url else "-",
                ]
            )
        print(_table(env_rows))
        reports = _gate_reports(releases, state_dir)
        if reports:
            print("\ngate reports (open in a browser):")
            for name, path in reports:
                print(f"  {name}: {path}")
        print(f"\nstate: {state_dir}")
        if serving:
            print(
                "model servers keep running (POST rows to the URLs above); "
                f"stop them with: modelgate stop --state-dir {state_dir}"
            )
    return EXIT_OK if all(o.released for o in outcomes) else EXIT_FAILED


def _gate_reports(releases: list[ModelRelease], state_dir: Path) -> list[tuple[str, Path]]:
    """Each release's HTML gate report, copied from the content-addressed
    store to ``STATE/reports/<namespace>/<release>.html`` (a name a browser
    opens as a page)."""
    found = []
    for release in releases:
        for artifact in release.status.artifacts if release.status else []:
            if artifact.name != "gate-report-html" or not artifact.uri.startswith("file://"):
                continue
            stored = Path(artifact.uri.removeprefix("file://"))
            if not stored.is_file():
                continue
            page = state_dir / "reports" / release.namespace / f"{release.name}.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_bytes(stored.read_bytes())
            found.append((release.name, page.resolve()))
    return found


def command_stop(args: argparse.Namespace) -> int:
    """Stop the model servers local mode left running."""
    from modelgate.backends.local import LocalServers  # noqa: PLC0415

    stopped = LocalServers(args.state_dir).stop_all()
    print(f"stopped {stopped} model server{'s' if stopped != 1 else ''}")
    return EXIT_OK


def command_reference(args: argparse.Namespace) -> int:
    from modelgate.reference import write_pages  # noqa: PLC0415 (it imports this module)

    for path in write_pages(args.output_dir):
        print(f"wrote {path}")
    return EXIT_OK


def command_crds(args: argparse.Namespace) -> int:
    output: Path = args.output_dir
    output.mkdir(parents=True, exist_ok=True)
    for name, content in render_all().items():
        (output / name).write_text(content)
        print(f"wrote {output / name}")
    return EXIT_OK


def command_validate(args: argparse.Namespace) -> int:
    """Schema, references, promotion paths and config rules, offline."""
    try:
        loaded = load_paths(args.paths)
    except ManifestError as error:
        for problem in error.problems:
            print(f"invalid: {problem}")
        return EXIT_FAILED
    problems: list[str] = []
    envs: dict[str, dict[str, Environment]] = {}
    gates: set[tuple[str, str]] = set()
    for item in loaded:
        resource = item.resource
        if isinstance(resource, Environment):
            envs.setdefault(resource.namespace, {})[resource.name] = resource
        elif isinstance(resource, QualityGate):
            gates.add((resource.namespace, resource.name))
    for namespace, members in envs.items():
        problems.extend(f"{namespace}: {p}" for p in graph_problems(members).values())
    for item in loaded:
        release = item.resource
        if not isinstance(release, ModelRelease):
            continue
        where = f"ModelRelease {release.namespace}/{release.name}"
        members = envs.get(release.namespace, {})
        if release.spec.gate.name and (release.namespace, release.spec.gate.name) not in gates:
            problems.append(f"{where}: QualityGate {release.spec.gate.name!r} not found")
        missing = [e for e in release.spec.promotion.environments if e not in members]
        if missing:
            problems.append(f"{where}: environments not found: {', '.join(missing)}")
            continue
        problems.extend(
            f"{where}: {p}" for p in path_problems(members, release.spec.promotion.environments)
        )
        for name in release.spec.promotion.environments:
            env = members[name]
            merged = merge_config(env, release.overrides_for(name))
            violations = validate_config(env, merged, members.values())
            problems.extend(f"{where}: {v.describe()}" for v in violations)
    for problem in problems:
        print(f"invalid: {problem}")
    if not problems:
        print(f"valid: {len(loaded)} resources")
    return EXIT_FAILED if problems else EXIT_OK


def command_config_check(args: argparse.Namespace) -> int:
    """The merged config of a release, checked for each of its environments."""
    try:
        loaded = load_paths([args.environments, args.release])
    except ManifestError as error:
        for problem in error.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    environments = {
        item.resource.name: item.resource
        for item in loaded
        if isinstance(item.resource, Environment)
    }
    releases = [item.resource for item in loaded if isinstance(item.resource, ModelRelease)]
    if len(releases) != 1:
        print(f"error: {args.release}: expected exactly one ModelRelease", file=sys.stderr)
        return EXIT_USAGE
    release = releases[0]
    targets = [args.environment] if args.environment else release.spec.promotion.environments
    unknown = [name for name in targets if name not in environments]
    if unknown:
        print(
            f"error: environments not found in {args.environments}: {', '.join(unknown)}",
            file=sys.stderr,
        )
        return EXIT_USAGE
    failed = False
    for name in targets:
        environment = environments[name]
        merged = merge_config(environment, release.overrides_for(name))
        violations = validate_config(environment, merged, environments.values())
        if violations:
            failed = True
            for violation in violations:
                print(f"invalid: {violation.describe()}")
        else:
            print(f"valid: {release.name} -> {name} ({len(merged)} keys)")
    return EXIT_FAILED if failed else EXIT_OK


def _source(path: Path | None, role: str) -> Source | None:
    """A table file (or a folder of them), its schema read to fail early."""
    from modelgate.gates.source import source_of  # noqa: PLC0415
    from modelgate.gates.table import TableError  # noqa: PLC0415

    if path is None:
        return None
    if not path.exists():
        raise InputError(f"{path}: {role} file not found")
    try:
        source = source_of(path, f"{role} ({path.name})")
        source.schema()
    except TableError as error:
        raise InputError(f"{path}: {error}") from error
    return source


def _load_gate(path: Path, name: str | None) -> QualityGate:
    if not path.is_file():
        raise InputError(f"{path}: gate file not found")
    try:
        resources = [r.resource for r in load_paths([path])]
    except ManifestError as error:
        raise InputError(f"{path}: " + "; ".join(error.problems)) from error
    gates = [r for r in resources if isinstance(r, QualityGate)]
    if name is not None:
        gates = [g for g in gates if g.name == name]
    if len(gates) != 1:
        found = ", ".join(g.name for g in gates) or "none"
        raise InputError(
            f"{path}: expected exactly one QualityGate (found: {found}); use --gate-name"
        )
    return gates[0]


def _load_metadata(path: Path | None) -> dict[str, object] | None:
    if path is None:
        return None
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a readable JSON metadata file: {error}") from error
    if not isinstance(loaded, dict):
        raise InputError(f"{path}: metadata must be a JSON object")
    return loaded


def command_gate_evaluate(args: argparse.Namespace) -> int:
    """Evaluate a gate offline, exactly as the operator would."""
    from modelgate.gates.report import render_html  # noqa: PLC0415
    from modelgate.gates.streaming import StreamInputs, evaluate_stream  # noqa: PLC0415

    try:
        gate = _load_gate(args.gate, args.gate_name)
        predictions = _source(args.predictions, "predictions")
        assert predictions is not None
        for column in ("y_true", "y_pred"):
            if not predictions.has(column):
                raise InputError(
                    f"{args.predictions}: no {column} column (the training contract's "
                    "predictions have y_true, y_pred and y_score)"
                )
        reference = _source(args.reference, "reference")
        evaluation = _source(args.evaluation, "evaluation") or _source(
            args.predictions, "evaluation"
        )
        baseline = _source(args.baseline, "baseline")
        metadata = _load_metadata(args.metadata)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    environments = {c.baseline.environment for c in gate.spec.checks if c.baseline}
    inputs = StreamInputs(
        task=Task(gate.spec.task),
        predictions=predictions,
        positive_label=gate.spec.positive_label,
        training=reference,
        evaluation=evaluation,
        baselines=dict.fromkeys(environments, baseline),
        id_column=args.id_column,
        metadata=metadata,
    )
    result, charts = evaluate_stream(list(gate.spec.checks), inputs)
    if args.report_dir is not None:
        args.report_dir.mkdir(parents=True, exist_ok=True)
        document = {"gate": gate.name, **result.to_result()}
        (args.report_dir / "report.json").write_text(
            json.dumps(finite(document), indent=2, allow_nan=False)
        )
        page = render_html(
            result,
            gate.spec.checks,
            charts,
            f"Quality gate {gate.name}",
            f"predictions: {args.predictions.name}",
        )
        (args.report_dir / "report.html").write_text(page)
    if args.output == "json":
        print(json.dumps(finite(result.to_result()), indent=2, allow_nan=False))
    else:
        rows = [["CHECK", "KIND", "SEVERITY", "OUTCOME", "VALUE", "MESSAGE"]]
        for check in result.checks:
            value = "-" if check.value is None else f"{check.value:.4g}"
            rows.append(
                [check.name, check.kind, check.severity, check.outcome, value, check.message]
            )
        print(_table(rows))
        counts = result.counts()
        print(
            f"\ngate {gate.name}: {result.outcome} ({counts['Passed']} passed, "
            f"{counts['Failed']} failed, {counts['Inconclusive']} inconclusive)"
        )
        if args.report_dir is not None:
            print(f"report: {args.report_dir / 'report.html'}")
    return GATE_EXIT[result.outcome]


def command_operator(args: argparse.Namespace) -> int:
    """Run the kopf operator against the current kubeconfig or in-cluster config."""
    import kopf  # noqa: PLC0415

    if args.metrics_port is not None:
        # Read by the handlers' start-up (and by nothing at import).
        os.environ["MODELGATE_METRICS_PORT"] = str(args.metrics_port)
    if args.peering_priority is not None:
        os.environ["MODELGATE_PEERING_PRIORITY"] = str(args.peering_priority)
    if args.peering_lifetime is not None:
        os.environ["MODELGATE_PEERING_LIFETIME"] = str(args.peering_lifetime)
    if args.namespace:
        # The operator's own watches (its cache) keep to the same namespaces.
        os.environ["MODELGATE_NAMESPACES"] = ",".join(args.namespace)
    import modelgate.handlers  # noqa: F401, PLC0415  (registers the handlers)

    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()])
    kopf.run(
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        standalone=args.standalone,
        liveness_endpoint=args.liveness,
        # A named peering is mandatory in kopf: only when replicas coordinate.
        peering_name=None if args.standalone else "modelgate",
    )
    return EXIT_OK


def _duration(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelgate", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"modelgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="run releases end to end in local mode (train, gate, promote)"
    )
    run.add_argument("paths", nargs="+", type=Path, help="manifest files or folders")
    run.add_argument(
        "--state-dir",
        type=Path,
        default=Path(".modelgate/local"),
        help="where artifacts, runs and simulated environments live",
    )
    run.add_argument("--reset", action="store_true", help="start from an empty state dir")
    run.add_argument("--output", choices=("table", "json"), default="table")
    run.add_argument(
        "--max-wait",
        type=_duration,
        default=timedelta(seconds=60),
        help="longest soak wait to sit through (e.g. 30s); longer waits stop the run",
    )
    run.add_argument(
        "--prometheus-url",
        help="Prometheus the environments' analysis queries go to, e.g. http://localhost:9090",
    )
    run.add_argument(
        "--metrics-textfile",
        type=Path,
        help="write the run's Prometheus metrics to this file (node exporter textfile format)",
    )
    run.set_defaults(handler=command_run)

    stop = commands.add_parser("stop", help="stop the model servers a local run left running")
    stop.add_argument("--state-dir", type=Path, default=Path(".modelgate/local"))
    stop.set_defaults(handler=command_stop)

    crds = commands.add_parser("crds", help="write the CRD manifests generated from the models")
    crds.add_argument("--output-dir", type=Path, default=Path("crds"))
    crds.set_defaults(handler=command_crds)

    reference = commands.add_parser(
        "reference",
        help="write the docs site's reference pages (the CRDs' fields, the commands' arguments)",
    )
    reference.add_argument("--output-dir", type=Path, default=Path("docs/reference"))
    reference.set_defaults(handler=command_reference)

    validate = commands.add_parser(
        "validate", help="check manifests: schema, references, promotion paths, config rules"
    )
    validate.add_argument("paths", nargs="+", type=Path)
    validate.set_defaults(handler=command_validate)

    operator = commands.add_parser(
        "operator", help="run the operator (also: python -m modelgate with no arguments)"
    )
    operator.add_argument(
        "--namespace", action="append", help="watch only this namespace (repeatable)"
    )
    operator.add_argument(
        "--standalone", action="store_true", help="no peering: for one replica or tests"
    )
    operator.add_argument(
        "--peering-priority",
        type=int,
        help="this replica's peering priority (default: older replicas rank higher)",
    )
    operator.add_argument(
        "--peering-lifetime",
        type=int,
        help="seconds a silent replica blocks the others before they take over (default 60)",
    )
    operator.add_argument(
        "--liveness",
        default="http://0.0.0.0:8080/healthz",
        help="liveness endpoint for the kubelet's probes",
    )
    operator.add_argument(
        "--metrics-port",
        type=int,
        help="serve Prometheus /metrics on this port (default: MODELGATE_METRICS_PORT, else off)",
    )
    operator.add_argument("--verbose", action="store_true", help="debug logging")
    operator.add_argument(
        "--log-format",
        choices=("plain", "full", "json"),
        default="full",
        help="log line format (json for log collectors)",
    )
    operator.set_defaults(handler=command_operator)

    config = commands.add_parser("config", help="environment configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    check = config_commands.add_parser(
        "check",
        help="check a release's merged config against the rules and for leaks of other "
        "environments (exit 0 valid, 1 violations, 2 usage)",
    )
    check.add_argument("--environments", type=Path, required=True, help="Environment manifests")
    check.add_argument("--release", type=Path, required=True, help="the ModelRelease manifest")
    check.add_argument("--environment", help="only this environment (default: its whole path)")
    check.set_defaults(handler=command_config_check)

    gate = commands.add_parser("gate", help="quality gates offline")
    gate_commands = gate.add_subparsers(dest="gate_command", required=True)
    evaluate = gate_commands.add_parser(
        "evaluate",
        help="evaluate a QualityGate on prediction files, as the operator would "
        "(exit 0 Passed, 1 Failed, 3 Inconclusive, 2 input errors)",
    )
    evaluate.add_argument("--gate", type=Path, required=True, help="YAML with the QualityGate")
    evaluate.add_argument("--gate-name", help="which QualityGate, if the file has several")
    evaluate.add_argument(
        "--predictions", type=Path, required=True, help="CSV/Parquet: y_true, y_pred, y_score..."
    )
    evaluate.add_argument("--baseline", type=Path, help="predictions of the live model")
    evaluate.add_argument(
        "--reference", type=Path, help="reference (training) data: drift and data checks"
    )
    evaluate.add_argument(
        "--evaluation",
        type=Path,
        help="evaluated data for data and drift checks (default: the predictions file)",
    )
    evaluate.add_argument(
        "--metadata", type=Path, help="the training job's metadata.json (importance, behaviour)"
    )
    evaluate.add_argument("--id-column", help="row id matching predictions and baseline")
    evaluate.add_argument("--report-dir", type=Path, help="write report.json and report.html")
    evaluate.add_argument("--output", choices=("table", "json"), default="table")
    evaluate.set_defaults(handler=command_gate_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
    except ManifestError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return code
