"""A state file has one worker process at a time, and only its owner can read it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from queuerun import App
from queuerun.errors import ConfigurationError, PushError


def make_app(name: str, ran: list[str]) -> App:
    app = App(name)

    @app.queue("work.fifo")
    def work(payload: dict[str, str]) -> None:
        ran.append(payload["n"])

    return app


def test_the_state_file_is_created_owner_readable_only(tmp_path: Path) -> None:
    state = tmp_path / "jobs.sqlite3"
    ran: list[str] = []
    app = make_app("private", ran)
    with app.local(state_file=state) as local:
        app.queues("work.fifo").group("g").push({"n": "1"})
        local.drain(timeout=10)
        # SQLite's write-ahead log holds payloads too: it takes the file's mode.
        for side in ("-wal", "-shm"):
            assert stat.S_IMODE(Path(f"{state}{side}").stat().st_mode) == 0o600
    assert ran == ["1"]
    assert stat.S_IMODE(state.stat().st_mode) == 0o600
    assert stat.S_IMODE(Path(f"{state}.lock").stat().st_mode) == 0o600


def test_a_second_worker_on_one_state_file_is_refused_naming_the_owner(tmp_path: Path) -> None:
    state = tmp_path / "jobs.sqlite3"
    first, second = make_app("first", []), make_app("second", [])
    with first.local(state_file=state):
        refused = rf"in use by pid {os.getpid()}.*one process runs its jobs"
        with pytest.raises(ConfigurationError, match=refused), second.local(state_file=state):
            pass
        # The refused app is left as it was: no half-started backend to push into.
        with pytest.raises(PushError, match="no worker would run it"):
            second.queues("work.fifo").group("g").push({"n": "x"})
    with second.local(state_file=state):  # the first owner left: the file is free again
        pass


OTHER_PROCESS = textwrap.dedent(
    """
    import sys, time
    from queuerun import App
    app = App("holder")

    @app.queue("work.fifo")
    def work(payload):
        pass

    with app.local(state_file=sys.argv[1]):
        print("holding", flush=True)
        sys.stdin.read()  # until the test closes our stdin
    """
)


def test_a_script_and_a_test_on_one_state_file_cannot_both_run_its_jobs(tmp_path: Path) -> None:
    state = tmp_path / "jobs.sqlite3"
    holder = subprocess.Popen(
        [sys.executable, "-c", OTHER_PROCESS, str(state)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        app = make_app("holder", [])
        with pytest.raises(ConfigurationError, match=rf"in use by pid {holder.pid}"), app.local(state_file=state):
            pass
        # Pushing needs no lock: the owner runs what others push.
        from queuerun.backends.embedded import EmbeddedBackend

        pusher = EmbeddedBackend(state_file=state)
        app.use_backend(pusher)
        app.queues("work.fifo").group("g").push({"n": "1"})
        pusher.close()
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(30)
    with app.local(state_file=state) as local:  # the owner exited: the lock went with it
        local.drain(timeout=10)


def test_a_broken_state_file_or_missing_folder_is_one_clear_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.sqlite3"
    broken.write_text("this is not a database, it is a text file of some length" * 100)
    app = make_app("broken", [])
    with pytest.raises(ConfigurationError, match="is not a queuerun state file"), app.local(state_file=broken):
        pass
    missing = tmp_path / "nowhere" / "jobs.sqlite3"
    with pytest.raises(ConfigurationError, match=r"folder .*nowhere.* does not exist"), app.local(state_file=missing):
        pass
