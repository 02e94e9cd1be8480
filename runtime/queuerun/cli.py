"""The ``queuerun`` command: dev server, push, dead letters, queue table, manifest, production server.

Every command that needs the app takes it the same way: ``MODULE:APP`` as a positional argument
(recognised by its ``module:attribute`` shape, wherever it stands among the positionals) or
``--app MODULE:APP``, default ``$QUEUERUN_APP``. Backends come from the usual settings; the embedded
backend keeps its state in a SQLite file (default ``.queuerun/<app>.sqlite3``) so ``push`` and
``dlq`` see what ``dev`` runs. While a ``queuerun dev`` of the app runs from this folder (also with
``--emulators``), ``push`` and ``dlq`` act on its queues (:mod:`queuerun.running_dev`).

Every command takes ``--env-file FILE`` (default ``$QUEUERUN_ENV_FILE``): the settings of a
deployed app (``pulumi stack output queuerun_env --json > prod.json``), which override the
environment for that command, so ``queuerun dlq list QUEUE --env-file prod.json`` reads that
deployment's project, Firestore database and regional Pub/Sub endpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import running_dev
from .env_file import read_env_file
from .errors import QueueRunError
from .settings import ENV

if TYPE_CHECKING:
    from .app import App
    from .backends.base import Backend
    from .backends.embedded import EmbeddedBackend

EXIT_USAGE = 2
APP_SHAPE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")  # module:attribute; no queue name has a colon


class CliError(QueueRunError):
    """A command could not do what it was asked; printed without a traceback."""


def default_state_file(app_name: str) -> Path:
    return Path.cwd() / ".queuerun" / f"{app_name}.sqlite3"


def app_target(args: argparse.Namespace) -> str | None:
    """The app named positionally or by ``--app`` (they must agree), else None (``QUEUERUN_APP``)."""
    positional = getattr(args, "target", None)
    flag = getattr(args, "app", None)
    if positional and flag and positional != flag:
        raise CliError(f"two apps given: {positional!r} and --app {flag!r}; give one")
    return positional or flag


def split_app(values: list[str]) -> tuple[str | None, list[str]]:
    """Take a ``module:attribute`` out of a command's positionals (it may stand anywhere among them)."""
    for i, value in enumerate(values):
        if APP_SHAPE.match(value):
            return value, values[:i] + values[i + 1 :]
    return None, values


def load(target: str | None, env_file: Mapping[str, str] | None = None) -> App:
    """The App named by ``target`` or ``QUEUERUN_APP``; ``env_file`` settings win over the app's own."""
    from .server.serve import load_app

    if str(Path.cwd()) not in sys.path:  # "examples.shop.app:app" from the project folder
        sys.path.insert(0, str(Path.cwd()))
    if not target and not os.environ.get(ENV.APP):
        raise CliError(f"which app? give MODULE:APP (e.g. shop:app), --app MODULE:APP, or set {ENV.APP}")
    app = load_app(target)
    if env_file:
        # The app may have read its settings already, or carry a mapping of its own: the user named
        # a deployment explicitly, so its settings go on top of whichever the app had.
        source = app._settings_source
        base = source if isinstance(source, Mapping) else os.environ
        app.use_settings({**base, **env_file})
    return app


@contextlib.contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """``os.environ`` with ``values`` on top for one command (subprocesses such as ``dev``'s inherit them)."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _env_file(args: argparse.Namespace) -> dict[str, str]:
    values: dict[str, str] = getattr(args, "env_values", {})
    return values


def backend_for(app: App, state_file: str | None) -> Backend:
    """The app's backend per settings; embedded gets the durable file the dev server uses.

    With the default embedded settings and no ``--state``, a ``queuerun dev`` of this app running
    from this folder decides: its state file, or the emulators it runs on (``--emulators``).
    """
    if app.settings.backend == "embedded":
        from .backends.embedded import EmbeddedBackend

        running = None if state_file or app.settings.state_file else running_dev.find(app.name)
        if running is not None and running.on_emulators:
            app.use_settings({**os.environ, **running.settings})
            return app.backend
        if state_file or app.settings.state_file:
            path = Path(state_file or app.settings.state_file or "")
        elif running is not None and running.state_file:
            path = Path(running.state_file)
        else:
            path = default_state_file(app.name)
            path.parent.mkdir(parents=True, exist_ok=True)
        backend: Backend = EmbeddedBackend(state_file=path)
        app.use_backend(backend)
        return backend
    return app.backend


# -- commands -----------------------------------------------------------------------------------


def cmd_queues(args: argparse.Namespace) -> int:
    app = load(app_target(args), _env_file(args))
    rows = [("queue", "type", "timeout", "attempts", "backoff", "dedupe", "http", "delivery")]
    for s in app.specs:
        rows.append(
            (
                s.name,
                "fifo" if s.fifo else "standard",
                f"{s.timeout:g}s",
                str(s.max_attempts),
                f"{s.min_backoff:g}-{s.max_backoff:g}s",
                f"{s.dedupe_window:g}s",
                ("public" if s.public else "yes") if s.http else "no",
                s.delivery,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_manifest(args: argparse.Namespace) -> int:
    print(load(app_target(args), _env_file(args)).manifest().to_json())
    return 0


def _payload(args: argparse.Namespace) -> Any:
    given = [x is not None for x in (args.payload, args.text, args.file)]
    if sum(given) != 1:
        raise CliError("give exactly one payload: JSON (argument, or - for stdin), --text TEXT or --file PATH")
    if args.text is not None:
        return args.text
    if args.file is not None:
        try:
            return Path(args.file).read_bytes()
        except OSError as exc:
            raise CliError(f"--file {args.file!r}: {exc.strerror}") from None
    raw = sys.stdin.read() if args.payload == "-" else args.payload
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise CliError(f"payload is not valid JSON ({exc}); use --text for plain text") from None


def _positionals(args: argparse.Namespace, names: Sequence[str], required: int) -> list[str | None]:
    """The command's positionals after taking out the app (see :func:`split_app`)."""
    target, rest = split_app(list(args.positionals))
    if target is not None:
        args.target = target
    if len(rest) < required or len(rest) > len(names):
        usage = " ".join(n if i < required else f"[{n}]" for i, n in enumerate(names))
        raise CliError(f"expected [MODULE:APP] {usage}, got {' '.join(args.positionals) or 'nothing'}")
    return [*rest, *[None] * (len(names) - len(rest))]


def cmd_push(args: argparse.Namespace) -> int:
    queue_name, args.payload = _positionals(args, ["QUEUE", "PAYLOAD"], 1)
    app = load(app_target(args), _env_file(args))
    payload = _payload(args)
    queue = app.queues(str(queue_name))  # present: _positionals required it
    if queue.fifo and args.group is None:
        raise CliError(f"queue {queue.name!r} is FIFO: pass --group GROUP (the jobs of one group run in order)")
    if not queue.fifo and args.group is not None:
        raise CliError(f"queue {queue.name!r} is a standard queue: --group works with FIFO queues (names ending .fifo)")
    if args.group is not None:
        queue = queue.group(args.group)
    if args.dedupe is not None:
        queue = queue.dedupe(args.dedupe)
    backend = backend_for(app, args.state)
    earlier = _earlier_job(backend, queue, payload, args.user)
    job_id = queue.push(payload, user=args.user)
    print(job_id)
    if earlier is not None and earlier == job_id:
        same = "dedupe id" if args.dedupe is not None else "payload (FIFO queues dedupe on it unless --dedupe)"
        print(
            f"(duplicate of job {job_id}, pushed with the same {same} within the last "
            f"{queue.spec.dedupe_window:g} s: not queued again)",
            file=sys.stderr,
        )
    return 0


def _earlier_job(backend: Backend, queue: Any, payload: Any, user: str | None) -> str | None:
    """The job a push of ``payload`` would be a duplicate of, if its dedupe id was used in the window."""
    from .dedupe import dedupe_key

    job = queue._job(payload, None, user)
    if job.dedupe_id is None:
        return None
    project, app = backend.dedupe_scope()
    with contextlib.suppress(Exception):  # only decides the wording of the answer
        record = backend.dedupe._get(dedupe_key(queue.name, job.group_id, job.dedupe_id, app=app, project=project))
        if record is not None and record.expires_at > time.time():
            return record.job_id
    return None


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return json.dumps(value, default=repr) if not isinstance(value, str) else repr(value)


def _one_job_operations(backend: Backend, action: str) -> EmbeddedBackend:
    """The embedded backend, which can replay or discard single dead letters; others refuse clearly."""
    from .backends.embedded import EmbeddedBackend

    if not isinstance(backend, EmbeddedBackend):
        raise CliError(
            f"dlq {action} of one job or purge works on the embedded backend only, not {backend.name!r}; "
            "'dlq replay QUEUE' (every dead letter) works on both"
        )
    return backend


def _confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise CliError(f"{question} Refusing without a terminal to ask on: pass --yes")
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def cmd_dlq(args: argparse.Namespace) -> int:
    args.queue, args.job_id = _positionals(args, ["QUEUE", "JOB_ID"], 1)
    if args.action in ("show", "discard") and not args.job_id:
        hint = "; 'dlq purge QUEUE' discards them all" if args.action == "discard" else ""
        raise CliError(f"give the job id of the dead letter{hint}")
    app = load(app_target(args), _env_file(args))
    app.spec(args.queue)  # unknown queue: a clear error before touching the backend
    backend = backend_for(app, args.state)
    if args.action in ("replay", "discard") and args.job_id:
        embedded = _one_job_operations(backend, args.action)
        if args.job_id not in {d.job_id for d in embedded.dead_letters(args.queue)}:
            raise CliError(f"no dead letter {args.job_id!r} in queue {args.queue!r}")
        if args.action == "replay":
            embedded.replay(args.queue, job_id=args.job_id)
            print(f"replayed job {args.job_id} into {args.queue!r}")
        else:
            embedded.discard(args.queue, args.job_id)
            print(f"discarded dead letter {args.job_id} of {args.queue!r}")
        return 0
    if args.action == "purge":
        embedded = _one_job_operations(backend, "purge")
        count = len(embedded.dead_letters(args.queue))
        if not count:
            print(f"no dead letters in {args.queue!r}")
            return 0
        if not args.yes and not _confirm(f"Delete all {count} dead letter(s) of {args.queue!r} for good?"):
            print("nothing deleted")
            return 1
        print(f"discarded {embedded.discard(args.queue)} dead letter(s) of {args.queue!r}")
        return 0
    if args.action == "replay":
        letters = backend.dead_letters(args.queue)
        if not letters:
            print(f"no dead letters in {args.queue!r}")
            return 0
        ids = backend.replay(args.queue, _progress)
        print(f"replayed {len(ids)} job(s) into {args.queue!r}, in their original order")
        return 0
    letters = backend.dead_letters(args.queue)
    if args.action == "list":
        if not letters:
            print(f"no dead letters in {args.queue!r}")
        for d in letters:
            group = f" group={d.group_id}" if d.group_id is not None else ""
            mark = f" UNDECODABLE ({d.undecodable})" if d.undecodable else ""
            print(f"{d.job_id}{group} attempts={d.attempts} queued={d.queued_at.isoformat()} error={d.error!r}{mark}")
        return 0
    match = [d for d in letters if d.job_id == args.job_id]
    if not match:
        raise CliError(f"no dead letter {args.job_id!r} in queue {args.queue!r}")
    d = match[0]
    for key, value in (
        ("job_id", d.job_id),
        ("queue", d.queue),
        ("group_id", d.group_id),
        ("attempts", d.attempts),
        ("queued_at", d.queued_at.isoformat()),
        ("user", d.user),
        ("params", dict(d.params)),
        ("error", d.error),
        *((("undecodable", d.undecodable),) if d.undecodable else ()),
        ("payload", _show(d.payload)),
    ):
        print(f"{key:>11}: {value}")
    if d.traceback:  # where the backend recorded one (older dead letters have none)
        print(f"  traceback:\n{d.traceback}")
    return 0


def _progress(done: int, total: int, width: int = 30) -> None:
    """A progress bar on stderr, redrawn in place on a terminal."""
    filled = width * done // max(total, 1)
    end = "\n" if done >= total or not sys.stderr.isatty() else ""
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True)


def cmd_dev(args: argparse.Namespace) -> int:
    from .devserver import bind, run_dev

    target = app_target(args)
    app = load(target, _env_file(args))  # fail fast on a bad target, before uvicorn starts
    target = target or os.environ[ENV.APP]
    running = running_dev.find(app.name)
    if running is not None:
        raise CliError(
            f"queuerun dev of app {app.name!r} already runs from this folder (pid {running.pid}, {running.url}); "
            "stop it first"
        )
    if args.emulators:
        from .emulator_dev import run_on_emulators

        bind(args.host, args.port).close()  # a port in use fails before the emulators start

        def announce(url: str, settings: Mapping[str, str]) -> contextlib.AbstractContextManager[Path]:
            return running_dev.announce(running_dev.RunningDev(app.name, os.getpid(), url, settings=dict(settings)))

        run_on_emulators(
            target,
            host=args.host,
            port=args.port,
            workdir=Path.cwd() / ".queuerun" / "emulators",
            announce=announce,
        )
        return 0
    if args.state or app.settings.state_file:
        state = Path(args.state or app.settings.state_file or "").absolute()
    else:
        state = default_state_file(app.name)
        state.parent.mkdir(parents=True, exist_ok=True)
    from .backends.embedded_store import JobStore

    probe = JobStore(state)  # a broken or locked state file fails here, in one line, before the server starts
    try:
        probe.recover()
    finally:
        probe.close()
    url = f"http://{args.host}:{args.port}"
    # uvicorn re-raises the SIGTERM it caught once it has stopped: unwind (removing the record) instead of dying.
    signal.signal(signal.SIGTERM, _interrupted)
    with running_dev.announce(running_dev.RunningDev(app.name, os.getpid(), url, state_file=str(state))):
        run_dev(target, host=args.host, port=args.port, state_file=str(state), reload=not args.no_reload)
    return 0


def _interrupted(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_worker(args: argparse.Namespace) -> int:
    from .server.logs import configure_logging
    from .worker import run_worker

    app = load(app_target(args), _env_file(args))
    configure_logging()
    run_worker(app, queues=args.queue or None)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .devserver import bind
    from .server.serve import serve

    app = load(app_target(args), _env_file(args))
    # serve()'s defaults, checked here so a port in use is one line, not uvicorn's exit.
    host = args.host or ("0.0.0.0" if os.environ.get(ENV.CLOUD_RUN_SERVICE) else "127.0.0.1")
    port = args.port if args.port is not None else int(os.environ.get("PORT", "8080"))
    bind(host, port).close()
    serve(app, host=host, port=port)
    return 0


def cmd_init(args: argparse.Namespace) -> int:
    from .scaffold import scaffold

    created = scaffold(Path(args.directory), args.name)
    for path in created:
        print(f"created {path}")
    print(f"next: cd {args.directory} && python -m pytest && queuerun dev app:app")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    # Imported here: the runtime must import without Pulumi (Cloud Run images do not ship it).
    try:
        from queuerun_gcp.preview import run_cli
    except ImportError as exc:
        print(f"queuerun preview: needs queuerun_gcp, pulumi and pulumi-gcp installed ({exc})", file=sys.stderr)
        return EXIT_USAGE
    return run_cli(args.program_dir, stack=args.stack, config=args.config)


ENV_FILE_HELP = (
    "settings of a deployed app, overriding the environment: a JSON object "
    f"(pulumi stack output queuerun_env --json) or KEY=VALUE lines (default: ${ENV.ENV_FILE})"
)
APP_HELP = f"the App as module:attribute, e.g. shop:app (default: ${ENV.APP})"


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    for dist in ("queuerun", "queuerun-gcp"):
        with contextlib.suppress(PackageNotFoundError):
            return dist_version(dist)
    return "unknown"


def parser() -> argparse.ArgumentParser:
    # Accepted before or after the command; SUPPRESS keeps a subcommand's absent option from
    # overwriting the one given before it.
    env_file = argparse.ArgumentParser(add_help=False)
    env_file.add_argument("--env-file", metavar="FILE", default=argparse.SUPPRESS, help=ENV_FILE_HELP)
    top = argparse.ArgumentParser(
        prog="queuerun",
        description="Job queues on Google Cloud: develop, push, inspect.",
        epilog="example: queuerun dev shop:app    (then, in another terminal: queuerun push emails '{}' shop:app)",
    )
    top.add_argument("--version", action="version", version=f"queuerun {version()}")
    top.add_argument("--env-file", metavar="FILE", default=None, help=ENV_FILE_HELP)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def sub_parser(name: str, example: str, **options: Any) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            parents=[env_file],
            epilog=f"example: {example}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **options,
        )

    def app_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--app", metavar="MODULE:APP", help=APP_HELP)

    def app_positional(p: argparse.ArgumentParser) -> None:
        p.add_argument("target", metavar="MODULE:APP", nargs="?", help=APP_HELP)
        app_option(p)

    def state_option(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--state",
            metavar="FILE",
            help="embedded backend state file (default: that of the queuerun dev running here, "
            "else .queuerun/<app>.sqlite3)",
        )

    p = sub_parser(
        "dev",
        "queuerun dev shop:app --port 8000",
        help="run the app locally: HTTP endpoints, workers, reload on change",
        description="Run the app locally: HTTP endpoints under /queues, /_ws, workers, a line per job attempt.",
    )
    app_positional(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default: 8080)")
    p.add_argument("--state", metavar="FILE", help="state file (default: .queuerun/<app>.sqlite3)")
    p.add_argument("--no-reload", action="store_true", help="do not restart on code changes (default: reload)")
    p.add_argument(
        "--emulators",
        action="store_true",
        help="run on the Pub/Sub and Firestore emulators (the production code path; no reload; default: off)",
    )
    p.set_defaults(func=cmd_dev)

    p = sub_parser(
        "push",
        "queuerun push charge.fifo '{\"order_id\": \"o-2\"}' --group o-2 shop:app",
        help="queue one job, print its id",
        description="Queue one job and print its id. Payload: JSON (or - for stdin), --text or --file.",
    )
    p.add_argument("positionals", nargs="*", metavar="[MODULE:APP] QUEUE [PAYLOAD]", help=(
        f"the app (default: ${ENV.APP}), the queue, and the JSON payload or - to read it from stdin"
    ))
    p.add_argument("--text", help="plain-text payload (default: none)")
    p.add_argument("--file", help="payload: the bytes of this file (default: none)")
    p.add_argument("--group", help="group id, required by FIFO queues (default: none)")
    p.add_argument("--dedupe", help="dedupe id (default: none; FIFO queues dedupe on the payload)")
    p.add_argument("--user", help="user id the job carries as meta.user (default: none)")
    app_option(p)
    state_option(p)
    p.set_defaults(func=cmd_push)

    p = sub_parser(
        "dlq",
        "queuerun dlq replay emails 3f2a9c... shop:app",
        help="dead letters: list, show, replay, discard, purge",
        description="Dead letters of one queue. show/discard need a job id; replay takes one or replays all.",
    )
    p.add_argument("action", choices=["list", "show", "replay", "discard", "purge"])
    p.add_argument("positionals", nargs="*", metavar="[MODULE:APP] QUEUE [JOB_ID]", help=(
        "the app, the queue, and the dead letter's job id (show/discard: required; replay: only this job, "
        "default: every dead letter)"
    ))
    p.add_argument("--yes", "-y", action="store_true", help="purge: do not ask for confirmation (default: ask)")
    app_option(p)
    state_option(p)
    p.set_defaults(func=cmd_dlq)

    p = sub_parser("queues", "queuerun queues shop:app", help="table of the declared queues and their settings")
    app_positional(p)
    p.add_argument("--state", help=argparse.SUPPRESS)  # accepted for symmetry with push/dlq; unused
    p.set_defaults(func=cmd_queues)

    p = sub_parser(
        "manifest",
        "queuerun manifest shop:app > manifest.json",
        help="print the app's queue declarations as JSON (for infra repos)",
    )
    app_positional(p)
    p.set_defaults(func=cmd_manifest)

    p = sub_parser("serve", "queuerun serve shop:app --port 8080", help="the production server (what Cloud Run runs)")
    app_positional(p)
    p.add_argument("--host", help="default: 0.0.0.0 on Cloud Run, else 127.0.0.1")
    p.add_argument("--port", type=int, help="default: $PORT, else 8080")
    p.set_defaults(func=cmd_serve)

    p = sub_parser(
        "worker",
        "queuerun worker shop:app --queue ledger.fifo",
        help="consume the app's delivery='pull' queues (what the Cloud Run worker pool runs)",
    )
    app_positional(p)
    p.add_argument("--queue", action="append", metavar="QUEUE", help="only this pull queue (repeatable; default: all)")
    p.set_defaults(func=cmd_worker)

    p = sub_parser(
        "init",
        "queuerun init shop",
        help="scaffold an app: queues, a test using app.local(), an infra/ Pulumi program, .gcloudignore",
    )
    p.add_argument("name", help="app name: 1-20 lowercase letters, digits and -; also the Python package's name")
    p.add_argument("directory", nargs="?", default=".", help="where to create it (default: the current folder)")
    p.set_defaults(func=cmd_init)

    p = sub_parser(
        "preview",
        "queuerun preview infra --stack dev",
        help="run a Pulumi program offline (mocks, no cloud): resources, warnings, problems",
    )
    p.add_argument("program_dir", metavar="PROGRAM_DIR", help="directory of the Pulumi program (or below it)")
    p.add_argument("--stack", "-s", default="dev", help="stack whose Pulumi.<stack>.yaml config to use (default: dev)")
    p.add_argument(
        "--config",
        "-c",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config value, repeatable (default: the stack file only)",
    )
    p.set_defaults(func=cmd_preview)
    return top


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Like ``parse_args``, but positionals after options (``push Q '{}' --group g shop:app``) still count."""
    top = parser()
    args, extra = top.parse_known_args(argv)
    if extra and hasattr(args, "positionals") and not any(e.startswith("-") and e != "-" for e in extra):
        args.positionals = [*args.positionals, *extra]
    elif extra:
        top.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        path = args.env_file or os.environ.get(ENV.ENV_FILE)
        args.env_values = read_env_file(path) if path else {}
        with environment(args.env_values):
            code: int = args.func(args)
    except QueueRunError as exc:
        print(f"queuerun {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
