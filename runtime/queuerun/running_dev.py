"""The record a running ``queuerun dev`` leaves so other processes push to its queues.

``queuerun dev`` writes ``.queuerun/<app>.dev.json`` in the folder it runs from: its pid, URL and
where its jobs live (the embedded state file, or the emulator settings of ``--emulators``). A
script's ``push()`` and the ``queuerun`` commands started from the same folder read it, so their
jobs reach the running server instead of a queue nobody serves. A record whose process is gone is
ignored.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .settings import ENV

RECORD_SUFFIX = ".dev.json"


@dataclass(frozen=True)
class RunningDev:
    app: str
    pid: int
    url: str
    state_file: str | None = None  # plain dev: the embedded backend's SQLite file
    settings: dict[str, str] = field(default_factory=dict)  # --emulators: settings of the gcp backend
    started: str | None = field(default_factory=lambda: process_start(os.getpid()))  # tells a reused pid

    @property
    def on_emulators(self) -> bool:
        return bool(self.settings)


def record_path(app_name: str, folder: Path | None = None) -> Path:
    return (folder or Path.cwd()) / ".queuerun" / f"{app_name}{RECORD_SUFFIX}"


def process_start(pid: int) -> str | None:
    """When ``pid`` started (Linux: /proc/PID/stat field 22, clock ticks since boot); None elsewhere."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # fields after the command name, which may hold spaces


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def find(app_name: str, folder: Path | None = None) -> RunningDev | None:
    """The ``queuerun dev`` of ``app_name`` running from ``folder`` (default: here), if any."""
    path = record_path(app_name, folder)
    try:
        raw = json.loads(path.read_text())
        running = RunningDev(
            app=str(raw["app"]),
            pid=int(raw["pid"]),
            url=str(raw["url"]),
            state_file=raw.get("state_file"),
            settings={str(k): str(v) for k, v in dict(raw.get("settings") or {}).items()},
            started=raw.get("started"),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if running.app != app_name or not pid_alive(running.pid):
        return None
    if running.started is not None and process_start(running.pid) not in (None, running.started):
        return None  # the pid now belongs to another process
    return running


@contextlib.contextmanager
def announce(running: RunningDev, folder: Path | None = None) -> Iterator[Path]:
    """Write the record (owner-readable only) while the block runs; remove it after, if still ours."""
    path = record_path(running.app, folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(running), out)
    os.replace(path.with_suffix(".tmp"), path)
    try:
        yield path
    finally:
        current = find(running.app, folder)
        if current is None or current.pid == running.pid:
            with contextlib.suppress(OSError):
                path.unlink()


def export_lines(settings: Mapping[str, str]) -> list[str]:
    """The shell lines that point another terminal at the same emulators and backend."""
    names = (ENV.BACKEND, ENV.PROJECT, ENV.PUBSUB_EMULATOR_HOST, ENV.FIRESTORE_EMULATOR_HOST)
    return [f"export {name}={settings[name]}" for name in names if settings.get(name)]
