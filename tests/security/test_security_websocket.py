"""WebSockets: cross-site handshakes, connection caps, duplicate credentials, query strings in logs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from queuerun import App
from queuerun.endpoint import HttpRequest
from queuerun.server.websocket import (
    CLOSE_BAD_REQUEST,
    CLOSE_FORBIDDEN,
    CLOSE_TRY_AGAIN_LATER,
    origin_allowed,
    websocket_app,
)

HOST = "shop.example"


class CookieHook:
    """Signs in by the session cookie, as a browser sends it on every request to the site: counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, request: HttpRequest) -> str | None:
        self.calls += 1
        cookie = request.headers.get("cookie", "")
        token = request.query.get("token")
        if "session=alice" in cookie or token == "ticket-alice":
            return "alice"
        if "session=bob" in cookie:
            return "bob"
        return None


def client_for(hook: CookieHook, **options: Any) -> TestClient:
    app = App("sockets", authenticate=hook)  # embedded backend: its hub is in this process
    asgi = Starlette(routes=[WebSocketRoute("/_ws", websocket_app(app, **options))])
    return TestClient(asgi, base_url=f"http://{HOST}")


@contextlib.contextmanager
def opened(client: TestClient, **headers: str) -> Iterator[Any]:
    with client.websocket_connect("/_ws", headers={"host": HOST, **headers}) as ws:
        yield ws


def close_code(client: TestClient, url: str = "/_ws", **headers: str) -> int:
    with (
        pytest.raises(WebSocketDisconnect) as closed,
        client.websocket_connect(url, headers={"host": HOST, **headers}) as ws,
    ):
        ws.receive_text()
    return closed.value.code


def test_a_cross_site_page_cannot_open_a_socket_with_the_user_s_cookie() -> None:
    """Cross-site WebSocket hijacking: evil.example's page connects; the browser adds shop's cookie."""
    hook = CookieHook()
    client = client_for(hook)
    code = close_code(client, origin="https://evil.example", cookie="session=alice")
    assert code == CLOSE_FORBIDDEN
    assert hook.calls == 0  # refused before the hook saw the cookie


def test_the_same_origin_and_listed_origins_connect() -> None:
    hook = CookieHook()
    client = client_for(hook, allowed_origins=["https://app.shop.example"])
    with opened(client, origin=f"https://{HOST}", cookie="session=alice"):
        pass
    with opened(client, origin="https://app.shop.example/", cookie="session=alice"):
        pass
    assert hook.calls == 2


def test_origins_come_from_the_setting_when_not_given(monkeypatch: pytest.MonkeyPatch) -> None:
    hook = CookieHook()
    app = App(
        "sockets", authenticate=hook, settings={"QUEUERUN_ALLOWED_ORIGINS": "https://a.example, https://b.example"}
    )
    endpoint = websocket_app(app)
    assert endpoint.allowed_origins == {"https://a.example", "https://b.example"}


def test_origin_rules() -> None:
    assert origin_allowed({}, frozenset())  # not a browser: nothing to hijack
    assert origin_allowed({"origin": "https://x.example", "host": "x.example"}, frozenset())
    assert not origin_allowed({"origin": "https://x.example.evil.example", "host": "x.example"}, frozenset())
    assert not origin_allowed({"origin": "null", "host": "x.example"}, frozenset())  # sandboxed frames, files
    assert origin_allowed({"origin": "https://evil.example"}, frozenset({"*"}))


def test_a_user_cannot_hold_more_than_the_per_user_cap() -> None:
    hook = CookieHook()
    client = client_for(hook, max_connections_per_user=2)
    with opened(client, cookie="session=alice"), opened(client, cookie="session=alice"):
        assert close_code(client, cookie="session=alice") == CLOSE_TRY_AGAIN_LATER
        with opened(client, cookie="session=bob"):  # another user is not held back
            pass
    with opened(client, cookie="session=alice"):  # closed sockets are given back
        pass


def test_an_instance_cannot_hold_more_than_its_cap_and_refuses_before_the_hook() -> None:
    hook = CookieHook()
    client = client_for(hook, max_connections=2)
    with opened(client, cookie="session=alice"), opened(client, cookie="session=bob"):
        calls = hook.calls
        assert close_code(client, cookie="session=alice") == CLOSE_TRY_AGAIN_LATER
        assert hook.calls == calls


def test_two_authorization_headers_close_the_handshake() -> None:
    """Driven as raw ASGI: test clients merge repeated headers, an attacker's client does not."""
    hook = CookieHook()
    endpoint = websocket_app(App("sockets", authenticate=hook))
    scope = {
        "type": "websocket",
        "path": "/_ws",
        "query_string": b"",
        "headers": [(b"host", HOST.encode()), (b"authorization", b"Bearer a"), (b"authorization", b"Bearer b")],
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    asyncio.run(endpoint(scope, receive, send))
    assert [m["type"] for m in sent] == ["websocket.accept", "websocket.close"]
    assert sent[-1]["code"] == CLOSE_BAD_REQUEST
    assert hook.calls == 0


def test_a_query_string_token_never_reaches_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = client_for(CookieHook())
    with client.websocket_connect("/_ws?token=ticket-alice", headers={"host": HOST}):
        pass
    close_code(client, "/_ws?token=ticket-wrong")
    close_code(client, "/_ws?token=ticket-alice", origin="https://evil.example")
    assert "alice" in caplog.text  # the connection was logged, by user
    assert "ticket-" not in caplog.text


def test_a_hook_returning_a_non_string_closes_with_1011_and_echoes_nothing(caplog: pytest.LogCaptureFixture) -> None:
    session = {"user": "alice", "secret": "s3cr3t-session"}
    app = App("sockets", authenticate=lambda request: session)
    client = TestClient(Starlette(routes=[WebSocketRoute("/_ws", websocket_app(app))]), base_url=f"http://{HOST}")
    with pytest.raises(WebSocketDisconnect) as closed, client.websocket_connect("/_ws", headers={"host": HOST}) as ws:
        ws.receive_text()
    assert closed.value.code == 1011
    assert closed.value.reason == "authentication failed: server error"
    assert "s3cr3t" not in caplog.text and "got a dict" in caplog.text
