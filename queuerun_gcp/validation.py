"""Construction-time checks of :class:`QueueRunAppArgs`, as data, reporting every problem at once.

pulumi-gcp validates only shapes, so the ranges Google Cloud enforces at deploy time are checked
here. Values not known yet (``pulumi.Output``) are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final

import pulumi

from queuerun import names
from queuerun.errors import ConfigurationError
from queuerun.manifest import Manifest, load_manifest
from queuerun.settings import ENV
from queuerun.spec import QueueSpec, spec_problems, whole_number_problem

from .args import QueueRunAppArgs
from .constants import ACCESS_CHOICES, CLOUD_RUN_TIMEOUT_MAX, DEFAULT_REQUEST_TIMEOUT
from .source import SourceBundle, source_bundle
from .worker_pool import worker_instances_problem, worker_max_instances_problem

# Pub/Sub topic and subscription ids: 3-255 chars, starting with a letter, never "goog".
_PUBSUB_ID_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9._~%+-]{2,254}$")
# Firestore database ids: 4-63 chars of [a-z0-9-], starting with a letter, or the literal "(default)".
_FIRESTORE_DB_RE: Final = re.compile(r"^[a-z][a-z0-9-]{2,61}[a-z0-9]$")
_APP_TARGET_RE: Final = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_DOTTED_RE: Final = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


def known(value: Any) -> bool:
    """False for values Pulumi resolves later; those are not validated."""
    return not isinstance(value, pulumi.Output)


@dataclass(frozen=True)
class Resolved:
    """The app name and queue specs a component provisions, once every check passed."""

    app_name: str
    specs: tuple[QueueSpec, ...]
    bundle: SourceBundle | None = None
    """The archive a ``source=`` deploy uploads, built once here (its problems are reported with the rest)."""


def _spec_options(spec: QueueSpec) -> dict[str, Any]:
    return {f.name: getattr(spec, f.name) for f in fields(spec) if f.name != "name"}


def _spec_from_mapping(data: Mapping[str, Any]) -> QueueSpec:
    options = {k: v for k, v in data.items() if k not in ("name", "fifo")}
    if "accepts" in options and known(options["accepts"]):
        options["accepts"] = tuple(options["accepts"])
    for key in ("timeout", "min_backoff", "max_backoff", "dedupe_window"):
        if key in options and known(options[key]):
            options[key] = float(options[key])
    return QueueSpec(name=str(data["name"]), **options)


def _queue_source(args: QueueRunAppArgs, instance: str, problems: list[str]) -> tuple[Any, list[Any]]:
    """App name and raw queue declarations, from whichever of app/manifest/queues was given."""
    given = [k for k in ("app", "manifest", "queues") if getattr(args, k) is not None]
    if len(given) != 1:
        problems.append(
            f"give exactly one of app=, manifest= or queues= (the queue declarations), got {given or 'none'}"
        )
        return None, []
    if args.app_name is not None and given[0] != "queues":
        problems.append(f"app_name is only used with queues= (the {given[0]} names the app), got {args.app_name!r}")
    if args.app is not None:
        return args.app.name, list(args.app.specs)
    if args.manifest is not None:
        try:
            manifest = args.manifest if isinstance(args.manifest, Manifest) else load_manifest(Path(args.manifest))
        except ConfigurationError as exc:
            problems.extend(exc.problems)
            return None, []
        return manifest.app, list(manifest.queues)
    if isinstance(args.queues, (str, bytes, Mapping)):
        problems.append(f"queues must be a list of QueueSpec or dicts, got {args.queues!r}")
        return args.app_name or instance, []
    return args.app_name or instance, list(args.queues or ())


def _queue_problems(raw: Any) -> list[str]:
    if isinstance(raw, QueueSpec):
        return spec_problems(raw.name, _spec_options(raw), known=known)
    if isinstance(raw, Mapping):
        if "name" not in raw:
            return [f"queue spec {dict(raw)!r} has no 'name'"]
        options = {k: v for k, v in raw.items() if k not in ("name", "fifo")}
        found = spec_problems(raw["name"], options, known=known)
        # Which resources exist depends on these, so they must be plain values.
        for key in ("delivery", "http", "public", "exactly_once"):
            if key in options and not known(options[key]):
                found.append(f"queue {raw['name']!r}: {key} must be known at construction (it decides the resources)")
        return found
    return [f"queue spec must be a QueueSpec or a dict, got {raw!r}"]


def _app_problems(app_name: Any, specs: tuple[QueueSpec, ...], *, declared: int) -> list[str]:
    problem = names.app_name_problem(app_name)
    if problem:
        return [problem]
    problems: list[str] = []
    if not declared:
        problems.append(f"app {app_name!r} declares no queues: there is nothing to provision")
    seen: set[str] = set()
    for spec in specs:
        if spec.name in seen:
            problems.append(f"queue {spec.name!r} is declared twice in app {app_name!r}")
        seen.add(spec.name)
        ids = (
            names.topic_id(app_name, spec.name),
            names.dead_letter_topic_id(app_name, spec.name),
            names.subscription_id(app_name, spec.name),
            names.dead_letter_subscription_id(app_name, spec.name),
        )
        for pubsub_id in ids:
            if not _PUBSUB_ID_RE.match(pubsub_id) or pubsub_id.lower().startswith("goog"):
                problems.append(
                    f"queue {spec.name!r}: Pub/Sub id {pubsub_id!r} is invalid (3-255 characters, starting with a "
                    "letter, not starting with 'goog')"
                )
        if spec.public is True and spec.http is not True:
            problems.append(
                f"queue {spec.name!r}: public=True needs http=True (nothing else is reachable), got http={spec.http!r}"
            )
    return problems


# --- rules on the component's own arguments ---------------------------------------------------------

Check = Callable[[Any, QueueRunAppArgs, tuple[QueueSpec, ...]], "str | None"]


@dataclass(frozen=True)
class ArgRule:
    """One check of one argument (skipped while it is an Output); ``check`` returns a message naming the
    argument, its range and its value when the value is bad."""

    field: str
    check: Check


def max_ack_deadline(specs: tuple[QueueSpec, ...]) -> tuple[int, str | None]:
    """The largest ack deadline among queues with a known timeout, and that queue's name."""
    best: tuple[int, str | None] = (0, None)
    for spec in specs:
        if known(spec.timeout) and spec.ack_deadline > best[0]:
            best = (spec.ack_deadline, spec.name)
    return best


def default_request_timeout(specs: tuple[QueueSpec, ...]) -> int:
    return max(DEFAULT_REQUEST_TIMEOUT, max_ack_deadline(specs)[0])


def _whole(lo: int, hi: int) -> Callable[[Any], str | None]:
    return lambda value: whole_number_problem(value, lo, hi)


def _request_timeout(value: Any, _: QueueRunAppArgs, specs: tuple[QueueSpec, ...]) -> str | None:
    if value is None:
        return None
    problem = _whole(1, CLOUD_RUN_TIMEOUT_MAX)(value)
    if problem:
        return f"request_timeout {problem}"
    deadline, queue = max_ack_deadline(specs)
    if value < deadline:
        return (
            f"request_timeout must be at least every queue's ack deadline ({deadline} s for queue {queue!r}: "
            f"Pub/Sub would give up on requests Cloud Run still runs), got {value!r}"
        )
    return None


def _source_image(_: Any, args: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    if (args.source is None) == (args.image is None):
        return (
            "give exactly one of source= (a directory to build) or image=, "
            f"got source={args.source!r}, image={args.image!r}"
        )
    return None


def _source(value: Any, _: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    if value is not None and not Path(value).is_dir():
        return f"source must be an existing directory, got {str(value)!r}"
    return None


def _region(value: Any, _: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    if value is None and pulumi.Config("gcp").get("region") is None:
        return "region is required (or set config gcp:region), got None"
    if value is not None and (not isinstance(value, str) or not re.fullmatch(r"[a-z]+-[a-z]+\d+", value)):
        return f"region must be a Google Cloud region such as 'us-central1', got {value!r}"
    return None


def _min_instances(value: Any, _: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    problem = _whole(0, 1000)(value)
    return f"min_instances {problem}" if problem else None


def _max_instances(value: Any, args: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    problem = _whole(1, 1000)(value)
    low = args.min_instances
    if problem is None and known(low) and isinstance(low, int) and value < low:
        problem = f"must be at least min_instances ({low}), got {value!r}"
    return f"max_instances {problem}" if problem else None


def _concurrency(value: Any, _: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    if value is None:
        return None
    problem = _whole(1, 1000)(value)
    return f"container_concurrency {problem}" if problem else None


def _app_target(value: Any, _: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    if not isinstance(value, str) or not _APP_TARGET_RE.match(value):
        return f"app_target must be 'module:attribute' (e.g. 'main:app'), got {value!r}"
    return None


def _access(value: Any, _: QueueRunAppArgs, specs: tuple[QueueSpec, ...]) -> str | None:
    if value not in ACCESS_CHOICES:
        return f"access must be one of {list(ACCESS_CHOICES)}, got {value!r}"
    public = [spec.name for spec in specs if spec.public is True and spec.http is True]
    if public and value != "public":
        return (
            f"queues {public!r} are declared public=True but access={value!r} keeps the service closed to "
            "anonymous callers; set access='public' (the whole service is then reachable, and the app's "
            "authenticate hook admits callers) or drop public=True"
        )
    return None


def _invoker_iam_disabled(value: Any, args: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    if not isinstance(value, bool):
        return f"invoker_iam_disabled must be True or False, got {value!r}"
    if value and args.access != "public":
        return (
            f"invoker_iam_disabled=True opens the service to everyone, which only access='public' means; "
            f"got access={args.access!r}"
        )
    return None


def _base_image(value: Any, _: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    if not isinstance(value, str) or not value.strip() or any(c.isspace() for c in value):
        return f"base_image must be an image reference such as 'python:3.11-slim', got {value!r}"
    return None


def _source_package(value: Any, args: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    if value is None:
        return None
    if args.source is None:
        return f"source_package is only used with source=, got {value!r}"
    if not isinstance(value, str) or not _DOTTED_RE.match(value):
        return f"source_package must be a dotted Python package name (e.g. 'examples.shop'), got {value!r}"
    return None


def _source_exclude(value: Any, _: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    if isinstance(value, str) or not all(isinstance(pattern, str) for pattern in value):
        return f"source_exclude must be a list of glob patterns (e.g. ['infra']), got {value!r}"
    return None


def _env(value: Any, _: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    clash = sorted(set(value) & set(ENV.names()))
    if clash:
        return f"env may not set {clash!r}: the component sets the runtime's settings itself"
    return None


_ORIGIN_RE = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?")


def _allowed_origins(value: Any, _: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    if isinstance(value, str) or not all(isinstance(o, str) for o in value):
        return f"allowed_origins must be a list of origins like 'https://shop.example', got {value!r}"
    bad = [o for o in value if o != "*" and not _ORIGIN_RE.fullmatch(o.rstrip("/"))]
    if bad:
        return f"allowed_origins must be 'scheme://host[:port]' (no path) or '*', got {bad!r}"
    return None


def _firestore_database(value: Any, _: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    if value is None or value == "(default)":
        return None
    if not isinstance(value, str) or not _FIRESTORE_DB_RE.match(value):
        return f"firestore_database must be '(default)' or 4-63 of [a-z0-9-] starting with a letter, got {value!r}"
    return None


def _worker_instances(value: Any, _: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    return worker_instances_problem(value)


def _worker_max_instances(value: Any, args: QueueRunAppArgs, __: tuple[QueueSpec, ...]) -> str | None:
    return worker_max_instances_problem(value, args.worker_instances if known(args.worker_instances) else None)


ARG_RULES: Final[tuple[ArgRule, ...]] = (
    ArgRule("source", _source_image),
    ArgRule("source", _source),
    ArgRule("region", _region),
    ArgRule("request_timeout", _request_timeout),
    ArgRule("min_instances", _min_instances),
    ArgRule("max_instances", _max_instances),
    ArgRule("container_concurrency", _concurrency),
    ArgRule("worker_instances", _worker_instances),
    ArgRule("worker_max_instances", _worker_max_instances),
    ArgRule("app_target", _app_target),
    ArgRule("access", _access),
    ArgRule("invoker_iam_disabled", _invoker_iam_disabled),
    ArgRule("base_image", _base_image),
    ArgRule("source_package", _source_package),
    ArgRule("source_exclude", _source_exclude),
    ArgRule("env", _env),
    ArgRule("allowed_origins", _allowed_origins),
    ArgRule("firestore_database", _firestore_database),
)


def _source_bundle(args: QueueRunAppArgs, specs: tuple[QueueSpec, ...], problems: list[str]) -> SourceBundle | None:
    """The upload of a source deploy, once the arguments it is made from passed their rules; its own
    problems (refused requirements, an app_target the archive cannot import) join ``problems``."""
    if args.source is None or args.image is not None:
        return None
    if (
        _source(args.source, args, specs)
        or _source_package(args.source_package, args, specs)
        or _base_image(args.base_image, args, specs)
        or _source_exclude(args.source_exclude, args, specs)
    ):
        return None  # already reported by the rules
    bundle = source_bundle(
        Path(args.source),
        package=args.source_package,
        base_image=args.base_image,
        exclude=tuple(args.source_exclude),
    )
    problems.extend(bundle.problems)
    if isinstance(args.app_target, str) and _app_target(args.app_target, args, specs) is None:
        target_problem = bundle.app_target_problem(args.app_target)
        if target_problem:
            problems.append(target_problem)
    return bundle


def resolve(args: QueueRunAppArgs, instance: str) -> Resolved:
    """Check everything, then return the app name and specs; raises ConfigurationError with every problem."""
    problems: list[str] = []
    app_name, raw = _queue_source(args, instance, problems)
    valid: list[QueueSpec] = []
    for item in raw:
        item_problems = _queue_problems(item)
        problems.extend(item_problems)
        if not item_problems:
            valid.append(item if isinstance(item, QueueSpec) else _spec_from_mapping(item))
    specs = tuple(valid)
    if app_name is not None:
        problems.extend(_app_problems(app_name, specs, declared=len(raw)))
    for rule in ARG_RULES:
        value = getattr(args, rule.field)
        if known(value):
            problem = rule.check(value, args, specs)
            if problem:
                problems.append(problem)
    bundle = _source_bundle(args, specs, problems)
    if problems or app_name is None:
        raise ConfigurationError([f"QueueRunApp {instance!r}: {p}" for p in problems])
    return Resolved(app_name=app_name, specs=specs, bundle=bundle)
