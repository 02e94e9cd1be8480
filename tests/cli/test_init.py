"""`queuerun init`: a new app whose own tests pass, whose infra previews, and that never overwrites."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")}
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def test_init_scaffolds_an_app_whose_tests_pass_and_whose_infra_previews(tmp_path: Path) -> None:
    done = run("-m", "queuerun.cli", "init", "shop", "shop", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    app = tmp_path / "shop"
    expected = {
        "app.py", "queues/welcome.py", "queues/profile.fifo.py", "tests/test_queues.py",
        "infra/__main__.py", "infra/Pulumi.yaml", ".gcloudignore", ".gitignore", "requirements.txt",
    }
    assert {str(p.relative_to(app)) for p in app.rglob("*") if p.is_file()} == expected
    assert "next: cd shop && python -m pytest && queuerun dev app:app" in done.stdout
    tests = run("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=app)
    assert tests.returncode == 0 and "3 passed" in tests.stdout, tests.stdout + tests.stderr
    queues = run("-m", "queuerun.cli", "queues", "app:app", cwd=app)
    assert queues.returncode == 0 and "profile.fifo" in queues.stdout and "welcome" in queues.stdout
    preview = run("-m", "queuerun.cli", "preview", "infra", "-c", "gcp:project=demo-project", cwd=app)
    assert preview.returncode == 0, preview.stdout + preview.stderr
    assert "shop-welcome-topic" in preview.stdout and "Problems (0)" in preview.stdout
    from queuerun_gcp.ignore import source_files

    # What a source deploy uploads: the app and its queues, not its tests, infra or local state.
    assert set(source_files(app)) == {"app.py", "queues/welcome.py", "queues/profile.fifo.py", "requirements.txt"}


def test_init_never_overwrites_and_checks_the_name(tmp_path: Path) -> None:
    (tmp_path / "app.py").write_text("# mine\n")
    done = run("-m", "queuerun.cli", "init", "shop", cwd=tmp_path)
    assert done.returncode == 2 and "not overwriting existing files" in done.stderr and "app.py" in done.stderr
    assert (tmp_path / "app.py").read_text() == "# mine\n" and not (tmp_path / "queues").exists()
    bad = run("-m", "queuerun.cli", "init", "Shop_1", "x", cwd=tmp_path)
    assert bad.returncode == 2 and "app name 'Shop_1' is invalid" in bad.stderr and not (tmp_path / "x").exists()
