"""Pushes from code and from the CLI reach the `queuerun dev` running in the same folder (tutorial step 3).

Each test works in a fresh folder with its own app, as a user following the tutorial would: start
`queuerun dev`, then push from a script and from another terminal.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.dev_processes import spawn_dev, stop_group, wait_healthy

APP_SOURCE = '''
from pathlib import Path
from queuerun import App, JobMetadata

app = App("linked")

@app.queue("notes")
def notes(payload, meta: JobMetadata):
    with open(Path(__file__).parent / "ran.txt", "a") as out:
        out.write(meta.job_id + "\\n")
'''

PUSH_SCRIPT = "from linked import app; print(app.queues('notes').push({'from': 'code'}))"


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")}


def run(folder: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=folder, capture_output=True, text=True, timeout=timeout, env=clean_env()
    )


def ran(folder: Path) -> list[str]:
    path = folder / "ran.txt"
    return path.read_text().split() if path.exists() else []


def wait_ran(folder: Path, job_id: str, proc: subprocess.Popen[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while job_id not in ran(folder):
        assert proc.poll() is None, "queuerun dev exited"
        assert time.monotonic() < deadline, f"job {job_id} never ran; ran: {ran(folder)}"
        time.sleep(0.1)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "linked.py").write_text(APP_SOURCE)
    return tmp_path


@pytest.fixture
def dev(folder: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    # A state file of its own (not the default): pushes must find it through the running server.
    port = free_port()
    proc = spawn_dev(
        ["linked:app", "--port", str(port), "--no-reload", "--state", "elsewhere/jobs.sqlite3"],
        cwd=folder,
        env=clean_env(),
    )
    (folder / "elsewhere").mkdir()
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=30)
        yield proc, port
    finally:
        stop_group(proc)


def test_push_from_code_and_from_the_cli_reach_the_running_dev_server(
    folder: Path, dev: tuple[subprocess.Popen[str], int]
) -> None:
    proc, port = dev
    from_code = run(folder, "-c", PUSH_SCRIPT)
    assert from_code.returncode == 0, from_code.stderr
    wait_ran(folder, from_code.stdout.strip(), proc)

    from_cli = run(folder, "-m", "queuerun.cli", "push", "notes", '{"from": "cli"}', "linked:app")
    assert from_cli.returncode == 0, from_cli.stderr
    wait_ran(folder, from_cli.stdout.strip(), proc)

    # From another folder, the banner's export line is what it takes.
    elsewhere = folder / "scripts"
    elsewhere.mkdir()
    state = str(folder / "elsewhere" / "jobs.sqlite3")
    from_elsewhere = subprocess.run(
        [sys.executable, "-c", PUSH_SCRIPT],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean_env(), "PYTHONPATH": str(folder), "QUEUERUN_STATE_FILE": state},
    )
    assert from_elsewhere.returncode == 0, from_elsewhere.stderr
    wait_ran(folder, from_elsewhere.stdout.strip(), proc)

    record = json.loads((folder / ".queuerun" / "linked.dev.json").read_text())
    assert record["url"] == f"http://127.0.0.1:{port}" and record["state_file"].endswith("elsewhere/jobs.sqlite3")
    assert stat.S_IMODE((folder / "elsewhere" / "jobs.sqlite3").stat().st_mode) == 0o600
    stop_group(proc)
    out = proc.stdout.read() if proc.stdout else ""
    assert f"queuerun dev: app 'linked' at http://127.0.0.1:{port} (queues: notes)" in out, out
    assert f"(from elsewhere: export QUEUERUN_STATE_FILE={state})" in out, out
    assert not (folder / ".queuerun" / "linked.dev.json").exists()  # gone with the server


def test_push_from_code_with_no_dev_server_refuses_saying_how(folder: Path) -> None:
    done = run(folder, "-c", PUSH_SCRIPT)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "job not queued: no worker would run it" in last and "queuerun dev" in last and "app.local()" in last


def test_a_second_dev_server_is_refused_in_one_line(folder: Path, dev: tuple[subprocess.Popen[str], int]) -> None:
    proc, _ = dev
    # Same folder: the record names the running one.
    again = run(folder, "-m", "queuerun.cli", "dev", "linked:app", "--port", str(free_port()), timeout=30)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert f"already runs from this folder (pid {proc.pid}" in again.stderr
    # Another folder, same state file: the state file's lock refuses it, naming the owner.
    other = folder / "other"
    other.mkdir()
    (other / "linked.py").write_text(APP_SOURCE)
    state = str(folder / "elsewhere" / "jobs.sqlite3")
    again = run(other, "-m", "queuerun.cli", "dev", "linked:app", "--port", str(free_port()), "--state", state)
    assert again.returncode == 2 and len(again.stderr.strip().splitlines()) == 1, again.stderr
    assert "is in use by pid" in again.stderr and "one process runs its jobs" in again.stderr


def test_a_record_left_by_a_dead_or_replaced_process_is_ignored(folder: Path) -> None:
    from queuerun import running_dev

    alive = running_dev.RunningDev("linked", os.getpid(), "http://127.0.0.1:1", state_file="x.sqlite3")
    with running_dev.announce(alive, folder):
        assert running_dev.find("linked", folder) == alive
    assert running_dev.find("linked", folder) is None  # removed on the way out
    # This process's pid, but another start time: the pid was reused after the server died.
    reused = running_dev.RunningDev("linked", os.getpid(), "http://127.0.0.1:1", started="1")
    with running_dev.announce(reused, folder):
        assert running_dev.find("linked", folder) is None
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = running_dev.RunningDev("linked", int(gone.stdout), "http://127.0.0.1:1")
    with running_dev.announce(dead, folder):
        assert running_dev.find("linked", folder) is None


LONG_LIVED = """
import sys
from linked import app
from queuerun.errors import PushError
try:
    app.queues("notes").push({"early": True})
except PushError as exc:
    print("refused:", exc, flush=True)
sys.stdin.readline()  # the test starts queuerun dev meanwhile
print(app.queues("notes").push({"late": True}), flush=True)
"""


def test_a_process_started_before_the_dev_server_finds_it_once_it_runs(folder: Path) -> None:
    # Given a web app (here: a script) that pushed while no dev server ran
    web = subprocess.Popen(
        [sys.executable, "-c", LONG_LIVED],
        cwd=folder,
        env=clean_env(),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert web.stdout is not None and web.stdin is not None
    first = web.stdout.readline()
    assert first.startswith("refused:") and "no worker would run it" in first
    # When queuerun dev starts in its folder
    port = free_port()
    proc = spawn_dev(["linked:app", "--port", str(port), "--no-reload"], cwd=folder, env=clean_env())
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=30)
        web.stdin.write("go\n")
        web.stdin.flush()
        job_id = web.stdout.readline().strip()
        assert web.wait(30) == 0, web.stderr.read() if web.stderr else ""
        # Then its next push reaches the dev server and runs
        wait_ran(folder, job_id, proc)
    finally:
        stop_group(proc)
        if web.poll() is None:
            web.kill()
            web.wait(10)
