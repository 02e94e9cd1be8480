"""The queuerun command, run as a user would: a subprocess, its output and exit code."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.dev_processes import spawn_dev, stop_group, wait_healthy

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.cli.cliapp:app"


def queuerun(*args: str, state: Path | None = None, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    extra = ["--state", str(state)] if state is not None and args[0] in ("push", "dlq", "queues") else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")}
    return subprocess.run(
        [sys.executable, "-m", "queuerun.cli", *args, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        input=stdin,
        env=env,
    )


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "queuerun"
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "dev" in done.stdout and "dlq" in done.stdout


def test_queues_table() -> None:
    done = queuerun("queues", "--app", APP)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == ["queue", "type", "timeout", "attempts", "backoff", "dedupe", "http", "delivery"]
    assert lines[1].split() == ["notes", "standard", "300s", "5", "10-600s", "300s", "yes", "push"]
    assert lines[2].split() == ["orders.fifo", "fifo", "30s", "5", "10-600s", "300s", "no", "push"]


def test_manifest_is_json_the_components_can_read() -> None:
    from queuerun.manifest import Manifest

    done = queuerun("manifest", APP)
    assert done.returncode == 0, done.stderr
    manifest = Manifest.from_dict(json.loads(done.stdout))
    assert manifest.app == "cliapp" and [q.name for q in manifest.queues] == ["notes", "orders.fifo", "broken"]


def test_push_json_text_file_and_dedupe(tmp_path: Path) -> None:
    state = tmp_path / "s.sqlite3"
    payload_file = tmp_path / "blob.bin"
    payload_file.write_bytes(b"\x00\x01")
    a = queuerun("push", "orders.fifo", '{"order": 1}', "--group", "o1", "--dedupe", "o1", "--app", APP, state=state)
    b = queuerun("push", "orders.fifo", '{"order": 1}', "--group", "o1", "--dedupe", "o1", "--app", APP, state=state)
    c = queuerun("push", "notes", "--text", "hello", "--app", APP, state=state)
    d = queuerun("push", "notes", "--file", str(payload_file), "--app", APP, state=state)
    e = queuerun("push", "notes", "-", "--app", APP, state=state, stdin='["from", "stdin"]')
    for done in (a, b, c, d, e):
        assert done.returncode == 0, done.stderr
    assert a.stdout.strip() == b.stdout.strip()
    assert len({a.stdout, c.stdout, d.stdout, e.stdout}) == 4


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("push", "nope", "{}", "--app", APP), "no queue named 'nope'"),
        (("push", "notes", "{not json", "--app", APP), "payload is not valid JSON"),
        (("push", "notes", "--app", APP), "give exactly one payload"),
        (("push", "orders.fifo", "{}", "--app", APP), "'orders.fifo' is FIFO"),
        (("push", "notes", "{}", "--group", "g", "--app", APP), "'notes' is a standard queue"),
        (("push", "notes", "{}", "--app", "tests.cli.nothing:app"), "cannot import 'tests.cli.nothing'"),
        (("push", "notes", "{}"), "which app?"),
        (("dlq", "show", "broken", "--app", APP), "give the job id"),
        (("dlq", "list", "nope", "--app", APP), "no queue named 'nope'"),
    ],
)
def test_bad_arguments_give_a_clear_message_and_nonzero_exit(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    done = queuerun(*args, state=tmp_path / "s.sqlite3")
    assert done.returncode != 0
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_dlq_list_show_and_replay(tmp_path: Path) -> None:
    from tests.cli.cliapp import app

    state = tmp_path / "s.sqlite3"
    with app.local(state_file=state) as local:
        first = app.queues("broken").push({"n": 1})
        app.queues("broken").push({"n": 2})
        local.drain(timeout=10)

    listed = queuerun("dlq", "list", "broken", "--app", APP, state=state)
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 2 and "attempts=5" in listed.stdout

    shown = queuerun("dlq", "show", "broken", first, "--app", APP, state=state)
    assert shown.returncode == 0, shown.stderr
    assert f"job_id: {first}" in shown.stdout and 'payload: {"n": 1}' in shown.stdout
    assert "cannot handle {'n': 1}" in shown.stdout

    replayed = queuerun("dlq", "replay", "broken", "--app", APP, state=state)
    assert replayed.returncode == 0, replayed.stderr
    assert "replayed 2 job(s)" in replayed.stdout and "2/2" in replayed.stderr
    assert "no dead letters" in queuerun("dlq", "list", "broken", "--app", APP, state=state).stdout


def _dead_letters(state: Path) -> list[str]:
    listed = queuerun("dlq", "list", "broken", "--app", APP, state=state)
    assert listed.returncode == 0, listed.stderr
    return [line.split()[0] for line in listed.stdout.splitlines() if "attempts=" in line]


def test_dlq_replay_with_a_job_id_replays_only_that_job(tmp_path: Path) -> None:
    from tests.cli.cliapp import app

    # Given two dead letters
    state = tmp_path / "s.sqlite3"
    with app.local(state_file=state, backoff=False) as local:
        first, second = app.queues("broken").push({"n": 1}), app.queues("broken").push({"n": 2})
        local.drain(timeout=10)

    # When the user replays the first by its id
    replayed = queuerun("dlq", "replay", "broken", first, "--app", APP, state=state)

    # Then only that one left the dead letters
    assert replayed.returncode == 0, replayed.stderr
    assert f"replayed job {first}" in replayed.stdout
    assert _dead_letters(state) == [second]


def test_dlq_discard_one_and_purge_the_rest_with_confirmation(tmp_path: Path) -> None:
    from tests.cli.cliapp import app

    state = tmp_path / "s.sqlite3"
    with app.local(state_file=state, backoff=False) as local:
        ids = [app.queues("broken").push({"n": n}) for n in range(3)]
        local.drain(timeout=10)

    discarded = queuerun("dlq", "discard", "broken", ids[0], "--app", APP, state=state)
    assert discarded.returncode == 0, discarded.stderr
    assert _dead_letters(state) == ids[1:]

    unknown = queuerun("dlq", "discard", "broken", "nope", "--app", APP, state=state)
    assert unknown.returncode == 2 and "no dead letter 'nope'" in unknown.stderr

    # Without a terminal to ask on, purge refuses unless --yes
    refused = queuerun("dlq", "purge", "broken", "--app", APP, state=state)
    assert refused.returncode == 2 and "--yes" in refused.stderr and "Traceback" not in refused.stderr
    assert _dead_letters(state) == ids[1:]

    purged = queuerun("dlq", "purge", "broken", "--yes", "--app", APP, state=state)
    assert purged.returncode == 0, purged.stderr
    assert "discarded 2 dead letter(s)" in purged.stdout
    assert _dead_letters(state) == []


def test_dlq_list_shows_a_dead_letter_it_cannot_decode_marked_with_the_reason(tmp_path: Path) -> None:
    import datetime as dt

    from queuerun.backends.embedded_store import JobStore
    from queuerun.wire import OutgoingJob

    state = tmp_path / "s.sqlite3"
    store = JobStore(state)
    now = dt.datetime.now(dt.UTC)
    good, bad = store.insert(
        [
            OutgoingJob(queue="broken", data=b"{}", content_type="application/json", queued_at=now),
            OutgoingJob(queue="broken", data=b"\x89PNG", content_type="image/png", queued_at=now),
        ],
        fifo=False,
    )
    for job_id in (good, bad):
        store.bury(job_id, error="gave up")
    store.close()

    listed = queuerun("dlq", "list", "broken", "--app", APP, state=state)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert len(lines) == 2
    assert "UNDECODABLE" not in lines[0] and "UNDECODABLE" in lines[1] and "image/png" in lines[1]
    shown = queuerun("dlq", "show", "broken", bad, "--app", APP, state=state)
    assert shown.returncode == 0 and "undecodable:" in shown.stdout and "<4 bytes>" in shown.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def dev_server(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[str], Path]]:
    port = _free_port()
    state = tmp_path / "dev.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")}
    env["QUEUERUN_ALLOW_ANONYMOUS"] = "1"  # these tests are about the dev server, not about access
    proc = spawn_dev([APP, "--port", str(port), "--state", str(state), "--no-reload"], cwd=ROOT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout=30)
        yield url, proc, state
    finally:
        stop_group(proc)


def test_dev_server_runs_http_and_cli_pushes_with_a_line_per_job(
    dev_server: tuple[str, subprocess.Popen[str], Path],
) -> None:
    url, proc, state = dev_server
    req = urllib.request.Request(
        f"{url}/queues/notes", data=b'{"from": "http"}', headers={"content-type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=5) as res:
        assert res.status == 202
        http_job = res.headers["x-job-id"]
    pushed = queuerun("push", "broken", '"from cli"', "--app", APP, state=state)
    assert pushed.returncode == 0, pushed.stderr
    cli_job = pushed.stdout.strip()

    deadline = time.monotonic() + 20
    health: dict[str, int] = {}
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"{url}/_health", timeout=2) as res:
            health = json.loads(res.read())
        if health["pending"] == 0 and _dead_count(state) == 1:
            break
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    out = proc.communicate(timeout=10)[0]
    lines = out.splitlines()
    assert any(f"notes job={http_job} attempt=1" in line and line.split()[-1] == "done" for line in lines), out
    assert sum(f"broken job={cli_job}" in line for line in lines) == 5, out
    assert any(f"broken job={cli_job} attempt=5" in line and " dead " in line for line in lines), out


def _dead_count(state: Path) -> int:
    import sqlite3

    with sqlite3.connect(state) as db:
        return int(db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'dead'").fetchone()[0])


APP_SOURCE = """
from queuerun import App

app = App("reloading")

@app.queue("first", http=True)
def first(payload):
    pass
"""


def test_dev_server_reloads_when_the_code_changes(tmp_path: Path) -> None:
    (tmp_path / "reloading.py").write_text(APP_SOURCE)
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")}
    env["QUEUERUN_ALLOW_ANONYMOUS"] = "1"  # these tests are about the dev server, not about access
    proc = spawn_dev(["reloading:app", "--port", str(port)], cwd=tmp_path, env=env)
    url = f"http://127.0.0.1:{port}/queues/second"

    def status() -> int:
        req = urllib.request.Request(url, data=b"x", headers={"content-type": "text/plain"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=2) as res:
                return int(res.status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except OSError:
            return 0

    try:
        deadline = time.monotonic() + 30
        while status() != 404:  # up, and "second" is not a queue yet
            assert time.monotonic() < deadline and proc.poll() is None, "dev server did not start"
            time.sleep(0.2)
        # When a new queue is added to the code
        changed = APP_SOURCE + APP_SOURCE.split("app = App")[1].split("\n", 1)[1].replace("first", "second")
        source = tmp_path / "reloading.py"
        source.write_text(changed)
        # Then the running dev server serves it without a restart by hand. (uvicorn's polling
        # reloader takes its first look at the files when it gets to it: touch the file again
        # each second, so a change it recorded as its starting point still counts.)
        deadline = time.monotonic() + 30
        touched = time.monotonic()
        while status() != 202:
            assert time.monotonic() < deadline, "the dev server did not pick up the change"
            if time.monotonic() - touched > 1:
                stamp = time.time()
                os.utime(source, (stamp, stamp))
                touched = time.monotonic()
            time.sleep(0.3)
    finally:
        stop_group(proc)
