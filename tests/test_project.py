"""Project-level promises: the runtime never needs Pulumi, lint and types stay clean, the quickstart works."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def test_runtime_imports_without_pulumi() -> None:
    # Given an interpreter where any pulumi import fails, as in a Cloud Run image without it
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys

        class NoPulumi:
            def find_spec(self, name, path=None, target=None):
                if name == "pulumi" or name.startswith(("pulumi.", "pulumi_")):
                    raise ImportError(f"blocked: {name}")
                return None

        sys.meta_path.insert(0, NoPulumi())
        import queuerun
        names = [m.name for m in pkgutil.walk_packages(queuerun.__path__, "queuerun.")]
        for name in names:
            importlib.import_module(name)
        leaked = sorted(m for m in sys.modules if m.startswith("pulumi"))
        print(len(names), leaked)
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    # Then every runtime module imports and nothing pulled pulumi in
    assert done.returncode == 0, done.stderr
    count, leaked = done.stdout.split(" ", 1)
    assert int(count) >= 10
    assert leaked.strip() == "[]"


def _tool(name: str) -> str:
    found = BIN / name
    if found.exists():
        return str(found)
    other = shutil.which(name)
    if other is None:
        pytest.fail(f"{name} is not installed (it is in the dev extras)")
    return other


def test_ruff_is_clean() -> None:
    done = subprocess.run([_tool("ruff"), "check", "."], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_strict_is_clean() -> None:
    done = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr


def test_quickstart_shows_order_dedupe_and_retry() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("QUEUERUN_BACKEND", None)
    done = subprocess.run(
        [sys.executable, "examples/quickstart/app.py"], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    alice = [line.rsplit("=", 1)[1] for line in lines if "user=alice" in line]
    assert alice == ["alice@one.example", "alice@two.example", "alice@three.example"]
    bob = [line.rsplit("=", 1)[1] for line in lines if "user=bob" in line]
    assert bob == ["bob@one.example", "bob@two.example", "bob@form.example"]
    assert any("second push returned the first job's id: True" in line for line in lines)
    failed = next(i for i, line in enumerate(lines) if "FAILED" in line)
    retried = next(i for i, line in enumerate(lines) if "flaky@example.com (attempt 2)" in line)
    assert failed < retried
    assert lines[-1].endswith("all jobs done; dead letters: 0")


def _floors() -> dict[str, str]:
    pins = (ROOT / "requirements" / "floors.txt").read_text(encoding="utf-8").splitlines()
    return dict(line.split("==", 1) for line in pins if line and not line.startswith("#"))


def test_pulumi_floors_are_the_versions_the_suite_runs() -> None:
    # The component calls what its floors provide (InvokeOutputOptions, Cloud Run v2 fields): the
    # lowest allowed versions are the ones installed for this very run (make install pins them).
    import importlib.metadata
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    floors = _floors()
    assert set(floors) == {"pulumi", "pulumi-gcp"}
    for name, version in floors.items():
        assert any(d.replace(" ", "").startswith(f"{name}>={version},") for d in declared), (name, declared)
        assert importlib.metadata.version(name) == version, f"{name}: installed {importlib.metadata.version(name)}"
