"""Server processes the tests start: wait until ready, always stopped."""

from __future__ import annotations

import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def stop(process: subprocess.Popen[bytes], grace: float = 20) -> None:
    """Terminate; kill what has not stopped within ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def answers(url: str) -> Callable[[], bool]:
    """Ready when ``url`` answers 200."""

    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    return check


@contextmanager
def serving(
    command: list[str],
    log: Path,
    ready: Callable[[], bool],
    what: str,
    timeout: float = 120,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """``command`` running (output in ``log``) once ``ready()``; stopped after.
    A process that exits first, or is not ready in time, fails with its log."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    try:
        deadline = time.monotonic() + timeout
        while not ready():
            if process.poll() is not None:
                raise RuntimeError(f"{what} exited: {log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{what} was not ready within {timeout:g} s: {log.read_text()[-3000:]}"
                )
            time.sleep(0.3)
        yield process
    finally:
        stop(process)
