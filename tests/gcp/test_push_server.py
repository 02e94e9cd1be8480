"""The push server in-process: what reaches a handler, what status each request gets, logs, OIDC."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import logging
import time
from typing import Any

import pytest
from gcp_helpers import Calls
from server.test_oidc import AUDIENCE, KID, PUSH_SA, FakeCertsEndpoint, Key, _make_key, claims
from starlette.testclient import TestClient

from queuerun import App, JobMetadata
from queuerun.server.app import ACK_STATUS, PushServer, create_push_app
from queuerun.server.logs import TRACE_KEY, CloudLoggingFormatter, trace_fields
from queuerun.server.oidc import PushTokenVerifier
from queuerun.user_seal import A_USER_SEAL, UserSeal

# Insecure push is the emulator's mode and needs an emulator host; nothing here connects to it (loopback).
USER_KEY = "test-user-key-" + "k" * 32
SETTINGS = {
    "QUEUERUN_INSECURE_PUSH": "1",
    "GOOGLE_CLOUD_PROJECT": "test-project",
    "PUBSUB_EMULATOR_HOST": "127.0.0.1:9",
    "QUEUERUN_USER_KEY": USER_KEY,
}


def envelope(data: bytes = b'{"a":1}', attributes: dict[str, str] | None = None, message_id: str = "101") -> bytes:
    return json.dumps(
        {
            "message": {
                "data": base64.b64encode(data).decode(),
                "attributes": {"qr-content-type": "application/json", **(attributes or {})},
                "messageId": message_id,
                "publishTime": "2024-05-01T12:00:00.123456789Z",
            },
            "subscription": "projects/test-project/subscriptions/s",
        }
    ).encode()


def make_app(calls: Calls, **queue_options: Any) -> App:
    app = App("shop", settings=SETTINGS)

    @app.queue("emails", **queue_options)
    def handle(job: Any, meta: JobMetadata) -> None:
        calls.add((job, meta))
        if job == "fail":
            raise RuntimeError("handler failed")
        if job == "slow":
            meta.signal.wait(5)

    return app


def test_ack_status_is_one_both_pubsub_and_its_emulator_accept() -> None:
    # Production acks 102/200/201/202/204; the emulator acks 102/200/201/203/204 (202 is a nack there).
    assert ACK_STATUS == 204


def test_a_pushed_job_runs_with_its_metadata_and_is_acked() -> None:
    calls = Calls()
    app = make_app(calls)
    attrs = {
        "qr-content-type": "application/json",
        "qr-queued-at": "2024-05-01T11:59:00+00:00",
        "qr-user": "u1",
        "qr-param-source": "web",
    }
    # A user is believed only under the app's seal (queuerun.user_seal), which the pushing runtime adds.
    attrs[A_USER_SEAL] = UserSeal(USER_KEY.encode(), app.name).seal(attrs, b'{"a":1}')
    with TestClient(create_push_app(app)) as client:
        response = client.post("/_pubsub/emails", content=envelope(attributes=attrs))
    assert response.status_code == 204
    [(job, meta)] = calls.items
    assert job == {"a": 1}
    assert (meta.job_id, meta.queue_name, meta.received_count, meta.user) == ("101", "emails", 1, "u1")
    assert meta.params == {"source": "web"}
    assert meta.queued_at == dt.datetime(2024, 5, 1, 11, 59, tzinfo=dt.UTC)


def test_a_failing_handler_gets_a_5xx_and_the_redelivery_counts_as_attempt_two() -> None:
    calls = Calls()
    app = make_app(calls)
    with TestClient(create_push_app(app)) as client:
        first = client.post("/_pubsub/emails", content=envelope(b'"fail"'))
        second = client.post("/_pubsub/emails", content=envelope(b'"fail"'))
    assert (first.status_code, second.status_code) == (500, 500)
    assert "handler failed" in first.json()["error"]
    assert [meta.received_count for _, meta in calls.items] == [1, 2]


def test_delivery_attempt_from_the_envelope_wins_over_the_local_count() -> None:
    calls = Calls()
    app = make_app(calls)
    body = json.loads(envelope())
    body["deliveryAttempt"] = 3
    with TestClient(create_push_app(app)) as client:
        client.post("/_pubsub/emails", content=json.dumps(body))
    assert calls.items[0][1].received_count == 3


def test_a_handler_past_its_timeout_gets_a_5xx_and_sees_the_signal() -> None:
    calls = Calls()
    app = make_app(calls, timeout=0.3)
    started = time.monotonic()
    with TestClient(create_push_app(app)) as client:
        response = client.post("/_pubsub/emails", content=envelope(b'"slow"'))
    assert response.status_code == 500
    assert "timed out" in response.json()["error"]
    assert time.monotonic() - started < 3
    assert calls.items[0][1].signal.aborted


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/_pubsub/nope", envelope(), 404, "no queue named 'nope'"),
        ("/_pubsub/emails", b"{not json", 400, "not JSON"),
        ("/_pubsub/emails", b"[]", 400, "JSON object"),
        ("/_pubsub/emails", b'{"message": {}}', 400, "missing subscription"),
        ("/_pubsub/emails", envelope().replace(b'"data": "', b'"data": "!!'), 400, "base64"),
    ],
)
def test_malformed_requests_get_a_4xx_with_a_clear_message_and_never_reach_a_handler(
    path: str, body: bytes, status: int, message: str
) -> None:
    calls = Calls()
    with TestClient(create_push_app(make_app(calls))) as client:
        response = client.post(path, content=body)
    assert response.status_code == status
    assert message in response.json()["error"]
    assert calls.items == []


def test_an_oversized_body_gets_413_before_it_is_read_whole() -> None:
    calls = Calls()
    app = make_app(calls)
    with TestClient(PushServer(app, max_body_bytes=1000).asgi()) as client:
        declared = client.post("/_pubsub/emails", content=b"x" * 2000)

        def chunks() -> Any:
            for _ in range(10):
                yield b"x" * 500

        streamed = client.post("/_pubsub/emails", content=chunks())  # chunked: no Content-Length
    assert (declared.status_code, streamed.status_code) == (413, 413)
    assert calls.items == []


def test_health_route_answers_without_touching_a_backend() -> None:
    with TestClient(create_push_app(make_app(Calls()))) as client:
        response = client.get("/_health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}  # health, nothing else


def test_trace_header_becomes_cloud_logging_fields() -> None:
    fields = trace_fields("105445aa7843bc8bf206b12000100000/1;o=1", "test-project")
    assert fields == {
        "trace": "projects/test-project/traces/105445aa7843bc8bf206b12000100000",
        "span_id": "0000000000000001",
        "trace_sampled": True,
    }
    assert trace_fields("garbage/with spaces", "p") == {}
    assert trace_fields(None, "p") == {}


def test_job_logs_are_json_lines_cloud_logging_understands() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(CloudLoggingFormatter())
    logger = logging.getLogger("queuerun.server")
    logger.addHandler(handler)
    try:
        calls = Calls()
        with TestClient(create_push_app(make_app(calls))) as client:
            client.post(
                "/_pubsub/emails",
                content=envelope(b'"fail"'),
                headers={"X-Cloud-Trace-Context": "abcdef0123456789abcdef0123456789/7;o=1"},
            )
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue().splitlines()[-1])
    assert line["severity"] == "WARNING"
    assert (line["queue"], line["job_id"], line["status"]) == ("emails", "101", "retry")
    assert line[TRACE_KEY] == "projects/test-project/traces/abcdef0123456789abcdef0123456789"
    assert "handler failed" in line["message"]
    # Error Reporting groups entries by the stack_trace field: the handler's own frame is in it.
    assert line["stack_trace"].startswith("Traceback (most recent call last):")
    assert "in handle" in line["stack_trace"] and line["stack_trace"].endswith("RuntimeError: handler failed")


# -- OIDC -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def signing_key() -> Key:
    return _make_key()


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Basic abc", 401),
        ("bad-audience", 401),
        ("expired", 401),
        ("wrong-issuer", 401),
        ("bad-signature", 401),
        ("wrong-email", 403),
        ("unverified", 403),
        ("valid", 204),
    ],
)
def test_push_requests_are_verified_before_anything_else(
    signing_key: Key, authorization: str | None, status: int
) -> None:
    other_key = _make_key()  # same key id, someone else's key
    now = int(time.time())
    tokens = {
        "bad-audience": signing_key.sign(claims(aud="https://evil.example")),
        "expired": signing_key.sign(claims(iat=now - 7200, exp=now - 3600)),
        "wrong-issuer": signing_key.sign(claims(iss="https://evil.example")),
        "bad-signature": other_key.sign(claims()),
        "wrong-email": signing_key.sign(claims(email="someone@else.iam.gserviceaccount.com")),
        "unverified": signing_key.sign(claims(email_verified=False)),
        "valid": signing_key.sign(claims()),
    }
    header = f"Bearer {tokens[authorization]}" if authorization in tokens else authorization
    calls = Calls()
    app = App("shop", settings={"GOOGLE_CLOUD_PROJECT": "test-project"})

    @app.queue("emails")
    def handle(job: Any) -> None:
        calls.add(job)

    verifier = PushTokenVerifier(
        audience=AUDIENCE, service_account_email=PUSH_SA, request=FakeCertsEndpoint({KID: signing_key.cert_pem})
    )
    headers = {"Authorization": header} if header else {}
    with TestClient(PushServer(app, verifier=verifier).asgi()) as client:
        response = client.post("/_pubsub/emails", content=envelope(), headers=headers)
    assert response.status_code == status
    assert calls.items == ([{"a": 1}] if status == 204 else [])


@pytest.mark.parametrize(
    ("push_auth", "token", "status"),
    [
        ("verify", "stripped", 401),
        ("verify", "signed", 204),
        ("cloud-run-iam", "stripped", 204),
        ("cloud-run-iam", "signed", 204),
        ("cloud-run-iam", "stripped-wrong-email", 403),
        ("cloud-run-iam", "forged", 401),
    ],
)
def test_push_auth_setting_decides_whether_a_token_stripped_by_cloud_run_is_accepted(
    signing_key: Key, monkeypatch: pytest.MonkeyPatch, push_auth: str, token: str, status: int
) -> None:
    # Given a server configured from settings, as on Cloud Run (K_SERVICE set)
    from queuerun.server import oidc

    certs = FakeCertsEndpoint({KID: signing_key.cert_pem})
    monkeypatch.setattr(oidc, "_default_request", lambda: certs)
    settings = {
        "K_SERVICE": "shop",
        "QUEUERUN_BACKEND": "gcp",
        "GOOGLE_CLOUD_PROJECT": "test-project",
        "QUEUERUN_PUSH_AUDIENCE": AUDIENCE,
        "QUEUERUN_PUSH_SERVICE_ACCOUNT": PUSH_SA,
        "QUEUERUN_PUSH_AUTH": push_auth,
    }
    calls = Calls()
    app = App("shop", settings=settings)

    @app.queue("emails")
    def handle(job: Any) -> None:
        calls.add(job)

    signed = signing_key.sign(claims())
    tokens = {
        "signed": signed,
        "stripped": signed.rpartition(".")[0] + ".SIGNATURE_REMOVED_BY_GOOGLE",
        "stripped-wrong-email": signing_key.sign(claims(email="x@evil.example")).rpartition(".")[0]
        + ".SIGNATURE_REMOVED_BY_GOOGLE",
        "forged": _make_key().sign(claims()),
    }

    # When Pub/Sub's push reaches a queue route with that token
    with TestClient(PushServer(app).asgi()) as client:
        response = client.post(
            "/_pubsub/emails", content=envelope(), headers={"Authorization": f"Bearer {tokens[token]}"}
        )

    # Then it runs only when the mode accepts it
    assert response.status_code == status, response.text
    assert calls.items == ([{"a": 1}] if status == 204 else [])
    if push_auth == "verify" and token == "stripped":
        assert "QUEUERUN_PUSH_AUTH=cloud-run-iam" in response.json()["error"]


def test_a_secure_server_without_audience_settings_is_refused() -> None:
    app = App("shop", settings={"GOOGLE_CLOUD_PROJECT": "test-project"})
    with pytest.raises(Exception, match="QUEUERUN_PUSH_AUDIENCE"):
        PushServer(app)
