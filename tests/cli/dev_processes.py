"""Starting, waiting for and stopping ``queuerun dev`` processes in the CLI tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path


def spawn_dev(args: list[str], *, cwd: Path, env: Mapping[str, str]) -> subprocess.Popen[str]:
    """``queuerun dev ARGS`` in its own process group, output captured as text."""
    return subprocess.Popen(
        [sys.executable, "-m", "queuerun.cli", "dev", *args],
        cwd=cwd,
        env={**env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_healthy(url: str, proc: subprocess.Popen[str], *, timeout: float) -> None:
    """Return once ``url/_health`` answers; raise with the process's output if it dies or stalls."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/_health", timeout=1):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                output = proc.stdout.read() if proc.stdout else ""
                raise RuntimeError(f"queuerun dev did not start: {output}") from None
            time.sleep(0.2)


def stop_group(proc: subprocess.Popen[str], grace: float = 10) -> None:
    """SIGTERM the process group, SIGKILL it after ``grace`` seconds. Never by name."""
    with contextlib.suppress(ProcessLookupError):  # the test may have stopped it already
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
