"""Reads an OCI image archive (what `buildah push oci-archive:` writes) as the
container would see its root: the layers applied in order, whiteouts
honoured. Pure Python: no buildah or containerd needed."""

from __future__ import annotations

import json
import posixpath
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass
class ImageRoot:
    """The image's name, its config and the paths of its root filesystem;
    the contents of the paths a reader asked for."""

    reference: str
    config: dict[str, Any]
    paths: set[str] = field(default_factory=set)
    directories: set[str] = field(default_factory=set)
    contents: dict[str, bytes] = field(default_factory=dict)

    def remove(self, path: str, *, keep_itself: bool = False) -> None:
        """``path`` and what is under it (only what is under it: an opaque
        directory's lower layers)."""
        under = path + "/" if path else ""
        gone = {p for p in self.paths if p.startswith(under) or (p == path and not keep_itself)}
        self.paths -= gone
        self.directories -= gone
        for name in gone:
            self.contents.pop(name, None)


def _json(archive: tarfile.TarFile, name: str) -> dict[str, Any]:
    member = archive.extractfile(name)
    if member is None:
        raise ValueError(f"{archive.name}: {name} is not a file")
    found: dict[str, Any] = json.load(member)
    return found


def _blob(digest: str) -> str:
    algorithm, value = digest.split(":", 1)
    return f"blobs/{algorithm}/{value}"


def read_image(archive: Path, wanted: Callable[[str], bool] = lambda _: False) -> ImageRoot:
    """The root filesystem of the one image in ``archive``; the contents of
    the regular files ``wanted`` accepts (paths without a leading slash)."""
    with tarfile.open(archive) as outer:
        [entry] = _json(outer, "index.json")["manifests"]
        manifest = _json(outer, _blob(entry["digest"]))
        root = ImageRoot(
            reference=entry.get("annotations", {}).get("org.opencontainers.image.ref.name", ""),
            config=_json(outer, _blob(manifest["config"]["digest"])),
        )
        for layer in manifest["layers"]:
            blob = outer.extractfile(_blob(layer["digest"]))
            if blob is None:
                raise ValueError(f"{archive}: layer {layer['digest']} is missing")
            with tarfile.open(fileobj=blob, mode="r|*") as tar:
                for member in tar:
                    path = posixpath.normpath(member.name.lstrip("/")).removeprefix("./")
                    parent, base = posixpath.split(path)
                    if base == OPAQUE:
                        root.remove(parent, keep_itself=True)
                    elif base.startswith(WHITEOUT):
                        root.remove(posixpath.join(parent, base[len(WHITEOUT) :]))
                    else:
                        if path in root.directories and not member.isdir():
                            root.remove(path)  # a file in a directory's place hides its tree
                        root.paths.add(path)
                        if member.isdir():
                            root.directories.add(path)
                        if member.isfile() and wanted(path):
                            content = tar.extractfile(member)
                            if content is not None:
                                root.contents[path] = content.read()
    return root
