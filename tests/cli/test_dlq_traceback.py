"""`queuerun dlq show` prints the failure's traceback kept with the dead letter."""

from __future__ import annotations

from pathlib import Path

from tests.cli.test_cli import APP, queuerun


def test_dlq_show_prints_the_traceback(tmp_path: Path) -> None:
    from tests.cli.cliapp import app

    state = tmp_path / "s.sqlite3"
    with app.local(state_file=state) as local:
        job = app.queues("broken").push({"n": 1})
        local.drain(timeout=10)

    shown = queuerun("dlq", "show", "broken", job, "--app", APP, state=state)
    assert shown.returncode == 0, shown.stderr
    trace = shown.stdout.split("  traceback:\n", 1)[1]
    assert trace.startswith("Traceback (most recent call last):")
    assert "cliapp.py" in trace and "in broken" in trace
    assert trace.rstrip().endswith("RuntimeError: cannot handle {'n': 1}")
