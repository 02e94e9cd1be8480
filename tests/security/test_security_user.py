"""Who may set a job's user: a publisher writing ``qr-user`` itself is not believed; the runtime's seal is.

Attacks are pushes a ``grant_publish`` member could cause (any attributes, any payload), delivered to
the real push server; the genuine path is the GCP backend publishing to the Pub/Sub emulator.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from queuerun import App, JobMetadata
from queuerun.errors import ConfigurationError
from queuerun.server.app import create_push_app
from queuerun.settings import Settings
from queuerun.user_seal import A_USER_SEAL, UserSeal, admitted, user_seal

KEY = "an-app-user-key-of-at-least-32-bytes!"
ATTRS = {"qr-content-type": "application/json", "qr-queue": "notify", "qr-queued-at": "2026-01-01T00:00:00+00:00"}


def _envelope(data: bytes, attributes: dict[str, str], message_id: str) -> bytes:
    message = {
        "data": base64.b64encode(data).decode(),
        "attributes": attributes,
        "messageId": message_id,
        "publishTime": "2026-01-01T00:00:00Z",
    }
    return json.dumps({"message": message, "subscription": "projects/p/subscriptions/s"}).encode()


@pytest.fixture
def server() -> Iterator[tuple[TestClient, list[JobMetadata]]]:
    settings = {
        "QUEUERUN_INSECURE_PUSH": "1",
        "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",  # loopback; nothing here connects to it
        "GOOGLE_CLOUD_PROJECT": "p",
        "QUEUERUN_USER_KEY": KEY,
    }
    app = App("notes", settings=settings)
    seen: list[JobMetadata] = []

    @app.queue("notify")
    def notify(payload: Any, meta: JobMetadata) -> None:
        seen.append(meta)

    with TestClient(create_push_app(app)) as client:
        yield client, seen


def _seal(attributes: dict[str, str], data: bytes, key: str = KEY, app: str = "notes") -> dict[str, str]:
    return {**attributes, A_USER_SEAL: UserSeal(key.encode(), app).seal(attributes, data)}


def _deliver(client: TestClient, data: bytes, attributes: dict[str, str], message_id: str) -> None:
    response = client.post("/_pubsub/notify", content=_envelope(data, attributes, message_id))
    assert response.status_code == 204, response.text


def test_a_sealed_user_is_the_job_s_user(server: tuple[TestClient, list[JobMetadata]]) -> None:
    client, seen = server
    data = b'{"n": 1}'
    _deliver(client, data, _seal({**ATTRS, "qr-user": "alice"}, data), "m1")
    assert [m.user for m in seen] == ["alice"]


ATTACKS = {
    "no seal": lambda: ({**ATTRS, "qr-user": "ceo"}, b'{"n": 1}'),
    "a seal copied onto another payload": lambda: (
        {**_seal({**ATTRS, "qr-user": "ceo"}, b'{"n": 1}'), "qr-user": "ceo"},
        b'{"n": 2, "wire": "everything"}',
    ),
    "a seal of another user": lambda: (
        {**_seal({**ATTRS, "qr-user": "alice"}, b'{"n": 1}'), "qr-user": "ceo"},
        b'{"n": 1}',
    ),
    "a seal under another key": lambda: (
        _seal({**ATTRS, "qr-user": "ceo"}, b'{"n": 1}', key="a-guessed-key-that-is-long-enough!!"),
        b'{"n": 1}',
    ),
    "a seal of another app": lambda: (_seal({**ATTRS, "qr-user": "ceo"}, b'{"n": 1}', app="other"), b'{"n": 1}'),
    "a seal moved to another group": lambda: (
        {**_seal({**ATTRS, "qr-user": "ceo", "qr-group": "g1"}, b'{"n": 1}'), "qr-group": "g2"},
        b'{"n": 1}',
    ),
    "a seal with another param": lambda: (
        {**_seal({**ATTRS, "qr-user": "ceo"}, b'{"n": 1}'), "qr-param-amount": "1000000"},
        b'{"n": 1}',
    ),
}


@pytest.mark.parametrize("attack", list(ATTACKS), ids=list(ATTACKS))
def test_a_user_the_runtime_did_not_seal_is_stripped_and_the_job_runs_anonymous(
    server: tuple[TestClient, list[JobMetadata]], attack: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, seen = server
    attributes, data = ATTACKS[attack]()
    _deliver(client, data, attributes, "m-attack")
    assert [m.user for m in seen] == [None]
    assert "carries a user the runtime did not seal" in caplog.text
    assert "ceo" not in caplog.text  # the claimed user is not logged: it is the attacker's text


def test_a_dead_letter_s_forged_user_is_not_replayed() -> None:
    """Replay republishes a dead letter's attributes: only a user that verifies survives it."""
    seal = UserSeal(KEY.encode(), "notes")
    forged = {**ATTRS, "qr-user": "ceo"}
    assert "qr-user" not in admitted(seal, forged, b"{}", queue="notify", job_id="d1")
    genuine = _seal({**ATTRS, "qr-user": "alice"}, b"{}")
    assert admitted(seal, genuine, b"{}", queue="notify", job_id="d2")["qr-user"] == "alice"


def test_without_a_key_on_a_managed_host_no_user_is_sealed_or_believed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K_SERVICE", "notes")
    assert user_seal(None, "notes") is None
    from queuerun.backends.gcp import GcpBackend

    app = App("notes")

    @app.queue("notify")
    def notify(payload: Any) -> None: ...

    backend = GcpBackend(project="p", publisher=_NoPublisher(), app_name="notes")
    backend.bind(app)
    with pytest.raises(ConfigurationError, match="QUEUERUN_USER_KEY is not set"):
        backend._publish(app.spec("notify"), [_job("alice")])


class _NoPublisher:
    def publish(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("nothing may be published when the user cannot be sealed")


def _job(user: str) -> Any:
    from queuerun.wire import build_job

    return build_job("notify", {"n": 1}, group_id=None, dedupe_id=None, params=None, user=user)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="QUEUERUN_USER_KEY must be at least 32 bytes"):
        user_seal("short", "notes")


def test_the_key_never_shows_in_a_settings_repr() -> None:
    settings = Settings.from_environ({"QUEUERUN_USER_KEY": KEY})
    assert settings.user_key == KEY
    assert KEY not in repr(settings)


# -- on the emulators: what a grant_publish member publishes, and what the app pushes -----------------


@pytest.mark.emulators
def test_on_pubsub_a_publisher_s_user_is_stripped_and_the_app_s_own_is_kept(
    pubsub_emulator: Any, firestore_emulator: Any
) -> None:
    import threading
    import uuid

    import emulators

    from queuerun.backends.gcp import make_publisher
    from queuerun.emulator_topology import delete_topology, ensure_topology
    from queuerun.server.serve import BackgroundServer

    settings = {
        **emulators.emulator_env(pubsub_emulator, firestore_emulator),
        "QUEUERUN_BACKEND": "gcp",
        "QUEUERUN_INSECURE_PUSH": "1",  # the emulator sends no OIDC token
        "QUEUERUN_USER_KEY": KEY,
    }
    app = App(f"u{uuid.uuid4().hex[:10]}", settings=settings)
    users: dict[str, str | None] = {}
    arrived = threading.Event()

    @app.queue("notify")
    def notify(payload: Any, meta: JobMetadata) -> None:
        users[payload["tag"]] = meta.user
        if len(users) == 2:
            arrived.set()

    project, host = pubsub_emulator.project, pubsub_emulator.host
    with BackgroundServer(app) as server:
        try:
            ensure_topology(app, project=project, push_base_url=server.url, emulator_host=host)
            app.queues("notify").push({"tag": "genuine"}, user="alice")
            publisher = make_publisher(emulator_host=host)
            try:  # what any grant_publish member can do: its own message, its own attributes
                publisher.publish(
                    app.backend.topic_path("notify"),  # type: ignore[attr-defined]
                    json.dumps({"tag": "forged"}).encode(),
                    **{**ATTRS, "qr-user": "ceo", A_USER_SEAL: "v1." + "0" * 64},
                ).result(timeout=30)
            finally:
                publisher.stop()
            assert arrived.wait(30), f"jobs run so far: {users}"
        finally:
            app.backend.stop()
            delete_topology(app, project=project, emulator_host=host)
    assert users == {"genuine": "alice", "forged": None}
