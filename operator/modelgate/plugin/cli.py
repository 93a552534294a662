"""``kubectl modelgate``: where each model stands, and the verbs that move it,
with the caller's kubeconfig and identity (installed as ``kubectl-modelgate``;
kubectl finds it on PATH).

Exit codes: 0 done; 1 the API server refused or could not be reached (the
message says what was asked and what to do); 2 the command line is wrong;
3 the plugin refused the change as asked, or (diff) a config shown breaks a
rule (the message names the fix).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml
from kubernetes import watch
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from modelgate import GROUP, VERSION
from modelgate.api import Environment, ModelRelease
from modelgate.plugin import views
from modelgate.plugin.cluster import PLURALS, Cluster, ClusterError
from modelgate.plugin.diff import config_diff
from modelgate.plugin.logs import STEPS, pick_sources
from modelgate.plugin.verbs import (
    Refused,
    abort_patch,
    approval_patch,
    promote_patch,
    retried_step,
    retry_patch,
    reverify_patch,
    rollback_patch,
)

API_ERROR, USAGE, REFUSED = 1, 2, 3
KINDS = {
    "releases": "releases", "release": "releases", "modelreleases": "releases",
    "modelrelease": "releases", "mr": "releases",
    "environments": "environments", "environment": "environments", "env": "environments",
    "gates": "gates", "gate": "gates", "qualitygates": "gates", "qualitygate": "gates",
    "qg": "gates",
}  # fmt: skip


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="kubectl modelgate",
        description="Where each model stands on its path to production, and the verbs that "
        "move it. Uses your kubeconfig and identity.",
        epilog="Exit codes: 0 done; 1 the API server refused or was unreachable; 2 usage; "
        "3 refused by the plugin (the message names the fix).",
    )
    # Where kubectl users put them: before the command or after it.
    common = argparse.ArgumentParser(add_help=False)
    for parser_, default in ((top, None), (common, argparse.SUPPRESS)):
        parser_.add_argument(
            "--kubeconfig",
            default=default,
            help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)",
        )
        parser_.add_argument(
            "--context", default=default, help="kubeconfig context (default: the current one)"
        )
        parser_.add_argument("-n", "--namespace", default=default,
                             help="namespace (default: the context's)")  # fmt: skip
    verbs = top.add_subparsers(dest="verb", required=True, metavar="COMMAND")

    get = verbs.add_parser(
        "get",
        parents=[common],
        help="releases, environments or gates as a table; one release as a tree",
        description="`get releases|environments|gates` lists them; `get release NAME` shows "
        "the release as a tree: its training, gate (failing checks), each environment of its "
        "path (rollout, approval, verification, analysis, judgement) and its Jobs and pods.",
    )
    get.add_argument("kind", choices=sorted(KINDS), metavar="KIND",
                     help="releases|environments|gates (or release NAME)")  # fmt: skip
    get.add_argument("name", nargs="?", help="a release's name: show it as a tree")
    get.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    get.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table",
                     help="table (default), json or yaml")  # fmt: skip
    get.add_argument("-w", "--watch", action="store_true",
                     help="with NAME: the tree again on every change (Ctrl-C ends)")  # fmt: skip
    get.add_argument("--watch-seconds", type=int, default=0, help=argparse.SUPPRESS)

    approve = verbs.add_parser(
        "approve",
        parents=[common],
        help="approve a release into an environment (as you)",
        description="Appends to the release's spec.promotion.approvals an approval of "
        "ENVIRONMENT by you (the user the API server authenticates; the admission webhook, "
        "when on, stamps the same), at the current time. GitOps users write the same entry.",
    )
    approve.add_argument("release", help="the ModelRelease's name")
    approve.add_argument("-e", "--environment", required=True, help="the environment approved")
    approve.add_argument(
        "--config-hash", help="approve this config (12-64 hex digits, as `get release` shows)"
    )
    approve.add_argument("--comment", help="why: a ticket, a review")

    _request_verb(
        verbs,
        common,
        "retry",
        "run a release's failed training, scoring or gate evaluation again, or go on "
        "with an aborted one",
        "Sets the release's spec.retry (requestedAt now, requestedBy you, your "
        "reason): the operator runs the failed step again as a new Job (the failed one and its "
        "logs stay) and records it in status.retry, once per request. On an aborted release it "
        "removes spec.abort instead, and the release goes on from where it stopped. GitOps "
        "users write the same fields. Refused when nothing failed.",
        reason="why: what was fixed, a ticket",
        environment=False,
    )

    _request_verb(
        verbs,
        common,
        "abort",
        "stop a release where it is",
        "Sets the release's spec.abort (requestedAt now, requestedBy you, your "
        "reason): it is promoted no further, and a challenger it has beside a live release is "
        "removed (the live one keeps all traffic). Where it is live it stays (rollback takes it "
        "out); Jobs already running run to their end. `retry` lets it go on. GitOps users write "
        "the same field. Refused when it is aborted already or nothing is in flight.",
        reason="why: an incident, a ticket",
        environment=False,
    )

    _request_verb(
        verbs,
        common,
        "rollback",
        "take a release out of an environment and put back what it replaced",
        "Sets the environment's entry in the release's spec.promotion.rollbacks "
        "(requestedAt now, requestedBy you, your reason). Where the release is live, the "
        "operator puts back what it replaced there (the previous release, or nothing); where it "
        "is judged beside the live one, it removes it. Final for the release there. GitOps users "
        "write the same entry. Refused where the release is not live.",
        reason="why: an incident, a ticket",
        environment=True,
    )

    _request_verb(
        verbs,
        common,
        "promote",
        "promote a release into an environment without waiting for time",
        "Sets the environment's entry in the release's spec.promotion.promotions "
        "(requestedAt now, requestedBy you, your reason): the release goes into ENVIRONMENT "
        "without waiting for the soak after the previous environment or for the rest of a "
        "judgement beside the live release (once its challenger is verified, it takes over). "
        "Approvals, freeze windows, config rules and verification still hold. GitOps users "
        "write the same entry. Refused where it is there already or went no further.",
        reason="why: a hotfix, a ticket",
        environment=True,
    )

    _request_verb(
        verbs,
        common,
        "reverify",
        "run a release's verification in an environment again",
        "Sets the environment's entry in the release's "
        "spec.promotion.reverifications (requestedAt now, requestedBy you, your reason): where "
        "the release is live and verified, the operator runs its verification again as a new "
        "Job; a failure is handled as the first one's (rolled back with autoRollback). GitOps "
        "users write the same entry. Refused where it is not live and verified.",
        reason="why: what changed around it",
        environment=True,
    )

    logs = verbs.add_parser(
        "logs",
        parents=[common],
        help="the logs of a release's training, evaluation or verification",
        description="Prints the containers' logs of the release's newest Job of a step "
        "(training, which includes scoring and imports; evaluation; verification, in "
        "--environment's namespace), or of its newest Job: the Job's newest pod, init "
        "containers first. Reads through the API server with your identity (pods/log).",
    )
    logs.add_argument("release", help="the ModelRelease's name")
    logs.add_argument("--step", choices=STEPS, help="training, evaluation or verification")
    logs.add_argument("-e", "--environment", help="the verification in this environment")
    logs.add_argument("--tail", type=int, help="the last N lines of each container")

    diff = verbs.add_parser(
        "diff",
        parents=[common],
        help="the release's config in environments side by side, with their rules",
        description="The config RELEASE gets in each ENVIRONMENT (the Environment's config, then "
        "the release's overrides for it: what the operator delivers and hashes), side by side, "
        "with each environment's rules and what breaks them. Exit 3 when a config shown breaks "
        "a rule.",
    )
    diff.add_argument("release", help="the ModelRelease's name")
    diff.add_argument("-e", "--environment", action="append", required=True,
                      help="an environment (give it twice to compare two)")  # fmt: skip
    return top


def _request_verb(
    verbs: Any,
    common: argparse.ArgumentParser,
    name: str,
    help_text: str,
    description: str,
    *,
    reason: str,
    environment: bool,
) -> None:
    """A verb that writes a request into the release's spec: the release's
    name, the environment when it is about one, and why."""
    verb = verbs.add_parser(name, parents=[common], help=help_text, description=description)
    verb.add_argument("release", help="the ModelRelease's name")
    if environment:
        verb.add_argument("-e", "--environment", required=True, help="the environment")
    verb.add_argument("--reason", help=reason)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cluster = Cluster.connect(args.kubeconfig, args.context, args.namespace)
        if args.verb == "get":
            return _get(cluster, args)
        if args.verb == "approve":
            return _approve(cluster, args)
        if args.verb == "retry":
            return _retry(cluster, args)
        if args.verb == "abort":
            return _abort(cluster, args)
        if args.verb in ("rollback", "reverify", "promote"):
            return _environment_request(cluster, args)
        if args.verb == "logs":
            return _logs(cluster, args)
        if args.verb == "diff":
            return _diff(cluster, args)
    except ClusterError as error:
        print(f"error: {error}", file=sys.stderr)
        return API_ERROR
    except Refused as error:
        print(f"refused: {error}", file=sys.stderr)
        return REFUSED
    except KeyboardInterrupt:
        return 0
    return USAGE


def _dump(document: Any, output: str) -> str:
    if output == "json":
        return json.dumps(document, indent=2, sort_keys=False)
    return yaml.safe_dump(document, sort_keys=False).rstrip()


def _get(cluster: Cluster, args: argparse.Namespace) -> int:
    kind = KINDS[args.kind]
    if args.name is not None:
        if kind != "releases":
            print(f"error: `get {args.kind} NAME` is for releases only; list {kind} with "
                  f"`kubectl modelgate get {kind}`", file=sys.stderr)  # fmt: skip
            return USAGE
        return _release(cluster, args)
    items = cluster.list_objects(kind, args.all_namespaces)
    if args.output != "table":
        print(_dump({"apiVersion": "v1", "kind": "List", "items": items}, args.output))
        return 0
    if not items:
        where = "any namespace" if args.all_namespaces else f"namespace {cluster.namespace}"
        print(f"No {PLURALS[kind]} found in {where}.", file=sys.stderr)
        return 0
    render = {
        "releases": views.releases_table,
        "environments": views.environments_table,
        "gates": views.gates_table,
    }[kind]
    print(render(items, views.now_utc(), args.all_namespaces))
    return 0


def _release(cluster: Cluster, args: argparse.Namespace) -> int:
    release = cluster.get_release(args.name)
    if args.output != "table":
        print(_dump(release, args.output))
        return 0
    print(_tree(cluster, release))
    if not args.watch:
        return 0
    seen = (release.get("metadata") or {}).get("resourceVersion")
    while True:
        # The server ends a watch now and then, or forgets an old version
        # (410 Gone): start again from the release as it is.
        try:
            stream = watch.Watch().stream(
                _custom(cluster).list_namespaced_custom_object, GROUP, VERSION,
                cluster.namespace, "modelreleases", field_selector=f"metadata.name={args.name}",
                resource_version=seen, timeout_seconds=args.watch_seconds or None,
            )  # fmt: skip
            for event in stream:
                changed = event["object"]
                if event["type"] == "DELETED":
                    print(f"\nModelRelease {cluster.namespace}/{args.name} was deleted.")
                    return 0
                version = (changed.get("metadata") or {}).get("resourceVersion")
                if event["type"] != "ERROR" and version != seen:
                    seen = version
                    print("\n" + _tree(cluster, changed), flush=True)
        except ApiException as error:
            if error.status != 410:
                raise ClusterError(
                    f"watching ModelRelease {cluster.namespace}/{args.name}: the API server "
                    f"answered {error.status} {error.reason}; check that you may watch it"
                ) from error
        if args.watch_seconds:
            return 0  # one pass, as asked
        current = cluster.get_release(args.name)
        seen = (current.get("metadata") or {}).get("resourceVersion")


def _custom(cluster: Cluster) -> Any:
    from kubernetes import client  # noqa: PLC0415  (only for a watch)

    return client.CustomObjectsApi(cluster.api)


def _targets(cluster: Cluster) -> list[str]:
    """The namespaces the namespace's Environments deploy to."""
    return [
        str((e.get("spec") or {}).get("namespace"))
        for e in _listed_or_empty(cluster, "environments")
        if (e.get("spec") or {}).get("namespace")
    ]


def _tree(cluster: Cluster, release: dict[str, Any]) -> str:
    jobs, pods, unread = cluster.release_jobs(release, _targets(cluster))
    text = views.release_tree(release, jobs, pods, views.now_utc())
    for reason in unread:
        text += f"\n(not shown: {reason})"
    return text


def _listed_or_empty(cluster: Cluster, kind: str) -> list[dict[str, Any]]:
    try:
        return cluster.list_objects(kind, all_namespaces=False)
    except ClusterError:
        return []  # the tree shows what it can read


def _approve(cluster: Cluster, args: argparse.Namespace) -> int:
    release = cluster.get_release(args.release)
    who = cluster.whoami()
    patch = approval_patch(
        release, args.environment, who, views.now_utc(), args.config_hash, args.comment
    )
    cluster.patch_release(args.release, patch)
    print(
        f"modelrelease.{GROUP}/{args.release} approved into {args.environment} by {who}"
        + (f" (config {args.config_hash})" if args.config_hash else "")
    )
    return 0


def _retry(cluster: Cluster, args: argparse.Namespace) -> int:
    release = cluster.get_release(args.release)
    who = cluster.whoami()
    cluster.patch_release(args.release, retry_patch(release, who, views.now_utc(), args.reason))
    print(
        f"modelrelease.{GROUP}/{args.release}: retry asked by {who}; the operator runs "
        f"{retried_step(release)} again (see status.retry)"
    )
    return 0


def _abort(cluster: Cluster, args: argparse.Namespace) -> int:
    release = cluster.get_release(args.release)
    who = cluster.whoami()
    cluster.patch_release(args.release, abort_patch(release, who, views.now_utc(), args.reason))
    print(
        f"modelrelease.{GROUP}/{args.release}: aborted by {who}; it is promoted no further "
        "(`kubectl modelgate retry` lets it go on)"
    )
    return 0


def _environment_request(cluster: Cluster, args: argparse.Namespace) -> int:
    release = cluster.get_release(args.release)
    who = cluster.whoami()
    build = {"rollback": rollback_patch, "reverify": reverify_patch, "promote": promote_patch}[
        args.verb
    ]
    cluster.patch_release(
        args.release, build(release, args.environment, who, views.now_utc(), args.reason)
    )
    what = {"rollback": "rollback", "reverify": "verification again", "promote": "promotion"}[
        args.verb
    ]
    print(
        f"modelrelease.{GROUP}/{args.release}: {what} in {args.environment} asked by {who}; "
        f"see status.environments[{args.environment}]"
    )
    return 0


def _logs(cluster: Cluster, args: argparse.Namespace) -> int:
    release = cluster.get_release(args.release)
    targets = _targets(cluster)
    jobs, pods, unread = cluster.release_jobs(release, targets)
    try:
        sources = pick_sources(
            f"{cluster.namespace}/{args.release}", jobs, pods, args.step, args.environment
        )
    except Refused:
        for reason in unread:  # what was not read may be why nothing was found
            print(f"(not read: {reason})", file=sys.stderr)
        raise
    for source in sources:
        print(f"==> {source.namespace}/{source.pod} ({source.job}) {source.container} <==")
        text = cluster.container_log(source.namespace, source.pod, source.container, args.tail)
        print(text, end="" if text.endswith("\n") or not text else "\n")
    return 0


def _diff(cluster: Cluster, args: argparse.Namespace) -> int:
    raw = cluster.get_release(args.release)
    listed = cluster.list_objects("environments", all_namespaces=False)
    try:
        release = ModelRelease.model_validate(raw)
        environments = {e.name: e for e in (Environment.model_validate(i) for i in listed)}
    except ValidationError as error:
        raise Refused(
            f"ModelRelease {args.release} or an Environment of namespace {cluster.namespace} "
            f"does not validate ({error.errors()[0]['msg']}): fix it as its status says"
        ) from error
    missing = [name for name in args.environment if name not in environments]
    if missing:
        raise Refused(
            f"no Environment {', '.join(missing)} in namespace {cluster.namespace} (there are: "
            f"{', '.join(sorted(environments)) or 'none'}): pass --environment with one of them"
        )
    text, valid = config_diff(
        release, [environments[n] for n in args.environment], list(environments.values())
    )
    print(text)
    return 0 if valid else REFUSED


if __name__ == "__main__":
    sys.exit(main())
