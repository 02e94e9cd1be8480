"""README "Use it in your app": the two distributions build, install into a fresh venv and import.

The wheels are built from this checkout the way pip builds them from a path or a git URL (isolated
build), then installed with --no-deps into a new venv; the third-party dependencies come from this
environment's site-packages on PYTHONPATH (so nothing is downloaded), while queuerun itself can
only come from the wheel: the checkout's editable install is not visible there.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_MODULES = sorted(
    ".".join(p.relative_to(ROOT / "runtime").with_suffix("").parts)
    for p in (ROOT / "runtime" / "queuerun").rglob("*.py")
    if p.name != "__main__.py"
)


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    out = tmp_path_factory.mktemp("wheels")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "./runtime", ".", "-w", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    found = {w.name.split("-")[0]: w for w in out.glob("*.whl")}
    assert set(found) == {"queuerun", "queuerun_gcp"}, found
    yield found


def fresh_venv(where: Path, wheel: Path) -> tuple[Path, dict[str, str]]:
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(where)], check=True, timeout=120)
    python = where / "bin" / "python"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    env = {"PYTHONPATH": sysconfig.get_paths()["purelib"], "PATH": f"{where / 'bin'}:/usr/bin:/bin"}
    return python, env


def test_the_runtime_alone_installs_imports_and_scaffolds_an_app(wheels: dict[str, Path], tmp_path: Path) -> None:
    python, env = fresh_venv(tmp_path / "venv", wheels["queuerun"])
    check = (
        "import importlib, sys, queuerun\n"
        f"assert queuerun.__file__.startswith({str(tmp_path / 'venv')!r}), queuerun.__file__\n"
        f"for name in {RUNTIME_MODULES!r}: importlib.import_module(name)\n"
        "try:\n    import queuerun_gcp\nexcept ImportError:\n    print('runtime only')\n"
    )
    done = subprocess.run(
        [str(python), "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0 and done.stdout.strip() == "runtime only", done.stderr
    # The console script works, and `queuerun init` gives an app whose tests pass on that install.
    app = tmp_path / "shop"
    init = subprocess.run(
        [str(tmp_path / "venv" / "bin" / "queuerun"), "init", "shop", str(app)],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert init.returncode == 0, init.stderr
    tests = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=app, capture_output=True, text=True, timeout=120, env=env,
    )
    assert tests.returncode == 0 and "3 passed" in tests.stdout, tests.stdout + tests.stderr


def test_the_components_install_for_an_infra_repo(wheels: dict[str, Path], tmp_path: Path) -> None:
    python, env = fresh_venv(tmp_path / "venv", wheels["queuerun_gcp"])
    check = (
        "import queuerun, queuerun_gcp\n"
        "from queuerun_gcp import QueueRunApp\n"
        f"assert queuerun_gcp.__file__.startswith({str(tmp_path / 'venv')!r}), queuerun_gcp.__file__\n"
        f"assert queuerun.__file__.startswith({str(tmp_path / 'venv')!r}), queuerun.__file__\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [str(python), "-c", check], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr
