"""Start, wait for, reset and stop the Pub/Sub and Firestore emulators of the Google Cloud CLI.

Used by ``queuerun dev --emulators``, the test fixtures and the benchmarks.

Each emulator runs in its own process group on a free loopback port, with ``CLOUDSDK_CONFIG`` pointed
at a scratch folder, and is stopped by process-group id (SIGTERM, then SIGKILL): never by name.

The emulator launchers under ``<sdk>/platform`` are started directly when present: measured here,
that skips the gcloud wrapper (about 1 s and 60 MB per emulator). Otherwise ``gcloud ... start``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Kind = Literal["pubsub", "firestore"]

PROJECT = "test-project"
START_TIMEOUT = 60.0
STOP_GRACE = 5.0

# Loopback only: never route emulator requests through an HTTP(S)_PROXY from the environment.
loopback_http = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class EmulatorUnavailable(RuntimeError):
    """gcloud or java is not installed: the emulator tests cannot run on this machine."""


class EmulatorStartError(RuntimeError):
    """An emulator did not come up; the message carries the tail of its log."""

    def __init__(self, message: str, *, exited: bool) -> None:
        super().__init__(message)
        self.exited = exited  # the process died (rather than hanging past the timeout)


@dataclass
class Emulator:
    """One running emulator. ``host`` is ``127.0.0.1:PORT``, the form the *_EMULATOR_HOST settings take."""

    kind: Kind
    host: str
    project: str
    process: subprocess.Popen[bytes]
    log_path: Path
    launched_at: float  # time.monotonic() at launch
    started_in: float | None = None  # seconds from launch to the first 200 on GET /
    stopped: bool = field(default=False, init=False)

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def pgid(self) -> int:
        # start_new_session=True makes the child a session and group leader: its pid is the group id.
        return self.process.pid

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError as exc:
            return f"<log unreadable: {exc}>"


def require_tools() -> str:
    """Return the path of gcloud, or raise EmulatorUnavailable naming what is missing."""
    gcloud = shutil.which("gcloud")
    missing = [name for name, path in (("gcloud", gcloud), ("java", shutil.which("java"))) if path is None]
    if gcloud is None or missing:
        raise EmulatorUnavailable(f"the emulators need {' and '.join(missing)} on PATH")
    return gcloud


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def command(kind: Kind, port: int, data_dir: Path, *, gcloud: str, project: str, direct: bool = True) -> list[str]:
    """The command line that starts one emulator on 127.0.0.1:port."""
    platform = Path(os.path.realpath(gcloud)).parent.parent / "platform"
    if kind == "pubsub":
        binary = platform / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
        if direct and binary.is_file():
            return [str(binary), "--host=127.0.0.1", f"--port={port}"]
        return [
            gcloud,
            "beta",
            "emulators",
            "pubsub",
            "start",
            f"--host-port=127.0.0.1:{port}",
            f"--project={project}",
            f"--data-dir={data_dir}",
        ]
    binary = platform / "cloud-firestore-emulator" / "cloud_firestore_emulator"
    if direct and binary.is_file():
        return [str(binary), "start", "--host=127.0.0.1", f"--port={port}", "--database-mode=firestore-native"]
    return [gcloud, "emulators", "firestore", "start", f"--host-port=127.0.0.1:{port}"]


def launch(kind: Kind, workdir: Path, *, project: str = PROJECT, direct: bool = True) -> Emulator:
    """Start one emulator without waiting for it (see wait_ready)."""
    gcloud = require_tools()
    port = free_port()
    base = workdir / f"{kind}-{port}"
    (base / "data").mkdir(parents=True)
    (base / "gcloud-config").mkdir()
    env = {**os.environ, "CLOUDSDK_CONFIG": str(base / "gcloud-config"), "CLOUDSDK_CORE_PROJECT": project}
    for name in ("PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST"):
        env.pop(name, None)
    log_path = base / "emulator.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command(kind, port, base / "data", gcloud=gcloud, project=project, direct=direct),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=base,
            start_new_session=True,
        )
    return Emulator(kind, f"127.0.0.1:{port}", project, process, log_path, launched_at=time.monotonic())


def wait_ready(emulator: Emulator, timeout: float = START_TIMEOUT) -> None:
    """Poll ``GET /`` until it answers 200. On failure stop the emulator and raise with its log."""
    deadline = emulator.launched_at + timeout
    problem = "no answer"
    exited = False
    while not exited and time.monotonic() < deadline:
        try:
            with loopback_http.open(emulator.url + "/", timeout=2) as response:
                if response.status == 200 and emulator.process.poll() is None:
                    emulator.started_in = time.monotonic() - emulator.launched_at
                    return
                problem = f"GET / answered {response.status}"
        except OSError as exc:  # URLError and connection errors are OSErrors
            problem = str(exc)
        exited = emulator.process.poll() is not None
        if exited:
            problem = f"exited with code {emulator.process.returncode}"
        else:
            time.sleep(0.1)
    if not exited:
        problem = f"not ready after {timeout:.0f} s ({problem})"
    stop(emulator)
    raise EmulatorStartError(
        f"{emulator.kind} emulator on {emulator.host} {problem}; log {emulator.log_path}:\n{emulator.log_tail()}",
        exited=exited,
    )


def start_all(
    workdir: Path,
    kinds: tuple[Kind, ...] = ("pubsub", "firestore"),
    *,
    project: str = PROJECT,
    direct: bool = True,
    timeout: float = START_TIMEOUT,
) -> dict[Kind, Emulator]:
    """Launch every emulator at once, then wait for each: they boot concurrently.

    One that exits before answering (its port taken between free_port() and its bind, say) is
    relaunched on a new port, twice at most. On any failure every emulator started is stopped.
    """
    emulators: dict[Kind, Emulator] = {}
    try:
        for kind in kinds:
            emulators[kind] = launch(kind, workdir, project=project, direct=direct)
        for kind in kinds:
            for attempt in range(3):
                try:
                    wait_ready(emulators[kind], timeout)
                    break
                except EmulatorStartError as exc:
                    if not exc.exited or attempt == 2:
                        raise
                    emulators[kind] = launch(kind, workdir, project=project, direct=direct)
    except BaseException:
        for emulator in emulators.values():
            stop(emulator)
        raise
    return emulators


def group_alive(emulator: Emulator) -> bool:
    """True while any process of the emulator's group is alive (zombies awaiting a reaper do not count)."""
    emulator.process.poll()  # reap our own child, so it does not linger as a zombie of the group
    pgid = emulator.pgid
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The fields after the parenthesised command name start: state, ppid, pgrp.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def _wait_group_gone(emulator: Emulator, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while group_alive(emulator):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop(emulator: Emulator, grace: float = STOP_GRACE) -> None:
    """Stop the emulator's whole process group: SIGTERM, then SIGKILL if anything outlives ``grace`` seconds."""
    if emulator.stopped:
        return
    emulator.stopped = True
    pgid = emulator.pgid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    if not _wait_group_gone(emulator, grace):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        # SIGKILL cannot be ignored, but a loaded machine may take a while to tear a JVM down.
        _wait_group_gone(emulator, max(grace, 15.0))
    # The group check skips zombies, so the launcher may have exited without being reaped yet: reap it
    # (its exit is certain once the group is gone, so this does not block).
    with contextlib.suppress(subprocess.TimeoutExpired):
        emulator.process.wait(timeout=5.0)


def reset_firestore(emulator: Emulator) -> None:
    """Delete every document in the emulator's default database."""
    url = f"{emulator.url}/emulator/v1/projects/{emulator.project}/databases/(default)/documents"
    request = urllib.request.Request(url, method="DELETE")
    with loopback_http.open(request, timeout=10) as response:
        if response.status != 200:
            raise RuntimeError(f"DELETE {url} answered {response.status}")


def emulator_env(pubsub: Emulator, firestore: Emulator) -> dict[str, str]:
    """The settings the runtime and the Google clients read to use these emulators."""
    return {
        "PUBSUB_EMULATOR_HOST": pubsub.host,
        "FIRESTORE_EMULATOR_HOST": firestore.host,
        "GOOGLE_CLOUD_PROJECT": pubsub.project,
    }
