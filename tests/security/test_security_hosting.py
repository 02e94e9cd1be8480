"""Development switches cannot reach production: the insecure-push guard reads the process environment
when the server starts, whatever the app's settings say; development servers stay on loopback."""

from __future__ import annotations

import logging

import pytest

from queuerun import App
from queuerun.errors import ConfigurationError
from queuerun.hosting import MANAGED_HOST_MARKERS, is_loopback, warn_if_exposed
from queuerun.server.app import PushServer, create_push_app
from queuerun.settings import Settings

EMULATOR = {"PUBSUB_EMULATOR_HOST": "127.0.0.1:9"}  # loopback; nothing here connects to it


@pytest.fixture
def developer_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    for marker in MANAGED_HOST_MARKERS:
        monkeypatch.delenv(marker, raising=False)
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)


def _app(settings: Settings | dict[str, str]) -> App:
    app = App("guarded", settings=settings)

    @app.queue("emails")
    def emails(payload: object) -> None: ...

    return app


@pytest.mark.parametrize("marker", MANAGED_HOST_MARKERS)
def test_insecure_push_in_injected_settings_is_refused_on_a_managed_host(
    developer_machine: None, monkeypatch: pytest.MonkeyPatch, marker: str
) -> None:
    """The injected mapping has no K_SERVICE (the old guard's only source); the process environment does."""
    monkeypatch.setenv(marker, "shop")
    app = _app({"QUEUERUN_INSECURE_PUSH": "1", **EMULATOR})
    assert app.settings.insecure_push and not app.settings.on_cloud_run
    with pytest.raises(ConfigurationError, match=f"refused on a managed host \\({marker}="):
        create_push_app(app)


def test_a_settings_object_cannot_bypass_the_guard(developer_machine: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K_SERVICE", "shop")
    settings = Settings(insecure_push=True, pubsub_emulator_host="127.0.0.1:9")
    with pytest.raises(ConfigurationError, match="refused on a managed host"):
        PushServer(_app(settings))
    with pytest.raises(ConfigurationError, match="refused on a managed host"):
        PushServer(_app({}), settings)


def test_insecure_push_needs_an_emulator_host(developer_machine: None) -> None:
    with pytest.raises(ConfigurationError, match="needs PUBSUB_EMULATOR_HOST"):
        create_push_app(_app({"QUEUERUN_INSECURE_PUSH": "1"}))


def test_insecure_push_on_a_developer_machine_with_the_emulator_starts(developer_machine: None) -> None:
    server = PushServer(_app({"QUEUERUN_INSECURE_PUSH": "1", **EMULATOR}))
    assert server.verifier is None


def test_with_tokens_checked_a_managed_host_is_fine(developer_machine: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    settings = {
        "QUEUERUN_PUSH_AUDIENCE": "queuerun:p:guarded",
        "QUEUERUN_PUSH_SERVICE_ACCOUNT": "push@p.iam.gserviceaccount.com",
    }
    assert PushServer(_app(settings)).verifier is not None


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "[::1]", "localhost", "127.8.9.10"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "dev.example"])
def test_binding_beyond_loopback_is_said_out_loud(host: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="queuerun.server")
    assert warn_if_exposed(host, server="queuerun dev --emulators", insecure_push=True)
    assert f"listens on {host!r}" in caplog.text
    assert "push any job to it without a token" in caplog.text


def test_loopback_binding_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    assert not warn_if_exposed("127.0.0.1", server="queuerun dev")
    assert caplog.text == ""
