"""``queuerun dev --emulators``: the app on the Pub/Sub and Firestore emulators, through real pushes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from emulators import Emulator, free_port

from tests.cli.dev_processes import spawn_dev, stop_group, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.cli.cliapp:app"
pytestmark = pytest.mark.emulators


@contextlib.contextmanager
def dev_on_emulators(env: dict[str, str], cwd: Path) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    dev_env = {**env, "PYTHONPATH": str(ROOT), "QUEUERUN_ALLOW_ANONYMOUS": "1"}  # these tests are not about access
    proc = spawn_dev([APP, "--emulators", "--port", str(port)], cwd=cwd, env=dev_env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=60)
        yield url, proc
    finally:
        stop_group(proc, grace=30)


def _post(url: str, body: dict[str, str]) -> str:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=10) as res:
        assert res.status == 202
        return str(res.headers["x-job-id"])


class Output:
    """Lines a process prints, collected by a thread so the test can wait for one."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.text = ""
        self._cond = threading.Condition()
        threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                self.text += line
                self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not re.search(pattern, self.text):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line matching {pattern!r} in:\n{self.text}")
                self._cond.wait(left)
            return self.text


def test_dev_runs_the_app_on_running_emulators(emulator_env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")} | emulator_env
    with dev_on_emulators(env, ROOT) as (url, proc):
        job_id = _post(f"{url}/queues/notes", {"hello": "emulators"})
        Output(proc).wait_for(rf"notes job={job_id} attempt=1 [0-9.]+ms done")


def test_dev_starts_and_stops_its_own_emulators(emulator_tools: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUERUN_", "PUBSUB_", "FIRESTORE_"))}
    with dev_on_emulators(env, tmp_path) as (url, proc):
        output = Output(proc)
        out = output.wait_for(r"started the emulators: pubsub 127\.0\.0\.1:\d+, firestore 127\.0\.0\.1:\d+")
        job_id = _post(f"{url}/queues/notes", {"hello": "again"})
        output.wait_for(rf"notes job={job_id} attempt=1 [0-9.]+ms done")
        pubsub_port = re.search(r"pubsub 127\.0\.0\.1:(\d+)", out)
        assert pubsub_port is not None
    # Once dev has exited, the emulators it started are gone too.
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{pubsub_port.group(1)}/", timeout=2)


def test_dlq_commands_on_the_google_cloud_backend(emulator_env: dict[str, str], pubsub_emulator: Emulator) -> None:
    from conformance.gcp_harness import GcpHarness

    from tests.cli.cliapp import app

    harness = GcpHarness(
        name="gcp",
        scale=0.1,
        retry_floor=0.9,
        env=emulator_env,
        project=pubsub_emulator.project,
        pubsub_host=pubsub_emulator.host,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")} | emulator_env
    env |= {"QUEUERUN_BACKEND": "gcp", "PYTHONPATH": str(ROOT)}

    def queuerun(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "queuerun.cli", *args, "--app", APP],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    try:
        with harness.run(app) as run:
            job_id = app.queues("broken").push({"n": 1})
            run.drain(timeout=60)
            listed = queuerun("dlq", "list", "broken")
            shown = queuerun("dlq", "show", "broken", job_id)
            replayed = queuerun("dlq", "replay", "broken")
    finally:
        app.use_settings({})
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith(job_id) and "attempts=5" in listed.stdout
    assert shown.returncode == 0 and "cannot handle {'n': 1}" in shown.stdout
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 1 job(s)" in replayed.stdout and "1/1" in replayed.stderr


def test_cli_and_code_pushes_find_dev_on_the_emulators_and_the_banner_says_how(
    emulator_env: dict[str, str], tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUERUN_", "PUBSUB_", "FIRESTORE_"))}
    env |= {"PYTHONPATH": str(ROOT)}
    dev_env = env | emulator_env  # the dev server uses the running emulators; the pushers are told nothing

    def run(*args: str, cwd: Path, extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], cwd=cwd, env=env | (extra or {}), capture_output=True, text=True, timeout=60
        )

    with dev_on_emulators(dev_env, tmp_path) as (url, proc):
        output = Output(proc)
        banner = output.wait_for(r"export FIRESTORE_EMULATOR_HOST=\S+")
        project = emulator_env["GOOGLE_CLOUD_PROJECT"]
        assert f"on the emulators at {url}" in banner and f"emulator project {project!r}" in banner
        exports = dict(
            line.strip().removeprefix("export ").split("=", 1) for line in banner.splitlines() if "export " in line
        )
        assert exports["QUEUERUN_BACKEND"] == "gcp"
        assert exports["PUBSUB_EMULATOR_HOST"] == emulator_env["PUBSUB_EMULATOR_HOST"]
        # From the same folder: queuerun push and a script find the running server's emulators.
        cli = run("-m", "queuerun.cli", "push", "notes", '{"from": "cli"}', APP, cwd=tmp_path)
        assert cli.returncode == 0, cli.stderr
        output.wait_for(rf"notes job={cli.stdout.strip()} attempt=1 [0-9.]+ms done")
        script = "from tests.cli.cliapp import app; print(app.queues('notes').push({'from': 'code'}))"
        code = run("-c", script, cwd=tmp_path)
        assert code.returncode == 0, code.stderr
        output.wait_for(rf"notes job={code.stdout.strip()} attempt=1 [0-9.]+ms done")
        # From anywhere else: the printed export lines are what it takes.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        other = run("-m", "queuerun.cli", "push", "notes", '{"from": "exports"}', APP, cwd=elsewhere, extra=exports)
        assert other.returncode == 0, other.stderr
        output.wait_for(rf"notes job={other.stdout.strip()} attempt=1 [0-9.]+ms done")
