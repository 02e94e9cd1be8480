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
    # Its words match what it does: 3 updates for alice, 2 for bob plus one double-submitted form.
    lines = done.stdout.splitlines()
    # The announcement comes before the app's first line (install lines may precede it, when make
    # reinstalls because a project file changed since the venv was built).
    announced = next(i for i, line in enumerate(lines) if "==> running examples/quickstart/app.py" in line)
    assert "pushing 3 profile updates" in lines[announced + 1], done.stdout
    for user, count in (("alice", 3), ("bob", 3)):
        seqs = [line.split("seq=")[1].split()[0] for line in lines if f"update_profile user={user} " in line]
        assert seqs == [str(n) for n in range(1, count + 1)], done.stdout
    assert sum("FAILED (SMTP timeout); retry in 0.2s" in line for line in lines) == 1
    assert any("sent 'Receipt' to flaky@example.com (attempt 2)" in line for line in lines)


def test_make_install_says_what_it_does(tmp_path: Path) -> None:
    # A dry run (nothing installed): the recipe announces itself and lets pip list what it collects.
    done = subprocess.run(
        ["make", "-n", f"VENV={tmp_path / 'venv'}", "install"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "==> creating" in done.stdout and "a few minutes" in done.stdout
    recipe = done.stdout.replace("\\\n", " ")  # join continued lines
    main_install = next(line for line in recipe.splitlines() if '-e ".[dev]"' in line)
    assert "--quiet" not in main_install and "Collecting" in main_install


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
        from shop import app, charge, send_email, Order
        with app.local() as local:
            job_id = {push.split("#")[0].strip()}
            local.drain(timeout=10)
        print("pushed", job_id)
        {textwrap.indent(test, "        ").strip()}
        test_charge()
        test_bad_address_is_a_dead_letter()
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


def test_tutorial_steps_2_to_4_with_the_dev_server_running(tutorial: Path) -> None:
    """Start `queuerun dev`, push from code and from the command line, then find the failing email
    among the dead letters, as steps 2-4 say."""
    import socket
    import time

    from tests.cli.dev_processes import spawn_dev, stop_group, wait_healthy

    blocks = code_blocks("python")
    push_from_code = next(b for b in blocks if b.startswith("charge.group(")).split("#")[0].strip()
    lines = [line.strip() for block in code_blocks("sh") for line in block.splitlines()]
    failing = next(line for line in lines if line.startswith("queuerun push emails"))
    script = Path(sys.executable).parent / "queuerun"
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(script), *args], cwd=tutorial, capture_output=True, text=True, timeout=60, env=env)

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert "`QUEUERUN_ALLOW_ANONYMOUS=1 queuerun dev shop:app`" in README  # as step 2 says, for the curl
    proc = spawn_dev(["shop:app", "--port", str(port)], cwd=tutorial, env={**env, "QUEUERUN_ALLOW_ANONYMOUS": "1"})
    try:
        wait_healthy(f"http://127.0.0.1:{port}", proc, timeout=30)
        from_code = _python(f"from shop import charge, Order\nprint({push_from_code})", tutorial)
        assert from_code.returncode == 0, from_code.stderr
        # The curl line, as written, against this server's port.
        block = next(b for b in code_blocks("sh") if "\ncurl " in b or b.startswith("curl "))
        curl = "curl " + block.split("curl ", 1)[1].replace("localhost:8080", f"localhost:{port}")
        posted = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30)
        assert posted.returncode == 0 and '"queue": "charge.fifo"' in posted.stdout, posted.stdout + posted.stderr
        pushed = cli(*shlex.split(failing)[1:])
        assert pushed.returncode == 0, pushed.stderr
        job_id = pushed.stdout.strip()
        deadline = time.monotonic() + 40
        while job_id not in (listed := cli("dlq", "list", "emails", "shop:app")).stdout:
            assert time.monotonic() < deadline, listed.stdout + listed.stderr
            time.sleep(0.5)
        assert "attempts=5" in listed.stdout
        shown = cli("dlq", "show", "emails", job_id, "shop:app")
        assert shown.returncode == 0 and "no mail server for bob@example.invalid" in shown.stdout
    finally:
        stop_group(proc)
    out = proc.stdout.read() if proc.stdout else ""
    assert f"queuerun dev: app 'shop' at http://127.0.0.1:{port}" in out
    assert "charging order-1: 4999 (attempt 1)" in out  # the push from code ran in the dev server
    assert "charging order-3: 250 (attempt 1)" in out  # the curl's job
    assert f"emails job={job_id} attempt=1" in out and "retry in 1s at " in out
