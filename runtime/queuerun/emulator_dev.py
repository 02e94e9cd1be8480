"""``queuerun dev --emulators``: the production code path on one machine.

The app runs on the Google Cloud backend against the Pub/Sub and Firestore emulators (started here
unless ``PUBSUB_EMULATOR_HOST`` and ``FIRESTORE_EMULATOR_HOST`` point at running ones), served by the
push server, with topics and subscriptions built from the app's declarations; ``delivery="pull"``
queues get pull subscriptions, consumed by the pull worker (``queuerun worker``) in this process. Emulators this
command starts are stopped by process group when it exits.

The emulator drops some messages after failed push deliveries, and some it could not push while
this server was down (production does not): a ledger subscription keeps a copy of every job until
it settles, and a job the emulator has not delivered for a minute is delivered by this server
itself, with the same job id, and logged as RECOVERED (see :mod:`queuerun.emulator_ledger`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import emulators
from .emulator_ledger import Ledger, Recovery, ensure_ledgers
from .emulator_topology import ensure_topology
from .hosting import warn_if_exposed
from .running_dev import export_lines
from .server.redelivery import RedeliveryWatch
from .settings import ENV
from .worker import PullWorker

log = logging.getLogger("queuerun.dev")


class _JobLine(logging.Formatter):
    """The push server's structured records, as one readable line per job attempt."""

    # queue -> (min_backoff, max_backoff): a retry line says when Pub/Sub sends the job again
    backoffs: dict[str, tuple[float, float]] = {}  # noqa: RUF012  (filled once the app is loaded)

    def format(self, record: logging.LogRecord) -> str:
        fields: Mapping[str, Any] = record.__dict__
        if "job_id" not in fields:
            return f"{self.formatTime(record, '%H:%M:%S')} {record.getMessage()}"
        parts = [self.formatTime(record, "%H:%M:%S"), str(fields.get("queue"))]
        if fields.get("group_id"):
            parts.append(f"group={fields['group_id']}")
        parts.append(f"job={fields['job_id']}")
        # Only what the record knows: a job answered before it ran has no attempt or duration.
        if fields.get("attempt") is not None:
            parts.append(f"attempt={fields['attempt']}")
        if fields.get("duration_ms") is not None:
            parts.append(f"{fields['duration_ms']}ms")
        status = str(fields.get("status", record.levelname.lower()))
        backoff = self.backoffs.get(str(fields.get("queue")))
        if status == "retry" and backoff is not None:
            # Pub/Sub picks the delay within the subscription's retry policy, from these bounds.
            status = f"retry when Pub/Sub redelivers it, after its backoff ({backoff[0]:g}-{backoff[1]:g} s)"
        parts.append(status)
        if fields.get("http_status") is not None:
            parts.append(f"(answered {fields['http_status']})")
        # Without an error field the message is the reason; there is always one to show.
        reason = fields.get("error") or (record.getMessage() if fields.get("status") != "done" else "")
        if reason:
            parts.append(f"({reason})")
        if record.exc_info and fields.get("status") == "dead":  # a dead letter's traceback, as on the embedded dev log
            return " ".join(parts) + "\n" + self.formatException(record.exc_info)
        return " ".join(parts)


def _job_lines() -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JobLine())
    for name in ("queuerun.server", "queuerun.dev", "queuerun.worker"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.DEBUG)  # the server logs finished jobs at DEBUG
        logger.propagate = False


Announce = Callable[[str, Mapping[str, str]], contextlib.AbstractContextManager[Any]]


def run_on_emulators(
    target: str, *, host: str, port: int, workdir: Path, announce: Announce | None = None
) -> None:
    """Serve the app on the emulators until SIGINT/SIGTERM.

    ``announce(url, settings)`` is entered once the server listens, for as long as it serves
    (``queuerun dev`` records there where other commands find it).
    """
    from .server.serve import BackgroundServer, load_app

    _job_lines()
    warn_if_exposed(host, server="queuerun dev --emulators", insecure_push=True)
    # SIGTERM unwinds like Ctrl-C, at any point (even while the emulators start), so the
    # emulators this command started are always stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    started: list[emulators.Emulator] = []
    env = dict(os.environ)
    try:
        if not (env.get(ENV.PUBSUB_EMULATOR_HOST) and env.get(ENV.FIRESTORE_EMULATOR_HOST)):
            emulators.require_tools()
            workdir.mkdir(parents=True, exist_ok=True)
            running = emulators.start_all(workdir)
            started.extend(running.values())
            env.update(emulators.emulator_env(running["pubsub"], running["firestore"]))
            print(
                f"queuerun dev: started the emulators: pubsub {running['pubsub'].host}, "
                f"firestore {running['firestore'].host}",
                flush=True,
            )
        project = env.get(ENV.PROJECT) or emulators.PROJECT
        settings = {
            ENV.BACKEND: "gcp",
            ENV.PROJECT: project,
            ENV.PUBSUB_EMULATOR_HOST: env[ENV.PUBSUB_EMULATOR_HOST],
            ENV.FIRESTORE_EMULATOR_HOST: env[ENV.FIRESTORE_EMULATOR_HOST],
            ENV.INSECURE_PUSH: "1",  # the emulator sends no OIDC token
        }
        # The Google clients read these too (for anything the app creates itself).
        os.environ.update({k: v for k, v in settings.items() if k != ENV.BACKEND})
        app = load_app(target)
        app.use_settings(settings)
        _JobLine.backoffs.update({s.name: (s.min_backoff, s.max_backoff) for s in app.specs})
        watch = RedeliveryWatch()
        # binds the port, so its URL is known
        server = BackgroundServer(app, host=host, port=port, push_options={"redelivery": watch})
        # Subscriptions first: a job published to a topic before its subscription exists is lost.
        topology = ensure_topology(
            app, project=project, push_base_url=server.url, emulator_host=settings[ENV.PUBSUB_EMULATOR_HOST]
        )
        ensure_ledgers(app, project=project, emulator_host=settings[ENV.PUBSUB_EMULATOR_HOST])
        # Pull queues have pull subscriptions there, consumed by the worker production runs.
        pulled = any(s.delivery == "pull" for s in app.specs)
        worker = PullWorker(app).start() if pulled else None
        with (
            server,
            (announce(server.url, settings) if announce else contextlib.nullcontext()),
            contextlib.ExitStack() as stack,
        ):
            if worker is not None:
                stack.callback(worker.stop)
            ledger = Ledger(
                app,
                watch,
                server.url,
                project=project,
                emulator_host=settings[ENV.PUBSUB_EMULATOR_HOST],
                on_recovery=report_recovery,
            ).start()
            print(
                f"queuerun dev: app {app.name!r} on the emulators at {server.url} "
                f"({len(topology)} queues: {', '.join(s.name for s in app.specs)}), emulator project {project!r}",
                flush=True,
            )
            print(
                "queuerun dev: queuerun commands run from this folder use these emulators; elsewhere, "
                "or for your own code, run:",
                flush=True,
            )
            for line in export_lines(settings):
                print(f"  {line}", flush=True)
            try:
                with contextlib.suppress(KeyboardInterrupt):
                    threading.Event().wait()
            finally:
                ledger.stop()
    except KeyboardInterrupt:
        pass
    finally:
        for emulator in started:
            emulators.stop(emulator)


def report_recovery(recovery: Recovery) -> None:
    """Log a job this server delivered itself because the emulator had dropped it."""
    answered = f"answered {recovery.status}" if recovery.status else "not answered: the server is stopping"
    log.warning(
        "the Pub/Sub emulator did not deliver this job again: the dev server delivered it itself",
        extra={
            "queue": recovery.queue,
            "job_id": recovery.job_id,
            "attempt": recovery.attempt or None,
            "status": "RECOVERED",
            "error": (
                "the emulator drops messages after failed pushes (production Pub/Sub does not); "
                f"delivered from the dev server's ledger, same job id, {answered}"
            ),
        },
    )


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
