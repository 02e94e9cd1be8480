"""The functions-framework target ``queuerun``: the same push server in WSGI (Flask) and ASGI mode."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from queuerun.server import functions
from tests.server import functions_app

MAIN = "from queuerun.server.functions import queuerun  # noqa: F401\n"


def envelope(payload: Any, message_id: str = "7") -> bytes:
    return json.dumps(
        {
            "message": {
                "data": base64.b64encode(json.dumps(payload).encode()).decode(),
                "attributes": {"qr-content-type": "application/json"},
                "messageId": message_id,
                "publishTime": "2024-05-01T12:00:00Z",
            },
            "subscription": "projects/test-project/subscriptions/s",
        }
    ).encode()


@pytest.fixture
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An app's main.py exporting the target; the App named by QUEUERUN_APP; a fresh server per test."""
    main = tmp_path / "main.py"
    main.write_text(MAIN)
    monkeypatch.setenv("QUEUERUN_APP", "tests.server.functions_app:app")
    monkeypatch.setattr(functions, "_server", None)
    monkeypatch.setattr(functions, "_asgi", None)
    monkeypatch.setattr(sys, "path", list(sys.path))  # functions-framework appends the source folder
    had_main = sys.modules.get("main")
    functions_app.received.clear()
    yield str(main)
    if functions._server is not None:
        functions._server.close()
    if had_main is None:
        sys.modules.pop("main", None)  # functions-framework registers the source as module "main"
    else:
        sys.modules["main"] = had_main


@pytest.fixture
def wsgi_client(source: str) -> Any:
    from functions_framework import create_app  # what `functions-framework --target queuerun` serves

    return create_app(target="queuerun", source=source).test_client()


def test_wsgi_mode_runs_a_pushed_job_and_acks_it(wsgi_client: Any) -> None:
    response = wsgi_client.post("/_pubsub/emails", data=envelope({"to": "a@example.com"}))

    assert response.status_code == 204
    assert functions_app.received == [{"to": "a@example.com"}]


def test_wsgi_mode_reads_a_body_larger_than_one_chunk(wsgi_client: Any) -> None:
    big = "x" * (3 * functions.READ_CHUNK)

    response = wsgi_client.post("/_pubsub/emails", data=envelope({"blob": big}))

    assert response.status_code == 204
    assert functions_app.received == [{"blob": big}]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("POST", "/_pubsub/emails", b"{not json", 400, "not JSON"),
        ("POST", "/_pubsub/nope", b"{}", 404, "no queue named 'nope'"),
        ("GET", "/_pubsub/emails", b"", 405, "Method Not Allowed"),
        ("GET", "/elsewhere", b"", 404, "Not Found"),
    ],
)
def test_wsgi_mode_answers_bad_requests_with_the_push_servers_json_errors(
    wsgi_client: Any, method: str, path: str, body: bytes, status: int, message: str
) -> None:
    response = wsgi_client.open(path, method=method, data=body)

    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert message in response.get_json()["error"]
    assert functions_app.received == []


def test_wsgi_mode_serves_health_with_headers_and_body(wsgi_client: Any) -> None:
    response = wsgi_client.get("/_health?probe=1")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}  # health only: not the app's name nor its queues
    assert int(response.headers["content-length"]) == len(response.data)


def test_asgi_mode_runs_a_pushed_job_and_answers_errors(source: str) -> None:
    from functions_framework.aio import create_asgi_app  # what `functions-framework --asgi` serves

    with TestClient(create_asgi_app(target="queuerun", source=source)) as client:
        done = client.post("/_pubsub/emails", content=envelope({"to": "b@example.com"}))
        bad = client.post("/_pubsub/emails", content=b"{not json")
        unknown = client.post("/_pubsub/nope", content=b"{}")
        health = client.get("/_health")

    assert done.status_code == 204
    assert functions_app.received == [{"to": "b@example.com"}]
    assert (bad.status_code, unknown.status_code) == (400, 404)
    assert health.json() == {"status": "ok"}


def test_wsgi_scope_carries_path_query_and_headers() -> None:
    environ = {
        "REQUEST_METHOD": "post",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/queues/caf\u00c3\u00a9",  # PEP 3333: the UTF-8 bytes of "café" as latin-1 text
        "QUERY_STRING": "a=1&b=2",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "8080",
        "REMOTE_ADDR": "10.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": "2",
        "HTTP_X_CLOUD_TRACE_CONTEXT": "abc/1;o=1",
        "wsgi.url_scheme": "https",
    }

    scope = functions.wsgi_scope(environ)

    assert (scope["method"], scope["path"], scope["query_string"], scope["scheme"]) == (
        "POST",
        "/queues/café",
        b"a=1&b=2",
        "https",
    )
    assert dict(scope["headers"]) == {
        b"content-type": b"application/json",
        b"content-length": b"2",
        b"x-cloud-trace-context": b"abc/1;o=1",
    }
    assert scope["server"] == ("localhost", 8080) and scope["client"] == ("10.0.0.1", 0)
