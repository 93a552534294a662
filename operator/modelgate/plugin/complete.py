"""Shell completion of ``kubectl modelgate``, as kubectl asks a plugin for it
(kubectl 1.26+): kubectl runs ``kubectl_complete-modelgate`` with the
plugin's arguments so far, the word being completed last, and reads one
candidate per line and then ``:<directive>`` (cobra's protocol; 4: no file
names). Release and environment names come from the cluster, with the
caller's kubeconfig; without an answer, there are none to offer."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

from modelgate.plugin.cli import KINDS
from modelgate.plugin.logs import STEPS

NO_FILES = 4
VERBS = ("abort", "approve", "diff", "get", "logs", "promote", "retry", "reverify", "rollback")
FLAGS = {
    "get": ("--all-namespaces", "--output", "--watch", "--namespace", "--context", "--kubeconfig"),
    "approve": ("--environment", "--config-hash", "--comment", "--namespace", "--context",
                "--kubeconfig"),
    "diff": ("--environment", "--namespace", "--context", "--kubeconfig"),
    "retry": ("--reason", "--namespace", "--context", "--kubeconfig"),
    "abort": ("--reason", "--namespace", "--context", "--kubeconfig"),
    "rollback": ("--environment", "--reason", "--namespace", "--context", "--kubeconfig"),
    "reverify": ("--environment", "--reason", "--namespace", "--context", "--kubeconfig"),
    "promote": ("--environment", "--reason", "--namespace", "--context", "--kubeconfig"),
    "logs": ("--step", "--environment", "--tail", "--namespace", "--context", "--kubeconfig"),
}  # fmt: skip
OUTPUTS = ("table", "json", "yaml")
TAKES_VALUE = {"-n", "--namespace", "--context", "--kubeconfig", "-o", "--output", "-e",
               "--environment", "--config-hash", "--comment", "--reason", "--step",
               "--tail"}  # fmt: skip

# (kind, namespace or None, kubeconfig, context) -> names in the cluster.
Lookup = Callable[[str, str | None, str | None, str | None], list[str]]


def candidates(args: Sequence[str], lookup: Lookup) -> list[str]:
    """What may come next, ``args[-1]`` being the word typed so far."""
    *before, word = args or [""]
    options: dict[str, str] = {}
    positional: list[str] = []
    index = 0
    while index < len(before):
        arg = before[index]
        if arg in TAKES_VALUE and index + 1 < len(before):
            options[arg] = before[index + 1]
            index += 2
            continue
        if not arg.startswith("-"):
            positional.append(arg)
        index += 1
    namespace = options.get("-n") or options.get("--namespace")
    kubeconfig, context = options.get("--kubeconfig"), options.get("--context")

    def names(kind: str) -> list[str]:
        return lookup(kind, namespace, kubeconfig, context)

    previous = before[-1] if before else ""
    if previous in ("-n", "--namespace"):
        found = names("namespaces")
    elif previous == "--step":
        found = list(STEPS)
    elif previous in ("-o", "--output"):
        found = list(OUTPUTS)
    elif previous in ("-e", "--environment"):
        found = names("environments")
    elif previous in TAKES_VALUE:
        found = []  # free text
    elif not positional:
        found = list(VERBS)
    elif word.startswith("-"):
        found = list(FLAGS.get(positional[0], ()))
    elif positional[0] == "get" and len(positional) == 1:
        found = sorted(KINDS)
    elif _names_a_release(positional):
        found = names("releases")
    else:
        found = []
    return [c for c in found if c.startswith(word)]


def _names_a_release(positional: list[str]) -> bool:
    """The word is a release's name: `get release NAME`, or the one after a verb."""
    if positional[0] == "get":
        return len(positional) == 2 and KINDS.get(positional[1]) == "releases"
    return positional[0] in VERBS and positional[0] != "get" and len(positional) == 1


def cluster_names(
    kind: str, namespace: str | None, kubeconfig: str | None, context: str | None
) -> list[str]:
    """Names of ``kind`` the caller may list; none when they may not."""
    from kubernetes import client  # noqa: PLC0415  (only when names are asked for)

    from modelgate.plugin.cluster import Cluster, ClusterError  # noqa: PLC0415

    try:
        cluster = Cluster.connect(kubeconfig, context, namespace)
        if kind == "namespaces":
            listed = client.CoreV1Api(cluster.api).list_namespace(_request_timeout=5)
            return sorted(n.metadata.name for n in listed.items)
        return sorted(i["metadata"]["name"] for i in cluster.list_objects(kind, False))
    except (ClusterError, client.ApiException, OSError):
        return []


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    for candidate in candidates(args, cluster_names):
        print(candidate)
    print(f":{NO_FILES}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
