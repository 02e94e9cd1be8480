"""Module-level queues(name): the handler's app inside a job, else the only App, else an error."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from queuerun import App, ConfigurationError


def _run(code: str) -> str:
    # A fresh interpreter: other tests' apps stay alive in sys.modules and would be "the other app".
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_resolves_the_only_app() -> None:
    out = _run(
        """
        from queuerun import App, QueueNotFoundError, queues
        app = App("onlyapp")
        app.queue("emails")(lambda job: None)
        print(queues("emails").app is app)
        try:
            queues("nope")
        except QueueNotFoundError as e:
            print(e)
        """
    )
    assert out.splitlines() == ["True", "no queue named 'nope' (declared: emails)"]


def test_two_apps_outside_a_handler_is_an_error() -> None:
    out = _run(
        """
        from queuerun import App, ConfigurationError, queues
        a, b = App("appa"), App("appb")
        try:
            queues("emails")
        except ConfigurationError as e:
            print(e)
        """
    )
    assert out == "queues('emails'): 2 apps exist (appa, appb); use app.queues('emails') instead"


def test_no_app_is_an_error() -> None:
    out = _run(
        """
        from queuerun import ConfigurationError, queues
        try:
            queues("emails")
        except ConfigurationError as e:
            print(e)
        """
    )
    assert out == "queues('emails'): no App exists yet; create App(...) first"


def test_bad_app_names() -> None:
    for bad in ("", "Upper", "9starts-with-digit", "ends-", "a" * 21, "under_score"):
        with pytest.raises(ConfigurationError, match="app name"):
            App(bad)


def test_declaring_a_queue_twice() -> None:
    app = App("twice")
    app.queue("q")(lambda job: None)
    with pytest.raises(ConfigurationError, match="'q' is declared twice"):
        app.queue("q")(lambda job: None)
