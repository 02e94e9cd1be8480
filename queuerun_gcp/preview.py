"""``queuerun preview PROGRAM_DIR``: run a Pulumi program offline, under the mocks, and report on it.

No Pulumi CLI, no engine, no cloud: the program's ``__main__.py`` runs with the real SDKs under
``queuerun_gcp.mocks``, with the config of ``Pulumi.<stack>.yaml`` and ``--config`` overrides. The
report lists every resource (type, name, parent), every warning the program logged, and every
problem (the ``ConfigurationError`` problems a component refused with, and logged errors).

Exit status: 0 built with no problem, 1 problems or the program raised, 2 bad usage.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # a dependency of pulumi; no stubs installed

from queuerun.errors import ConfigurationError

from .mocks import Res, run_program

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE = 0, 1, 2
DEFAULT_CONFIG = {"gcp:project": "preview-project", "gcp:region": "us-central1"}
SECRET = "<secret>"
PROJECT_FILES = ("Pulumi.yaml", "Pulumi.yml")
STACK_TYPE = "pulumi:pulumi:Stack"


@dataclass(frozen=True)
class Program:
    """A Pulumi program as its project file describes it, with the config one stack gives it."""

    project_file: Path
    name: str
    main_dir: Path
    stack: str
    config: dict[str, str]
    secret_keys: tuple[str, ...] = ()


@dataclass
class PreviewReport:
    """What the program registered, logged and raised; ``error`` is an exception other than a refusal."""

    program: Program
    resources: list[Res] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and self.error is None

    def render(self) -> str:
        """The report as ``queuerun preview`` prints it."""
        p = self.program
        lines = [f"Program {_shown(p.main_dir)} (project {p.name}, stack {p.stack}): {len(self.resources)} resources"]
        names = {r.urn: f"{r.type} {r.name}" for r in self.resources}
        type_width = max((len(r.type) for r in self.resources), default=0)
        name_width = max((len(r.name) for r in self.resources), default=0)
        for r in self.resources:
            parent = ""
            if r.parent_type and r.parent_type != STACK_TYPE:  # the stack is everyone's root: not worth a column
                parent = f"(parent {names.get(r.parent or '', r.parent_type)})"
            lines.append(f"  {r.type:<{type_width}}  {r.name:<{name_width}}  {parent}".rstrip())
        lines.append(f"Warnings ({len(self.warnings)}):" + ("" if self.warnings else " none"))
        lines += [f"  - {w}" for w in self.warnings]
        lines.append(f"Problems ({len(self.problems)}):" + ("" if self.problems else " none"))
        lines += [f"  - {problem}" for problem in self.problems]
        if self.error is not None:
            lines.append(f"Error: the program raised {self.error}")
        return "\n".join(lines) + "\n"


def preview(program_dir: Path, *, stack: str = "dev", config: Mapping[str, str] | None = None) -> PreviewReport:
    """Run the program in ``program_dir`` under the mocks; ConfigurationError if it cannot be found or read."""
    program = load_program(program_dir, stack=stack, overrides=config or {})
    # Warnings are in the report; the engine's log would print them a second time.
    quiet = logging.getLogger(f"{__name__}.engine")
    quiet.propagate = False
    if not quiet.handlers:
        quiet.addHandler(logging.NullHandler())
    # The program's own prints go to stderr, so stdout is the report alone.
    with contextlib.redirect_stdout(sys.stderr):
        graph = run_program(
            program.main_dir,
            config=program.config,
            secret_keys=program.secret_keys,
            project=program.name,
            stack=stack,
            catch=True,
            logger=quiet,
        )
    report = PreviewReport(program, resources=graph.resources, warnings=list(graph.warnings))
    report.problems += graph.errors
    if isinstance(graph.error, ConfigurationError):
        report.problems += graph.error.problems
    elif graph.error is not None:
        report.error = _describe(graph.error, program.project_file.parent)
    return report


def load_program(program_dir: Path, *, stack: str, overrides: Mapping[str, str]) -> Program:
    """Find the project file (in ``program_dir`` or above it, as the Pulumi CLI does) and the stack's config."""
    if not program_dir.is_dir():
        raise ConfigurationError(f"{program_dir}: no such directory")
    project_file = _find_project_file(program_dir.resolve())
    settings = _read_yaml(project_file)
    name = settings.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"{project_file}: no project name (name:)")
    main_dir = (project_file.parent / str(settings.get("main") or ".")).resolve()
    if not (main_dir / "__main__.py").is_file():
        raise ConfigurationError(f"{project_file}: main {_shown(main_dir)} has no __main__.py")

    config: dict[str, str] = {}
    secrets: set[str] = set()
    for key, declared in (settings.get("config") or {}).items():
        value = declared.get("value", declared.get("default")) if isinstance(declared, dict) else declared
        if value is not None:
            config[_namespaced(str(key), name)] = _config_value(value)
    stack_dir = project_file.parent / str(settings.get("stackConfigDir") or ".")
    stack_file = stack_dir / f"Pulumi.{stack}.yaml"
    if stack_file.is_file():
        for key, value in (_read_yaml(stack_file).get("config") or {}).items():
            full = _namespaced(str(key), name)
            if isinstance(value, dict) and "secure" in value:
                config[full] = SECRET
                secrets.add(full)
            else:
                config[full] = _config_value(value)
    for key, value in overrides.items():
        config[_namespaced(key, name)] = value
    for key, value in DEFAULT_CONFIG.items():
        config.setdefault(key, value)
    return Program(project_file, name, main_dir, stack, config, tuple(sorted(secrets)))


def _find_project_file(start: Path) -> Path:
    for directory in (start, *start.parents):
        for filename in PROJECT_FILES:
            if (directory / filename).is_file():
                return directory / filename
    raise ConfigurationError(f"{_shown(start)}: no Pulumi.yaml in it or any directory above it")


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigurationError(f"{path}: cannot read it ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigurationError(f"{path}: not a YAML mapping")
    return data


def _namespaced(key: str, project: str) -> str:
    # Pulumi files a key without a namespace under the project's own name.
    return key if ":" in key else f"{project}:{key}"


def _config_value(value: Any) -> str:
    """Config as the SDK receives it: strings as they are, YAML scalars as Pulumi spells them, objects as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)


def _describe(exc: BaseException, project_dir: Path) -> str:
    """``Type: message (at file:line)``, at the innermost frame in the project, else the innermost frame."""
    frames = traceback.extract_tb(exc.__traceback__)
    own = [f for f in frames if Path(f.filename).resolve().is_relative_to(project_dir)]
    where = (own or frames)[-1:] if frames else []
    at = f" (at {_shown(Path(where[0].filename))}:{where[0].lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"


def _shown(path: Path) -> str:
    """The path relative to the working directory when it is below it."""
    with contextlib.suppress(ValueError):
        return str(path.resolve().relative_to(Path.cwd())) or "."
    return str(path)


def run_cli(program_dir: str, *, stack: str = "dev", config: Sequence[str] = (), prog: str = "queuerun preview") -> int:
    """Preview, print the report, return the exit status; ``config`` items are ``KEY=VALUE``."""
    try:
        overrides = dict(_pair(item) for item in config)
        report = preview(Path(program_dir), stack=stack, config=overrides)
    except ConfigurationError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(report.render())
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def _pair(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigurationError(f"--config {item!r}: expected KEY=VALUE, e.g. gcp:project=my-project")
    return key, value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments, for ``python -m queuerun_gcp.preview``."""
    parser.add_argument("program_dir", metavar="PROGRAM_DIR", help="directory of the Pulumi program (or below it)")
    parser.add_argument("--stack", "-s", default="dev", help="stack whose Pulumi.<stack>.yaml config to use")
    parser.add_argument(
        "--config", "-c", action="append", default=[], metavar="KEY=VALUE", help="config value (repeatable)"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m queuerun_gcp.preview PROGRAM_DIR [--stack S] [--config KEY=VALUE ...]``."""
    parser = argparse.ArgumentParser(
        prog="python -m queuerun_gcp.preview", description="Run a Pulumi program offline under mocks and report on it."
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_cli(args.program_dir, stack=args.stack, config=args.config, prog=parser.prog)


if __name__ == "__main__":
    sys.exit(main())
