"""A real Prometheus server (Debian's package) on loopback, scraping targets."""

from __future__ import annotations

import json
import shutil
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.support.processes import answers, serving
from tests.support.s3server import free_port


@dataclass
class Prometheus:
    url: str
    log: Path

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector for ``promql`` (empty if nothing matches)."""
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(address, timeout=10) as answer:
            body = json.loads(answer.read())
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if len(result) == 1 else None


@contextmanager
def running_prometheus(
    targets: list[str], workdir: Path, target_files: list[Path] | None = None
) -> Iterator[Prometheus]:
    """Prometheus scraping ``targets`` every second, and the targets listed
    in ``target_files`` (file-based discovery, re-read as they change)."""
    binary = shutil.which("prometheus")
    if binary is None:
        raise RuntimeError("prometheus is not installed: run `make tools` (Debian package)")
    config = workdir / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [
                    {"job_name": "modelgate", "static_configs": [{"targets": targets}]},
                    *(
                        [
                            {
                                "job_name": "discovered",
                                "file_sd_configs": [
                                    {
                                        "files": [str(f) for f in target_files],
                                        "refresh_interval": "1s",
                                    }
                                ],
                            }
                        ]
                        if target_files
                        else []
                    ),
                ],
            }
        )
    )
    port = free_port()
    server = Prometheus(url=f"http://127.0.0.1:{port}", log=workdir / "prometheus.log")
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={workdir / 'tsdb'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with serving(command, server.log, answers(f"{server.url}/-/ready"), "prometheus", 60):
        yield server
