"""Graph helpers for the component tests: the real SDKs, no engine, no cloud.

``build(program)`` runs a Pulumi program under fresh mocks (``queuerun_gcp.mocks``, shared with
``queuerun preview``) and returns the registered graph: every resource with its type, logical name,
parent type (from the URN) and inputs as the engine saw them (camelCase keys; ints arrive as floats
through protobuf). Snapshots, archives and least-privilege checks are test-only and live here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pulumi

from queuerun.spec import QueueSpec, make_spec
from queuerun_gcp import mocks
from queuerun_gcp.mocks import PROJECT, PROJECT_NUMBER, Mocks, Res, run_program  # noqa: F401 (tests import them here)
from queuerun_gcp.source import RUNTIME_PACKAGE

REPO_ROOT = Path(__file__).resolve().parents[2]
SNAPSHOTS = Path(__file__).parent / "snapshots"
APP_SOURCE = Path(__file__).parent / "fixtures" / "app"


class Graph(mocks.Graph):
    """The package's graph, plus the snapshot the snapshot test compares."""

    def snapshot(self) -> str:
        """Stable JSON of the graph: sorted resources, sorted keys, machine paths replaced."""
        rows = [
            {"type": r.type, "name": r.name, "parent": r.parent_type, "inputs": _stable_inputs(r.inputs)}
            for r in sorted(self.resources, key=lambda r: (r.type, r.name))
        ]
        text = json.dumps(rows, indent=1, sort_keys=True, default=_jsonable)
        # The source digest covers the runtime package too: any runtime edit would otherwise show here,
        # in the object name, the build's tag and the image digest the service runs.
        text = re.sub(r"source-[0-9a-f]{16}\.zip", "source-<digest>.zip", text)
        text = re.sub(r'"tag": "[0-9a-f]{16}"', '"tag": "<digest>"', text)
        text = re.sub(r"@sha256:[0-9a-f]{64}", "@sha256:<digest>", text)
        return text.replace(str(REPO_ROOT), "<repo>") + "\n"


def _stable_inputs(inputs: dict[str, Any]) -> dict[str, Any]:
    """A dynamic resource's pickled provider changes with the Python and dill versions, not with the graph."""
    if "__provider" in inputs:
        return {**inputs, "__provider": "<pickled provider>"}
    return inputs


def _jsonable(value: Any) -> Any:
    """Assets and archives arrive as SDK objects: describe them by their (relative) files or text; the
    copied runtime package is one entry (its files are the runtime's business, checked elsewhere)."""
    if isinstance(value, pulumi.AssetArchive):
        assets: dict[str, Any] = {k: v for k, v in value.assets.items() if not k.startswith(f"{RUNTIME_PACKAGE}/")}
        assets[f"{RUNTIME_PACKAGE}/"] = "<the installed queuerun package>"
        return {"archive": assets}
    if isinstance(value, pulumi.FileAsset):
        return {"file": Path(value.path).resolve().relative_to(REPO_ROOT).as_posix()}
    if isinstance(value, pulumi.StringAsset):
        return {"text": value.text}
    return repr(value)


def build(program: Callable[[], Any] | Path, config: dict[str, str] | None = None) -> Graph:
    """Run ``program`` (a callable, or a program directory) under fresh mocks; return the registered graph."""
    g = run_program(program, config=config)
    return Graph(**{f.name: getattr(g, f.name) for f in fields(g)})


# --- the uploaded source, as Cloud Run would build and serve it ---------------------------------

# What the image's CMD (``python -m queuerun.server``) does before binding $PORT: load the App named by
# QUEUERUN_APP and build the ASGI app it serves; prints what it found.
_SERVE_CHECK = """
import json, os, sys
import queuerun
from queuerun.server.__main__ import main
from queuerun.server.app import create_push_app
from queuerun.server.serve import load_app
app = load_app(sys.argv[1])
create_push_app(app)
print(json.dumps({"runtime": os.path.relpath(queuerun.__file__), "app": app.name,
                  "queues": sorted(spec.name for spec in app.specs)}))
"""


def asset_file(archive: pulumi.AssetArchive, path: str) -> Path:
    """The file on disk an archive entry uploads."""
    asset = archive.assets[path]
    assert isinstance(asset, pulumi.FileAsset), f"{path}: {asset!r} is not a file"
    return Path(asset.path)


def asset_text(archive: pulumi.AssetArchive, path: str) -> str:
    """The text an archive entry uploads, generated or read from its file."""
    asset = archive.assets[path]
    if isinstance(asset, pulumi.StringAsset):
        return asset.text
    return asset_file(archive, path).read_text(encoding="utf-8")


def extract(archive: pulumi.AssetArchive, dest: Path) -> Path:
    """Write the files of a registered source archive below ``dest``, as the build unpacks them."""
    for path, asset in archive.assets.items():
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(asset, pulumi.StringAsset):
            target.write_text(asset.text, encoding="utf-8")
        else:
            shutil.copyfile(asset_file(archive, path), target)
    return dest


def serve_from(root: Path, *, app_target: str, env: Mapping[str, str]) -> dict[str, Any]:
    """Load the App and build the server from an unpacked archive in a fresh interpreter that sees only
    that directory (not the repository), with the service's ``env``: what the container does at start-up."""
    base = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("QUEUERUN_")}
    done = subprocess.run(
        [sys.executable, "-c", _SERVE_CHECK, app_target],
        cwd=root,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


# --- the apps under test -------------------------------------------------------------------------


@dataclass(frozen=True)
class StandInApp:
    """The two attributes QueueRunApp reads from an App."""

    name: str
    specs: tuple[QueueSpec, ...]


def shop_specs() -> tuple[QueueSpec, ...]:
    """A standard queue, a FIFO queue and an HTTP queue."""
    return (
        make_spec("emails"),
        make_spec("update_profile.fifo", timeout=60, max_attempts=10, min_backoff=5, max_backoff=120),
        make_spec("signup", http=True, accepts=["application/json"]),
    )


def shop_args(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "app": StandInApp("shop", shop_specs()),
        "source": str(APP_SOURCE),
        "region": "us-central1",
        "deletion_protection": False,
    }
    base.update(overrides)
    return base


# --- least privilege -----------------------------------------------------------------------------

PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
AUTHORITATIVE_IAM = ("IAMBinding", "IAMPolicy", "IamBinding", "IamPolicy")


# The one unconditioned project-level grant: Cloud Build must log to Cloud Logging when a build runs as a
# user-specified account, and logWriter exists at project level only.
BUILD_LOG_WRITER = ("roles/logging.logWriter", "-build@")


def assert_least_privilege(graph: Graph, *, public: bool) -> None:
    """No primitive role, no authoritative binding, nothing project-wide unless conditioned on the app's
    database (or the build account's log writing), and ``allUsers`` only when the service is public."""
    for r in graph.resources:
        if "IAM" not in r.type and "Iam" not in r.type:
            continue
        assert not r.type.split(":")[-1].endswith(AUTHORITATIVE_IAM), f"{r.name}: authoritative IAM resource {r.type}"
        assert r.inputs["role"] not in PRIMITIVE_ROLES, f"{r.name}: primitive role {r.inputs['role']}"
        if r.type.startswith(("gcp:projects/", "gcp:organizations/", "gcp:folder/")):
            expression = (r.inputs.get("condition") or {}).get("expression", "")
            role, member = BUILD_LOG_WRITER
            if r.inputs["role"] == role and member in r.inputs["member"]:
                continue
            assert "/databases/" in expression, f"{r.name}: project-wide binding {r.inputs['role']} without a condition"
        if r.inputs["member"] in ("allUsers", "allAuthenticatedUsers"):
            assert public, f"{r.name}: {r.inputs['member']} granted {r.inputs['role']} but no queue is public"
