"""Run a Pulumi program offline: the real SDKs under ``pulumi.runtime.set_mocks``, no engine, no cloud.

``run_program(factory_or_dir)`` returns the registered ``Graph``: every resource with its type, logical
name, parent type (from the URN) and inputs as the engine saw them (camelCase keys; ints arrive as
floats through protobuf), plus the warnings and errors the program logged. ``Mocks`` fills in the
computed outputs our components read. Shared by the component tests and ``queuerun preview``.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import runpy
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import pulumi

PROJECT = "test-project"
PROJECT_NUMBER = "123456789"
DYNAMIC_RESOURCE = "pulumi-python:dynamic"  # the type prefix of every dynamic resource (CloudBuildImage)


class Mocks(pulumi.runtime.Mocks):
    """Fills in the computed outputs the components read (emails, ids, the service URI, image digests)."""

    def __init__(self, project: str = PROJECT, project_number: str = PROJECT_NUMBER) -> None:
        self.project = project
        self.project_number = project_number
        self.inputs: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[str] = []

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.inputs[(args.typ, args.name)] = dict(args.inputs)
        state = dict(args.inputs)
        project = state.get("project") or self.project
        rid = f"{args.name}_id"
        if args.typ == "gcp:serviceaccount/account:Account":
            email = f"{state['accountId']}@{project}.iam.gserviceaccount.com"
            state.update(
                email=email, member=f"serviceAccount:{email}", name=f"projects/{project}/serviceAccounts/{email}"
            )
        elif args.typ == "gcp:projects/serviceIdentity:ServiceIdentity":
            email = f"service-{self.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"
            state.update(email=email, member=f"serviceAccount:{email}")
        elif args.typ == "gcp:pubsub/topic:Topic":
            rid = f"projects/{project}/topics/{state['name']}"
        elif args.typ == "gcp:pubsub/subscription:Subscription":
            rid = f"projects/{project}/subscriptions/{state['name']}"
        elif args.typ == "gcp:cloudrunv2/service:Service":
            state["uri"] = f"https://{state['name']}-abc123-uc.a.run.app"
        elif args.typ.startswith(DYNAMIC_RESOURCE) and args.typ.endswith(":UserKey"):
            state["key"] = f"mock-user-key-of-{args.name}-0123456789abcdef"  # the provider's random key, stood in
        elif args.typ == "gcp:secretmanager/secret:Secret":
            rid = f"projects/{project}/secrets/{state['secretId']}"
            state["name"] = rid
        elif args.typ == "gcp:secretmanager/secretVersion:SecretVersion":
            state["version"] = "1"
            rid = f"{state['secret']}/versions/1"
        elif args.typ.startswith(DYNAMIC_RESOURCE) and "image" in state and "tag" in state:
            # A Cloud Build image: the digest depends on the tag only, so graphs stay reproducible.
            digest = hashlib.sha256(str(state["tag"]).encode()).hexdigest()
            state.update(image_digest_ref=f"{state['image']}@sha256:{digest}", build_id=f"build-{digest[:12]}")
        return rid, state

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        self.calls.append(args.token)
        if args.token == "gcp:organizations/getProject:getProject":
            return {"number": self.project_number, "projectId": self.project, "name": self.project}, []
        return {}, []


class _Monitor(pulumi.runtime.mocks.MockMonitor):
    """The mock monitor, also noting what the SDK said about each resource beyond its inputs."""

    def __init__(self, mocks: Mocks) -> None:
        super().__init__(mocks)
        self.parents: dict[str, str] = {}
        self.dependencies: dict[str, set[str]] = {}
        self.protected: set[str] = set()

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        urn = str(response.urn)
        if request.parent:
            self.parents[urn] = request.parent
        deps = set(request.dependencies)
        for prop in request.propertyDependencies.values():
            deps.update(prop.urns)
        self.dependencies[urn] = deps
        if request.protect:
            self.protected.add(urn)
        return response


@dataclass(frozen=True)
class Res:
    """One registered resource; ``parent`` is its parent's URN (None under the stack)."""

    urn: str
    type: str
    name: str
    parent_type: str | None
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    parent: str | None = None


@dataclass
class Graph:
    """What a program registered and logged; ``error`` is what it raised (only with ``catch=True``).

    ``dependencies`` maps each URN to the URNs it waits for (``depends_on`` and inputs); ``protected``
    holds the logical names registered with ``protect=True``.
    """

    resources: list[Res]
    result: Any = None
    calls: list[str] = field(default_factory=list)
    dependencies: dict[str, set[str]] = field(default_factory=dict)
    protected: set[str] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error: BaseException | None = None

    def of_type(self, suffix: str) -> list[Res]:
        """Resources whose type ends with ``suffix`` (e.g. ``"pubsub/topic:Topic"``), sorted by name."""
        return sorted((r for r in self.resources if r.type.endswith(suffix)), key=lambda r: r.name)

    def named(self, name: str) -> Res:
        """The one resource with this logical name; LookupError if there is not exactly one."""
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise LookupError(f"{name!r}: {len(found)} resources; names: {sorted(r.name for r in self.resources)}")
        return found[0]

    def iam_bindings(self) -> list[tuple[str, str, str, str]]:
        """Every IAM binding as (resource type, target, role, member), sorted."""
        out = []
        for r in self.resources:
            if "IAMMember" in r.type or "IamMember" in r.type:
                i = r.inputs
                keys = ("topic", "subscription", "serviceAccountId", "bucket", "repository", "secretId", "name")
                target = next((i[k] for k in keys if i.get(k)), None)
                out.append((r.type.split(":")[-1], str(target or i.get("project")), i["role"], i["member"]))
        return sorted(out)


def ensure_event_loop() -> None:
    """Pulumi's mocks use the main thread's current event loop; an earlier ``asyncio.run`` leaves none."""
    try:
        usable = not asyncio.get_event_loop_policy().get_event_loop().is_closed()
    except RuntimeError:
        usable = False
    if not usable:
        asyncio.set_event_loop(asyncio.new_event_loop())


def run_program(
    program: Callable[[], Any] | Path,
    *,
    config: Mapping[str, str] | None = None,
    secret_keys: Sequence[str] = (),
    project: str = "queuerun",
    stack: str = "test",
    catch: bool = False,
    logger: logging.Logger | None = None,
) -> Graph:
    """Run ``program`` (a callable, or a directory with ``__main__.py``) under fresh mocks.

    Config ``gcp:project`` names the project the mocks report. The program's exception is raised, or
    with ``catch=True`` kept on ``Graph.error`` next to what was registered before it. Warnings and
    errors logged through ``pulumi.log`` are recorded and still go to ``logger`` (default: root).
    """
    config = dict(config or {})
    mocks = Mocks(project=config.get("gcp:project", PROJECT))
    monitor = _Monitor(mocks)
    ensure_event_loop()
    pulumi.runtime.set_mocks(mocks, project=project, stack=stack, preview=False, logger=logger, monitor=monitor)
    pulumi.runtime.set_all_config(config, list(secret_keys))
    holder: dict[str, Any] = {}
    warnings: list[str] = []
    errors: list[str] = []
    factory = _directory_program(program) if isinstance(program, Path) else program

    # Awaits every output the program left pending, then re-raises what the program raised.
    as_test: Callable[[Callable[[], None]], Callable[[], None]] = pulumi.runtime.test

    @as_test
    def run() -> None:
        holder["result"] = factory()

    error: BaseException | None = None
    with _recording("warn", warnings), _recording("error", errors):
        try:
            run()
        except (Exception, SystemExit) as exc:  # a program may sys.exit(); that is its failure too
            if not catch:
                raise
            error = exc
    resources = _registered(mocks, monitor)
    return Graph(
        resources=resources,
        result=holder.get("result"),
        calls=list(mocks.calls),
        dependencies={r.urn: monitor.dependencies.get(r.urn, set()) for r in resources},
        protected={r.name for r in resources if r.urn in monitor.protected},
        warnings=warnings,
        errors=errors,
        error=error,
    )


def _directory_program(program_dir: Path) -> Callable[[], dict[str, Any]]:
    """Run ``__main__.py`` as Pulumi's Python host does: the directory is the cwd and first on sys.path."""
    program_dir = program_dir.resolve()

    def run() -> dict[str, Any]:
        with _program_environment(program_dir):
            return runpy.run_path(str(program_dir / "__main__.py"), run_name="__main__")

    return run


@contextmanager
def _program_environment(program_dir: Path) -> Iterator[None]:
    saved_path, saved_cwd, saved_modules = list(sys.path), os.getcwd(), set(sys.modules)
    sys.path.insert(0, str(program_dir))
    os.chdir(program_dir)
    try:
        yield
    finally:
        added = [Path(p).resolve() for p in sys.path if p and p not in saved_path]
        os.chdir(saved_cwd)
        sys.path[:] = saved_path
        # A program's own top-level modules (``app``) would shadow the next program's.
        for name in set(sys.modules) - saved_modules:
            if _imported_from(name, sys.modules[name], added):
                del sys.modules[name]


def _imported_from(name: str, module: Any, entries: list[Path]) -> bool:
    """Whether ``module`` was imported under ``name`` from one of the sys.path ``entries``."""
    file = getattr(module, "__file__", None)
    if not file:
        return False
    path = Path(file).resolve()
    for entry in entries:
        if not path.is_relative_to(entry):
            continue
        parts = path.relative_to(entry).with_suffix("").parts
        if parts and parts[-1] == "__init__":
            parts = parts[:-1]
        if ".".join(parts) == name:
            return True
    return False


@contextmanager
def _recording(function: str, into: list[str]) -> Iterator[None]:
    """Record the messages passed to ``pulumi.log.<function>`` (alias ``pulumi.<function>``), still logging them."""
    original = getattr(pulumi.log, function)

    def record(msg: str, *args: Any, **kwargs: Any) -> None:
        into.append(msg)
        original(msg, *args, **kwargs)

    with mock.patch.object(pulumi.log, function, record), mock.patch.object(pulumi, function, record):
        yield


def _registered(mocks: Mocks, monitor: _Monitor) -> list[Res]:
    resources = []
    for urn, reg in monitor.get_registered_resources().items():
        qualified, name = urn.split("::")[2], urn.split("::")[3]
        chain = qualified.split("$")
        typ = chain[-1]
        if typ == "pulumi:pulumi:Stack":
            continue
        resources.append(
            Res(
                urn=urn,
                type=typ,
                name=name,
                parent_type=chain[-2] if len(chain) > 1 else None,
                inputs=mocks.inputs.get((typ, name), {}),
                outputs=dict(reg.state or {}),
                parent=monitor.parents.get(urn),
            )
        )
    return resources
