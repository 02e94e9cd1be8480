"""The ``queuerun`` command: dev server, push, dead letters, queue table, manifest, production server.

Every command that needs the app takes ``--app module:attribute`` (default: ``$QUEUERUN_APP``).
Backends come from the usual settings; the embedded backend keeps its state in a SQLite file
(default ``.queuerun/<app>.sqlite3``) so ``push`` and ``dlq`` see what ``dev`` runs.

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
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .env_file import read_env_file
from .errors import QueueRunError
from .settings import ENV

if TYPE_CHECKING:
    from .app import App
    from .backends.base import Backend

EXIT_USAGE = 2


class CliError(QueueRunError):
    """A command could not do what it was asked; printed without a traceback."""


def default_state_file(app_name: str) -> Path:
    return Path.cwd() / ".queuerun" / f"{app_name}.sqlite3"


def load(target: str | None, env_file: Mapping[str, str] | None = None) -> App:
    """The App named by ``target`` or ``QUEUERUN_APP``; ``env_file`` settings win over the app's own."""
    from .server.serve import load_app

    if str(Path.cwd()) not in sys.path:  # "examples.shop.app:app" from the project folder
        sys.path.insert(0, str(Path.cwd()))
    if not target and not os.environ.get(ENV.APP):
        raise CliError(f"which app? pass --app module:attribute or set {ENV.APP}")
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
    """The app's backend per settings; embedded gets the durable file the dev server uses."""
    if app.settings.backend == "embedded":
        from .backends.embedded import EmbeddedBackend

        path = Path(state_file or app.settings.state_file or default_state_file(app.name))
        path.parent.mkdir(parents=True, exist_ok=True)
        backend: Backend = EmbeddedBackend(state_file=path)
        app.use_backend(backend)
        return backend
    return app.backend


# -- commands -----------------------------------------------------------------------------------


def cmd_queues(args: argparse.Namespace) -> int:
    app = load(args.app, _env_file(args))
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
    print(load(args.target, _env_file(args)).manifest().to_json())
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


def cmd_push(args: argparse.Namespace) -> int:
    app = load(args.app, _env_file(args))
    payload = _payload(args)
    queue = app.queues(args.queue)
    if args.group is not None:
        queue = queue.group(args.group)
    if args.dedupe is not None:
        queue = queue.dedupe(args.dedupe)
    backend_for(app, args.state)
    print(queue.push(payload, user=args.user))
    return 0


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    return json.dumps(value, default=repr) if not isinstance(value, str) else repr(value)


def cmd_dlq(args: argparse.Namespace) -> int:
    app = load(args.app, _env_file(args))
    app.spec(args.queue)  # unknown queue: a clear error before touching the backend
    backend = backend_for(app, args.state)
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
    if d.traceback:
        print(f"  traceback:\n{d.traceback}")
    return 0


def _progress(done: int, total: int, width: int = 30) -> None:
    """A progress bar on stderr, redrawn in place on a terminal."""
    filled = width * done // max(total, 1)
    end = "\n" if done >= total or not sys.stderr.isatty() else ""
    print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True)


def cmd_dev(args: argparse.Namespace) -> int:
    from .devserver import run_dev

    app = load(args.target, _env_file(args))  # fail fast on a bad target, before uvicorn starts
    if args.emulators:
        from .emulator_dev import run_on_emulators

        run_on_emulators(args.target, host=args.host, port=args.port, workdir=Path.cwd() / ".queuerun" / "emulators")
        return 0
    state = args.state or str(default_state_file(app.name))
    Path(state).parent.mkdir(parents=True, exist_ok=True)
    run_dev(
        args.target,
        host=args.host,
        port=args.port,
        state_file=state,
        reload=not args.no_reload,
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server.serve import serve

    serve(load(args.target, _env_file(args)), host=args.host, port=args.port)
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
    f"(pulumi stack output queuerun_env --json) or KEY=VALUE lines (default ${ENV.ENV_FILE})"
)


def parser() -> argparse.ArgumentParser:
    # Accepted before or after the command; SUPPRESS keeps a subcommand's absent option from
    # overwriting the one given before it.
    env_file = argparse.ArgumentParser(add_help=False)
    env_file.add_argument("--env-file", metavar="FILE", default=argparse.SUPPRESS, help=ENV_FILE_HELP)
    top = argparse.ArgumentParser(prog="queuerun", description="Job queues on Google Cloud: develop, push, inspect.")
    top.add_argument("--env-file", metavar="FILE", default=None, help=ENV_FILE_HELP)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def sub_parser(name: str, **options: Any) -> argparse.ArgumentParser:
        return commands.add_parser(name, parents=[env_file], **options)

    def with_app(p: argparse.ArgumentParser) -> None:
        p.add_argument("--app", help=f"module:attribute of the App (default ${ENV.APP})")
        p.add_argument("--state", help="embedded backend state file (default .queuerun/<app>.sqlite3)")

    p = sub_parser("dev", help="run the app locally: HTTP endpoints, workers, reload on change")
    p.add_argument("target", metavar="MODULE:APP")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--state", help="state file (default .queuerun/<app>.sqlite3)")
    p.add_argument("--no-reload", action="store_true", help="do not restart on code changes")
    p.add_argument(
        "--emulators",
        action="store_true",
        help="run on the Pub/Sub and Firestore emulators (the production code path; no reload)",
    )
    p.set_defaults(func=cmd_dev)

    p = sub_parser("push", help="queue one job")
    p.add_argument("queue")
    p.add_argument("payload", nargs="?", help="JSON payload, or - to read JSON from stdin")
    p.add_argument("--text", help="plain-text payload")
    p.add_argument("--file", help="payload: the bytes of this file")
    p.add_argument("--group", help="group id (FIFO queues)")
    p.add_argument("--dedupe", help="dedupe id")
    p.add_argument("--user", help="user id the job carries (meta.user)")
    with_app(p)
    p.set_defaults(func=cmd_push)

    p = sub_parser("dlq", help="dead letters: list, show, replay")
    p.add_argument("action", choices=["list", "show", "replay"])
    p.add_argument("queue")
    p.add_argument("job_id", nargs="?", help="with show: the dead letter's job id")
    with_app(p)
    p.set_defaults(func=cmd_dlq)

    p = sub_parser("queues", help="table of the declared queues and their settings")
    with_app(p)
    p.set_defaults(func=cmd_queues)

    p = sub_parser("manifest", help="print the app's queue declarations as JSON (for infra repos)")
    p.add_argument("target", metavar="MODULE:APP")
    p.set_defaults(func=cmd_manifest)

    p = sub_parser("serve", help="the production server (what Cloud Run runs)")
    p.add_argument("target", metavar="MODULE:APP", nargs="?", help=f"default ${ENV.APP}")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_serve)

    p = sub_parser("preview", help="run a Pulumi program offline (mocks, no cloud): resources, warnings, problems")
    p.add_argument("program_dir", metavar="PROGRAM_DIR", help="directory of the Pulumi program (or below it)")
    p.add_argument("--stack", "-s", default="dev", help="stack whose Pulumi.<stack>.yaml config to use")
    p.add_argument("--config", "-c", action="append", default=[], metavar="KEY=VALUE", help="config value (repeatable)")
    p.set_defaults(func=cmd_preview)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "dlq" and args.action == "show" and not args.job_id:
        print("queuerun dlq show: give the job id of the dead letter", file=sys.stderr)
        return EXIT_USAGE
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
