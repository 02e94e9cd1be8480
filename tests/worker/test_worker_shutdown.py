"""``queuerun worker`` on SIGTERM: stops pulling, finishes short jobs, hands back the rest, exits in time.

Cloud Run sends SIGTERM, then SIGKILL 10 s later (cloud.google.com/run/docs/container-contract,
"Instance shutdown"): the process must be gone well within those 10 s, with finished jobs
acknowledged and unfinished ones handed back to Pub/Sub. Not shown here: that another instance then
gets the unfinished job at once: on the emulator, after the worker process exits, the job came back
to a new worker only after about 55 s (with attempt 3), too slow for this test (measured).
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
from emulators import Emulator

from queuerun import App
from queuerun.emulator_topology import delete_topology, ensure_topology

pytestmark = pytest.mark.emulators

CLOUD_RUN_SIGKILL_AFTER = 10.0

APP_SOURCE = """
import os, time
from queuerun import App, JobMetadata

app = App(os.environ["TEST_APP_NAME"])
log = os.environ["TEST_JOB_LOG"]

# timeout 10: the lease (ack deadline 20 s) bounds how long the test waits for a redelivery.
@app.queue("slow", delivery="pull", timeout=10, concurrency=4, min_backoff=0, max_backoff=0)
def handle(seconds: float, meta: JobMetadata) -> None:
    if meta.received_count > 1:
        with open(log, "a") as f:
            f.write(f"again {seconds} attempt {meta.received_count}\\n")
        return
    with open(log, "a") as f:
        f.write(f"start {seconds}\\n")
    time.sleep(seconds)
    with open(log, "a") as f:
        f.write(f"end {seconds}\\n")
"""


def _wait_for(path: Path, text: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().count(text) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(
        f"{text!r} x{count} not in {path} within {timeout} s: {path.read_text() if path.exists() else ''}"
    )


def test_sigterm_finishes_short_jobs_and_hands_back_long_ones_within_the_grace_period(
    tmp_path: Path, emulator_env: dict[str, str], pubsub_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = f"w{uuid.uuid4().hex[:10]}"
    module = f"sigterm_app_{name}"
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(APP_SOURCE))
    job_log = tmp_path / "jobs.log"
    env = {**os.environ, **emulator_env, "QUEUERUN_BACKEND": "gcp", "TEST_APP_NAME": name, "TEST_JOB_LOG": str(job_log)}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TEST_APP_NAME", name)
    monkeypatch.setenv("TEST_JOB_LOG", str(job_log))
    app: App = importlib.import_module(module).app
    app.use_settings({**emulator_env, "QUEUERUN_BACKEND": "gcp"})
    ensure_topology(
        app, project=pubsub_emulator.project, push_base_url="http://127.0.0.1:9", emulator_host=pubsub_emulator.host
    )
    worker = subprocess.Popen(
        [sys.executable, "-m", "queuerun.cli", "worker", f"{module}:app"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        queue = app.queues("slow")
        queue.push(1.0)
        queue.push(300.0)
        _wait_for(job_log, "start", 2)
        sent = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(timeout=CLOUD_RUN_SIGKILL_AFTER + 5)
        finally:
            took = time.monotonic() - sent
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
            output = worker.stdout.read().decode() if worker.stdout else ""
        assert code == 0, output
        assert took < CLOUD_RUN_SIGKILL_AFTER, (took, output)
        assert "end 1.0" in job_log.read_text()  # the short job finished inside the grace period
        assert "end 300.0" not in job_log.read_text()
        # On the emulator the worker leaves it to the stream's close instead of nacking it (a gap
        # named in PullWorker.stop); production nacks it.
        assert "left to Pub/Sub (emulator: not nacked)" in output

    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        app.backend.stop()
        delete_topology(app, project=pubsub_emulator.project, emulator_host=pubsub_emulator.host)
