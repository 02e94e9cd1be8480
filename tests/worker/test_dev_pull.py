"""``queuerun dev --emulators`` runs pull queues through the pull worker, push queues through pushes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from emulators import free_port

from tests.cli.dev_processes import spawn_dev, stop_group, wait_healthy
from tests.cli.test_dev_emulators import Output, _post

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.emulators


def test_dev_on_emulators_consumes_pull_queues_with_the_worker(emulator_env: dict[str, str]) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")} | emulator_env
    port = free_port()
    proc = spawn_dev(
        ["tests.worker.pullapp:app", "--emulators", "--port", str(port)], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=60)
        output = Output(proc)
        output.wait_for(r"pulling projects/[^ ]+/subscriptions/pullapp-ledger-sub")
        pulled = _post(f"{url}/queues/ledger", {"entry": 1})
        pushed = _post(f"{url}/queues/notes", {"note": 1})
        output.wait_for(rf"ledger job={pulled} attempt=1 [0-9.]+ms done")
        output.wait_for(rf"notes job={pushed} attempt=1 [0-9.]+ms done")
    finally:
        stop_group(proc, grace=30)
