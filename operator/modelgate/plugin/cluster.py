"""The plugin's reach into the cluster: the caller's kubeconfig and identity,
nothing of the operator's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from modelgate import GROUP, VERSION

PLURALS = {
    "releases": "modelreleases",
    "environments": "environments",
    "gates": "qualitygates",
}
RELEASE_LABEL = "modelgate.dev/release"
RELEASE_NAMESPACE_LABEL = "modelgate.dev/release-namespace"


class ClusterError(RuntimeError):
    """The API server refused or could not be reached; the message says
    what was asked and what to do."""


@dataclass
class Cluster:
    api: client.ApiClient
    namespace: str  # the context's, or -n's

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None, namespace: str | None) -> Cluster:
        try:
            api = config.new_client_from_config(config_file=kubeconfig, context=context)
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        except (config.ConfigException, OSError) as error:
            raise ClusterError(
                f"cannot use the kubeconfig ({error}): set KUBECONFIG or pass --kubeconfig, "
                "and --context to pick one of its contexts"
            ) from error
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        default = ((chosen or {}).get("context") or {}).get("namespace") or "default"
        return cls(api, namespace or default)

    def _call(self, what: str, fix: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return call(*args, **kwargs)
        except ApiException as error:
            reason = error.reason or "error"
            raise ClusterError(
                f"{what}: the API server answered {error.status} {reason}; {fix}"
            ) from error
        except OSError as error:  # urllib3's connection errors are OSErrors
            raise ClusterError(
                f"{what}: the API server could not be reached ({error}); check the "
                "kubeconfig's server and the network"
            ) from error

    def list_objects(self, kind: str, all_namespaces: bool) -> list[dict[str, Any]]:
        custom = client.CustomObjectsApi(self.api)
        plural = PLURALS[kind]
        where = "all namespaces" if all_namespaces else f"namespace {self.namespace}"
        fix = "check that Modelgate's CRDs are installed and that you may list them"
        if all_namespaces:
            found = self._call(
                f"listing {plural} in {where}", fix,
                custom.list_cluster_custom_object, GROUP, VERSION, plural,
            )  # fmt: skip
        else:
            found = self._call(
                f"listing {plural} in {where}", fix,
                custom.list_namespaced_custom_object, GROUP, VERSION, self.namespace, plural,
            )  # fmt: skip
        return list(found.get("items") or [])

    def get_release(self, name: str) -> dict[str, Any]:
        custom = client.CustomObjectsApi(self.api)
        found: dict[str, Any] = self._call(
            f"reading ModelRelease {self.namespace}/{name}",
            f"list them with `kubectl modelgate get releases -n {self.namespace}`",
            custom.get_namespaced_custom_object,
            GROUP, VERSION, self.namespace, "modelreleases", name,
        )  # fmt: skip
        return found

    def patch_release(self, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        custom = client.CustomObjectsApi(self.api)
        found: dict[str, Any] = self._call(
            f"updating ModelRelease {self.namespace}/{name}",
            "if it changed meanwhile (409), run the command again",
            custom.patch_namespaced_custom_object,
            GROUP, VERSION, self.namespace, "modelreleases", name, patch,
        )  # fmt: skip
        return found

    def whoami(self) -> str:
        """The caller's user name, as the API server authenticates them."""
        review = self._call(
            "asking the API server who you are (SelfSubjectReview)",
            "it needs Kubernetes 1.28 or later",
            client.AuthenticationV1Api(self.api).create_self_subject_review,
            {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"},
        )
        user = review.status.user_info if review.status is not None else None
        if user is None or not user.username:
            raise ClusterError("the API server did not say who you are; approve through Git")
        return str(user.username)

    def release_jobs(
        self, release: dict[str, Any], target_namespaces: list[str]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[str]]:
        """The release's Jobs (training and evaluation in its namespace,
        verification where it deploys) and their pods; and what could not
        be read (each a short reason), shown rather than failing the view."""
        meta = release.get("metadata") or {}
        name, namespace = meta.get("name"), meta.get("namespace")
        batch, core = client.BatchV1Api(self.api), client.CoreV1Api(self.api)
        sanitize = self.api.sanitize_for_serialization
        jobs: list[dict[str, Any]] = []
        pods: list[dict[str, Any]] = []
        unread: list[str] = []
        places = [(namespace, f"{RELEASE_LABEL}={name}")] + [
            (target, f"{RELEASE_LABEL}={name},{RELEASE_NAMESPACE_LABEL}={namespace}")
            for target in sorted(set(target_namespaces) - {namespace})
        ]
        for where, selector in places:
            try:
                found = batch.list_namespaced_job(where, label_selector=selector)
                listed = core.list_namespaced_pod(where, label_selector=selector)
            except ApiException as error:
                unread.append(f"Jobs in {where}: {error.status} {error.reason}")
                continue
            jobs += [sanitize(j) for j in found.items]
            pods += [sanitize(p) for p in listed.items]
        return jobs, pods, unread

    def container_log(self, namespace: str, pod: str, container: str, tail: int | None) -> str:
        """One container's log, as `kubectl logs` reads it."""
        core = client.CoreV1Api(self.api)
        kwargs: dict[str, Any] = {"container": container}
        if tail is not None:
            kwargs["tail_lines"] = tail
        text: str = self._call(
            f"reading the log of {namespace}/{pod} container {container}",
            "you need get on pods/log there; a pod whose node is gone has no log",
            core.read_namespaced_pod_log,
            pod, namespace, **kwargs,
        )  # fmt: skip
        return text
