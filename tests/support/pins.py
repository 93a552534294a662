"""The versions the third-party servers' requirement files pin
(tests/servers), which also name the images `make images` builds from them."""

from __future__ import annotations

import re
from pathlib import Path

SERVERS = Path(__file__).resolve().parents[1] / "servers"


def pinned(package: str, requirements: Path) -> str:
    """The version ``requirements`` pins ``package`` at."""
    found = re.search(rf"^{re.escape(package)}==(\S+)$", requirements.read_text(), re.MULTILINE)
    if found is None:
        raise RuntimeError(f"{requirements} pins no version of {package}")
    return found[1]
