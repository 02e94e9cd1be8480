"""The push server of the ``kill -9`` fault scenarios, as a process that can be SIGKILLed.

``python tests/gcp/fault_worker.py APP_NAME PORT RUNS_FILE [--crash before-record|after-record]``
serves app APP_NAME (queues ``work`` and ``work.fifo``, declared by :func:`declare`) on
``127.0.0.1:PORT`` against the emulators named by the environment, until killed. Every handler run
appends ``start JOB_ID`` and ``done JOB_ID`` lines to RUNS_FILE, and ``recorded JOB_ID`` once its
completion record is written, (one ``os.write`` each on an
``O_APPEND`` descriptor, so lines of concurrent runs and of successive processes never mix).

``--recover GRACE`` runs the dev server's ledger (:mod:`queuerun.emulator_ledger`), as ``queuerun dev
--emulators`` does, delivering itself a job the emulator has not delivered for GRACE seconds; each
such job is logged as a ``recovered JOB_ID`` line.

``--crash`` kills this process with SIGKILL once, around the completion record of the first job
pushed with ``{"crash": true}``: ``before-record`` after its handler returned and before the record
is written (the window README's semantics table states), ``after-record`` once it is written and
before the push is answered. ``RUNS_FILE.crashed`` marks that it happened, so the restarted
process does not crash again.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from queuerun import App, JobMetadata

QUEUES = ("work", "work.fifo")
JOB_SECONDS = 0.3  # long enough that a kill lands while jobs run
LEASE = 10  # the ledger's lease (the shortest Pub/Sub allows): a restarted worker sees held copies again soon


def declare(app: App, runs: Path | None = None) -> None:
    """The scenario's queues on ``app``; with ``runs``, handlers that log each run to that file."""

    def handle(job: Any, meta: JobMetadata) -> None:
        assert runs is not None
        _append(runs, f"start {meta.job_id}")
        time.sleep(JOB_SECONDS)
        _append(runs, f"done {meta.job_id}")
        if isinstance(job, dict) and job.get("crash"):
            _crash_ids.add(meta.job_id)

    for queue in QUEUES:
        app.queue(queue, min_backoff=0, max_backoff=1)(handle)


_crash_ids: set[str] = set()


def _append(path: Path, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{line}\n".encode())
    finally:
        os.close(fd)


def _log_records(app: App, runs: Path) -> None:
    """Append ``recorded JOB_ID`` once a job's "done" completion record is written."""
    completions = app.backend.completions  # type: ignore[attr-defined]
    mark = completions.mark

    def logging_mark(topic: str, job_id: str, **fields: Any) -> None:
        mark(topic, job_id, **fields)
        if fields.get("status") == "done":
            _append(runs, f"recorded {job_id}")

    completions.mark = logging_mark


def _crash_around_completion(app: App, when: str, marker: Path) -> None:
    """SIGKILL this process once, before or after the completion record of a ``crash`` job is written."""
    completions = app.backend.completions  # type: ignore[attr-defined]
    mark = completions.mark

    def crashing_mark(topic: str, job_id: str, **fields: Any) -> None:
        crash = job_id in _crash_ids and fields.get("status") == "done" and not marker.exists()
        if crash and when == "before-record":
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        mark(topic, job_id, **fields)
        if crash and when == "after-record":
            marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)

    completions.mark = crashing_mark


def main(argv: list[str] | None = None) -> None:
    from queuerun.emulator_ledger import Ledger, ensure_ledgers
    from queuerun.server.redelivery import RedeliveryWatch
    from queuerun.server.serve import BackgroundServer

    parser = argparse.ArgumentParser()
    parser.add_argument("app")
    parser.add_argument("port", type=int)
    parser.add_argument("runs", type=Path)
    parser.add_argument("--crash", choices=("before-record", "after-record"))
    parser.add_argument("--recover", type=float, metavar="GRACE")
    args = parser.parse_args(argv)
    app = App(args.app, settings={**os.environ, "QUEUERUN_BACKEND": "gcp", "QUEUERUN_INSECURE_PUSH": "1"})
    declare(app, args.runs)
    _log_records(app, args.runs)
    if args.crash:
        _crash_around_completion(app, args.crash, args.runs.with_name(args.runs.name + ".crashed"))
    watch = RedeliveryWatch(grace=args.recover) if args.recover is not None else None
    project, host = os.environ["GOOGLE_CLOUD_PROJECT"], os.environ["PUBSUB_EMULATOR_HOST"]
    if watch is not None:  # before the server answers: the scenario pushes once it does
        ensure_ledgers(app, project=project, emulator_host=host, lease=LEASE)
    server = BackgroundServer(app, port=args.port, push_options={"redelivery": watch}).start()
    ledger = None
    if watch is not None:
        ledger = Ledger(
            app,
            watch,
            server.url,
            project=project,
            emulator_host=host,
            poll=0.5,
            lease=LEASE,
            on_recovery=lambda r: _append(args.runs, f"recovered {r.job_id}"),
        ).start()
    print(f"serving {server.url}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()
    if ledger is not None:
        ledger.stop()
    server.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
