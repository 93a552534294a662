"""Local mode's challengers: a new release served beside the live one while
it is judged against it (policy.rollout), and the router that splits or
mirrors the environment's traffic between them, as local processes.

Each environment's challenger is a JSON record under ``challengers/``; its
server and the router are LocalServers records (arms ``challenger`` and
``router``), so ``modelgate stop`` and the Prometheus targets file know them.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from modelgate.api.common import format_time
from modelgate.api.rollout import CHALLENGER
from modelgate.backends.local import ROUTER, LocalServers
from modelgate.promotion.keys import serves_artifact
from modelgate.promotion.plan import Deploy, DeploymentObservation, SetTraffic
from modelgate.trainer import contract


def _write(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as out:
        json.dump(value, out, indent=2, sort_keys=True)
    os.replace(out.name, path)


class LocalChallengers:
    def __init__(self, state_dir: Path, servers: LocalServers) -> None:
        self.root = state_dir / "challengers"
        self.servers = servers

    def _path(self, namespace: str, environment: str) -> Path:
        return self.root / namespace / f"{environment}.json"

    def _record(self, namespace: str, environment: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = json.loads(self._path(namespace, environment).read_text())
        except (OSError, ValueError):
            return None
        return found

    def deploy(self, action: Deploy, now: datetime) -> None:
        """Serve ``action``'s release beside the live one, with no traffic."""
        namespace = action.release.split("/")[0]
        before = self._record(namespace, action.environment)
        if (
            before is not None
            and before["release"] == action.release
            and before["configHash"] == action.config_hash
            and before["image"] == action.image
        ):
            self._serve(namespace, action.environment, before)
            return  # already there: deploying is idempotent
        self.remove(namespace, action.environment)
        record = {
            "release": action.release,
            "image": action.image,
            "config": action.config,
            "configHash": action.config_hash,
            "deployedAt": format_time(now),
            "model": action.model,
            "namespace": action.namespace,
            "weight": 0,
            "mirror": False,
            "stickyHeader": None,
        }
        _write(self._path(namespace, action.environment), record)
        self._serve(namespace, action.environment, record)

    def _serve(self, namespace: str, environment: str, record: dict[str, Any]) -> None:
        config = record["config"]
        if serves_artifact(config) and not self.servers.running(
            namespace, environment, config[contract.SERVER_MODEL_SHA256], CHALLENGER
        ):
            self.servers.start(
                namespace, environment, config, arm=CHALLENGER,
                target_namespace=record.get("namespace"),
            )  # fmt: skip

    def set_traffic(self, action: SetTraffic) -> dict[str, Any]:
        """Route the environment through the router with ``action``'s split."""
        namespace = action.challenger.split("/")[0]
        record = self._record(namespace, action.environment)
        if record is None or record["release"] != action.challenger:
            return {"state": "failed", "message": f"no challenger {action.challenger} runs here"}
        record.update(weight=action.weight, mirror=action.mirror, stickyHeader=action.sticky_header)
        _write(self._path(namespace, action.environment), record)
        return self._route(namespace, action.environment, record)

    def _route(self, namespace: str, environment: str, record: dict[str, Any]) -> dict[str, Any]:
        split = (int(record["weight"]), bool(record["mirror"]), record.get("stickyHeader"))
        return self.servers.start_router(namespace, environment, record["model"], split)

    def remove(self, namespace: str, environment: str) -> str | None:
        """The champion keeps all traffic: the router and the challenger go.
        Returns the release removed, if any."""
        record = self._record(namespace, environment)
        self.servers.stop(namespace, environment, ROUTER)
        self.servers.stop(namespace, environment, CHALLENGER)
        self._path(namespace, environment).unlink(missing_ok=True)
        return None if record is None else str(record["release"])

    def ensure(self, namespace: str) -> None:
        """After a restart: serve and route what each record says."""
        folder = self.root / namespace
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            record = self._record(namespace, path.stem)
            if record is None:
                continue
            self._serve(namespace, path.stem, record)
            if (record["weight"] or record["mirror"]) and self.servers.url(
                namespace, path.stem, ROUTER
            ) is None:
                self._route(namespace, path.stem, record)

    def observe(self, namespace: str) -> dict[str, DeploymentObservation]:
        found: dict[str, DeploymentObservation] = {}
        folder = self.root / namespace
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            record = self._record(namespace, path.stem)
            if record is None:
                continue
            environment = path.stem
            server = self.servers.record(namespace, environment, CHALLENGER)
            failed = serves_artifact(record["config"]) and (
                server is None or server.get("state") != "ready"
            )
            # The split holds only while the router runs: otherwise the core asks again.
            routed = self.servers.url(namespace, environment, ROUTER) is not None
            found[environment] = DeploymentObservation(
                environment=environment,
                release=record["release"],
                image=record["image"],
                config_hash=record["configHash"],
                deployed_at=record["deployedAt"],
                ready=not failed,
                message=(server or {}).get("message", "the challenger's server is not running")
                if failed
                else None,
                weight=int(record["weight"]) if routed else 0,
                mirror=bool(record["mirror"]) and routed,
            )
        return found
