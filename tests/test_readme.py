"""The README, followed as a new user would: its commands run and do what it says."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def test_quickstart_is_two_commands_and_ci_runs_the_second() -> None:
    quickstart = code_blocks("sh")[0]
    commands = [line.split("#")[0].strip() for line in quickstart.splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


def test_make_demo_runs_the_quickstart() -> None:
    # make installs first when the project files are newer than the venv (a few minutes), then runs.
    done = subprocess.run(["make", "-s", "demo"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert "second push returned the first job's id: True" in done.stdout
    assert "all jobs done; dead letters: 0" in done.stdout


@pytest.fixture
def tutorial(tmp_path: Path) -> Path:
    """The tutorial's shop.py, written where a new user would put it."""
    shop = next(block for block in code_blocks("python") if block.startswith("# shop.py"))
    (tmp_path / "shop.py").write_text(shop.replace("    ...\n", "    pass\n"), encoding="utf-8")
    return tmp_path


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, capture_output=True, text=True, timeout=60, env=env
    )


def test_tutorial_push_and_test_snippets_work(tutorial: Path) -> None:
    blocks = code_blocks("python")
    push = next(b for b in blocks if b.startswith("charge.group("))
    test = next(b for b in blocks if b.startswith("def test_charge"))
    done = _python(
        f"""
        from shop import app, charge, Order
        with app.local() as local:
            job_id = {push.split("#")[0].strip()}
            local.drain(timeout=10)
        print("pushed", job_id)
        {textwrap.indent(test, "        ").strip()}
        test_charge()
        print("test passed")
        """,
        tutorial,
    )
    assert done.returncode == 0, done.stderr
    assert "charging order-1: 4999 (attempt 1)" in done.stdout
    assert "charging o1: 10 (attempt 1)" in done.stdout
    assert done.stdout.strip().endswith("test passed")


def test_tutorial_command_lines_work(tutorial: Path) -> None:
    lines = [line.strip() for block in code_blocks("sh") for line in block.splitlines()]
    push = next(line for line in lines if line.startswith("queuerun push"))
    script = Path(sys.executable).parent / "queuerun"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")}
    pushed = subprocess.run(
        [str(script), *shlex.split(push)[1:]], cwd=tutorial, capture_output=True, text=True, timeout=60, env=env
    )
    assert pushed.returncode == 0, pushed.stderr
    assert re.fullmatch(r"[0-9a-f]{32}", pushed.stdout.strip())
    listed = subprocess.run(
        [str(script), "dlq", "list", "emails", "--app", "shop:app"],
        cwd=tutorial,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert listed.returncode == 0 and "no dead letters in 'emails'" in listed.stdout


def test_the_preview_line_checks_the_quickstart_program_offline() -> None:
    lines = [line.split("#")[0].strip() for block in code_blocks("sh") for line in block.splitlines()]
    preview = next(line for line in lines if line.startswith("queuerun preview"))
    script = Path(sys.executable).parent / "queuerun"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")}
    done = subprocess.run(
        [str(script), *shlex.split(preview)[1:]], cwd=ROOT, capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "queuerun:index:QueueRunApp" in done.stdout and "quickstart-emails-topic" in done.stdout
