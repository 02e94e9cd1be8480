"""The CLI's conventions, run as a user would: app argument, QUEUERUN_APP, --version, help, one-line errors."""

from __future__ import annotations

import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.cli.dev_processes import spawn_dev, stop_group

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.cli.cliapp:app"
COMMANDS = ["dev", "push", "dlq", "queues", "manifest", "serve", "init", "preview"]


def queuerun(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")}
    return subprocess.run(
        [sys.executable, "-m", "queuerun.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, "PYTHONPATH": str(ROOT), **env},
    )


def one_line_exit_2(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)
    assert "Traceback (most recent call last)" not in done.stderr, done.stderr
    return done.stderr.strip()


def test_version() -> None:
    done = queuerun("--version")
    assert done.returncode == 0 and re.fullmatch(r"queuerun \d+\.\d+\.\d+\S*", done.stdout.strip()), done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_an_example_and_says_each_options_default(command: str) -> None:
    done = queuerun(command, "--help")
    assert done.returncode == 0, done.stderr
    assert f"example: queuerun {command}" in done.stdout
    options = re.split(r"\n  (?=-)", done.stdout.split("options:", 1)[1].split("example:")[0])[1:]
    for option in options:
        if option.startswith(("-h, --help",)) or " MODULE:APP " in f" {option.split()[0]} ":
            continue
        assert "default" in option, f"{command}: {option.strip()!r} does not say its default"


@pytest.mark.parametrize(
    "args",
    [
        ("queues", APP),
        ("queues", "--app", APP),
        ("queues",),  # QUEUERUN_APP
        ("manifest", APP),
        ("manifest", "--app", APP),
        ("manifest",),
    ],
)
def test_the_app_is_positional_or_app_or_queuerun_app_on_commands_that_read_it(args: tuple[str, ...]) -> None:
    env = {} if len(args) > 1 else {"QUEUERUN_APP": APP}
    done = queuerun(*args, **env)
    assert done.returncode == 0, done.stderr
    assert "notes" in done.stdout


def test_push_and_dlq_take_the_app_positionally_anywhere_or_by_flag(tmp_path: Path) -> None:
    state = str(tmp_path / "s.sqlite3")
    a = queuerun("push", APP, "broken", '"one"', "--state", state)
    b = queuerun("push", "broken", '"two"', APP, "--state", state)
    c = queuerun("push", "broken", '"three"', "--app", APP, "--state", state)
    d = queuerun("push", "broken", '"four"', "--state", state, QUEUERUN_APP=APP)
    for done in (a, b, c, d):
        assert done.returncode == 0, done.stderr
    listed = queuerun("dlq", "list", APP, "broken", "--state", state)
    assert listed.returncode == 0 and "no dead letters in 'broken'" in listed.stdout, listed.stderr
    both = queuerun("queues", APP, "--app", "tests.cli.other:app")
    assert "two apps given" in one_line_exit_2(both)


def test_a_duplicate_push_says_whose_duplicate_it_is(tmp_path: Path) -> None:
    state = str(tmp_path / "s.sqlite3")
    first = queuerun("push", "orders.fifo", '{"n": 1}', "--group", "g", APP, "--state", state)
    again = queuerun("push", "orders.fifo", '{"n": 1}', "--group", "g", APP, "--state", state)
    assert first.returncode == 0 and again.returncode == 0, again.stderr
    job_id = first.stdout.strip()
    assert again.stdout.strip() == job_id  # stdout stays the bare id, for scripts
    assert f"(duplicate of job {job_id}" in again.stderr and "not queued again" in again.stderr
    assert "duplicate" not in first.stderr


def test_the_cli_says_group_not_dot_group() -> None:
    done = queuerun("push", "orders.fifo", "{}", APP)
    message = one_line_exit_2(done)
    assert "--group GROUP" in message and ".group(" not in message


def test_a_missing_attribute_is_named(tmp_path: Path) -> None:
    message = one_line_exit_2(queuerun("queues", "tests.cli.cliapp:ap"))
    assert "has no attribute 'ap'" in message and "Apps in 'tests.cli.cliapp': app" in message


def test_a_broken_queue_file_names_the_file_and_line_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "queues").mkdir()
    (tmp_path / "shop.py").write_text('from queuerun import App\napp = App("shop", queues_dir="queues")\n')
    (tmp_path / "queues" / "emails.py").write_text("import os\n\nVALUE = undefined_name\n\ndef handler(p):\n    pass\n")
    message = one_line_exit_2(queuerun("queues", "shop:app", cwd=tmp_path))
    first = message.splitlines()[0]
    assert "queue file" in first and "emails.py" in first and "emails.py:3: NameError" in first, message
    assert "VALUE = undefined_name" in message  # the user's own frame, shown
    assert "/queuerun/" not in message.split("\n", 1)[1]  # none of ours


def test_a_syntax_error_in_the_app_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "shop.py").write_text("from queuerun import App\napp = App('shop'\n")
    message = one_line_exit_2(queuerun("queues", "shop:app", cwd=tmp_path))
    assert "shop.py:2" in message and "SyntaxError" in message


def test_a_missing_state_folder_or_broken_state_file_is_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "nowhere" / "s.sqlite3")
    message = one_line_exit_2(queuerun("push", "notes", "{}", APP, "--state", missing))
    assert "does not exist" in message and len(message.splitlines()) == 1
    broken = tmp_path / "broken.sqlite3"
    broken.write_text("not sqlite " * 200)
    message = one_line_exit_2(queuerun("dlq", "list", "notes", APP, "--state", str(broken)))
    assert "not a queuerun state file" in message and len(message.splitlines()) == 1


def test_a_port_in_use_fails_in_one_line_before_any_job_runs(tmp_path: Path) -> None:
    state = tmp_path / "s.sqlite3"
    pushed = queuerun("push", "broken", '"waiting"', APP, "--state", str(state))
    assert pushed.returncode == 0, pushed.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = str(busy.getsockname()[1])
        for args, env in (
            ([APP], {}),
            (["--no-reload"], {"QUEUERUN_APP": APP}),  # the app from the environment, as everywhere
            ([APP, "--emulators"], {}),  # before any emulator starts
        ):
            done = queuerun("dev", *args, "--port", port, "--state", str(state), **env)
            message = one_line_exit_2(done)
            assert f"cannot listen on 127.0.0.1:{port}" in message and len(message.splitlines()) == 1
        message = one_line_exit_2(queuerun("serve", APP, "--port", port))
        assert f"cannot listen on 127.0.0.1:{port}" in message and len(message.splitlines()) == 1
    with sqlite3.connect(state) as db:  # the job was never attempted
        assert db.execute("SELECT state, attempts FROM jobs").fetchall() == [("ready", 0)]


BROKEN_RELOAD_APP = """
from queuerun import App

app = App("reloader")

@app.queue("first", http=True)
def first(payload):
    pass
"""


def test_a_reload_broken_by_a_syntax_error_answers_503_with_the_error(tmp_path: Path) -> None:
    source = tmp_path / "reloader.py"
    source.write_text(BROKEN_RELOAD_APP)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # Anonymous posts to a non-public queue: allowed here, as this test is about reloading, not access.
    env = {"PATH": os.environ["PATH"], "QUEUERUN_ALLOW_ANONYMOUS": "1"}
    proc = spawn_dev(["reloader:app", "--port", str(port)], cwd=tmp_path, env=env)

    def answer() -> tuple[int, str]:
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/queues/first", data=b"x", headers={"content-type": "text/plain"}, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as res:
                return int(res.status), res.read().decode()
        except urllib.error.HTTPError as err:
            return int(err.code), err.read().decode()
        except OSError:
            return 0, ""

    try:
        deadline = time.monotonic() + 30
        while answer()[0] != 202:
            assert time.monotonic() < deadline and proc.poll() is None, "dev server did not start"
            time.sleep(0.2)
        source.write_text(BROKEN_RELOAD_APP.replace("def first(payload):", "def first(payload)"))
        deadline, touched = time.monotonic() + 30, time.monotonic()
        while (got := answer())[0] != 503:
            assert time.monotonic() < deadline, f"the broken reload answered {got}"
            if time.monotonic() - touched > 1:  # see test_dev_server_reloads_when_the_code_changes
                os.utime(source)
                touched = time.monotonic()
            time.sleep(0.3)
        assert "cannot load the app" in got[1] and "SyntaxError" in got[1] and "reloader.py:7" in got[1]
    finally:
        stop_group(proc)
    assert not (tmp_path / ".queuerun" / "reloader.dev.json").exists()


def test_a_retry_line_on_the_emulators_says_when_pub_sub_sends_the_job_again() -> None:
    import logging

    from queuerun.emulator_dev import _JobLine

    _JobLine.backoffs["emails"] = (1.0, 2.0)
    record = logging.LogRecord("queuerun.server", logging.WARNING, __file__, 1, "job failed, will retry", (), None)
    record.__dict__.update(queue="emails", job_id="j1", attempt=1, duration_ms=3, status="retry", error="E: boom")
    line = _JobLine().format(record)
    assert "emails job=j1 attempt=1 3ms retry when Pub/Sub redelivers it, after its backoff (1-2 s) (E: boom)" in line
