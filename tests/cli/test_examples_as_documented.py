"""The examples run the way the README and their docstrings say: `python -m` and `queuerun dev`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.cli.dev_processes import stop_group

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def page(url: str, proc: subprocess.Popen[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as res:
                return str(res.read().decode())
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(proc.stdout.read() if proc.stdout else "no output") from None
            time.sleep(0.2)


@pytest.mark.parametrize("how", ["python -m", "queuerun dev"])
def test_order_status_serves_its_page_both_ways(how: str, tmp_path: Path) -> None:
    port = free_port()
    command = (
        ["-m", "examples.order_status.app", str(port)]
        if how == "python -m"
        else ["-m", "queuerun.cli", "dev", "examples.order_status.app:app", "--port", str(port), "--no-reload"]
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")}
    # Run from the repository root (as `python -m examples...` needs), with the state in tmp_path.
    env |= {"QUEUERUN_STATE_FILE": str(tmp_path / "orders.sqlite3"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, *command],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        html = page(f"http://127.0.0.1:{port}/", proc)
        assert "<html" in html.lower() and "/_ws" in html
    finally:
        stop_group(proc)
    out = proc.stdout.read() if proc.stdout else ""
    assert f"page http://127.0.0.1:{port}/" in out and "index.html" in out, out


@pytest.mark.parametrize("example", ["quickstart", "profile_sync", "checkout", "fanout", "order_status"])
def test_every_example_runs_under_queuerun_dev(example: str, tmp_path: Path) -> None:
    import json

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")}
    env |= {"QUEUERUN_STATE_FILE": str(tmp_path / "state.sqlite3"), "PYTHONUNBUFFERED": "1"}
    target = f"examples.{example}.app:app"
    proc = subprocess.Popen(
        [sys.executable, "-m", "queuerun.cli", "dev", target, "--port", str(port), "--no-reload"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        health = json.loads(page(f"http://127.0.0.1:{port}/_health", proc))
    finally:
        stop_group(proc)
    from importlib import import_module

    assert health["app"] == import_module(f"examples.{example}.app").app.name and health["pending"] == 0
