"""socket.send on the embedded backend: a handler's messages reach the user's WebSocket in this process."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from queuerun import App, JobMetadata, socket
from queuerun.endpoint import AppHttp, HttpRequest
from queuerun.errors import AuthenticationError
from queuerun.server.websocket import websocket_app
from queuerun.socket_hub import SocketUsageError, hub_for
from queuerun.sockets import MAX_MESSAGE_BYTES, Socket, encode_message

TOKENS = {"t-alice": "alice", "t-bob": "bob", "t-carol": "carol"}


def token_auth(request: HttpRequest) -> str | None:
    """Tokens from the query string (browsers) or an Authorization header (HTTP clients)."""
    token = request.query.get("token") or request.headers.get("authorization", "").removeprefix("Bearer ")
    if not token:
        return None
    if token == "t-banned":
        raise AuthenticationError("user is banned", status=403)
    if token not in TOKENS:
        raise AuthenticationError("unknown token")
    return TOKENS[token]


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


class Shop:
    def __init__(self, authenticate: Any = token_auth) -> None:
        self.app = App("shop", authenticate=authenticate)
        self.errors: list[BaseException] = []
        app = self.app

        @app.queue("orders", http=True)
        def orders(order: dict[str, Any], meta: JobMetadata) -> None:
            for status in order.get("statuses", ["preparing", "packaging", "shipped"]):
                socket.send({"id": order["id"], "status": status})

        @app.queue("raw")
        async def raw(payload: dict[str, Any], meta: JobMetadata) -> None:
            await socket.asend(payload["text"])
            await socket.asend(payload["text"].encode())
            await socket.asend({"at": dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)})

        @app.queue("broadcast")
        def broadcast(payload: dict[str, Any]) -> None:
            socket.to(payload["to"]).send(payload["message"])

        @app.queue("parent")
        def parent(payload: Any) -> None:
            app.queues("child").push(payload)  # the child inherits the user

        @app.queue("child")
        def child(payload: Any, meta: JobMetadata) -> None:
            socket.send({"child_of": meta.user})

        @app.queue("misuse")
        def misuse(payload: Any) -> None:
            try:
                socket.send("to whom?")
            except SocketUsageError as exc:
                self.errors.append(exc)

    def asgi(self) -> Starlette:
        return Starlette(
            routes=[WebSocketRoute("/_ws", websocket_app(self.app)), Mount("/queues", app=AppHttp(self.app))]
        )


@pytest.fixture
def shop() -> Iterator[tuple[Shop, TestClient, Any]]:
    s = Shop()
    with s.app.local() as local, TestClient(s.asgi()) as client:
        yield s, client, local


def connected(app: App, user: str, count: int = 1) -> Callable[[], bool]:
    return lambda: hub_for(app).connection_count(user) == count


def test_a_handlers_sends_reach_the_users_socket_in_order(shop: tuple[Shop, TestClient, Any]) -> None:
    s, client, _ = shop
    statuses = [f"step-{i}" for i in range(50)]
    with client.websocket_connect("/_ws?token=t-alice") as ws:
        s.app.queues("orders").push({"id": 7, "statuses": statuses}, user="alice")
        got = [ws.receive_json() for _ in statuses]
    assert got == [{"id": 7, "status": status} for status in statuses]


def test_job_queued_over_http_by_an_authenticated_user_notifies_that_user(
    shop: tuple[Shop, TestClient, Any],
) -> None:
    _, client, _ = shop
    with client.websocket_connect("/_ws?token=t-alice") as ws:
        res = client.post("/queues/orders", json={"id": 1}, headers={"authorization": "Bearer t-alice"})
        assert res.status_code == 202
        got = [ws.receive_json()["status"] for _ in range(3)]
    assert got == ["preparing", "packaging", "shipped"]


def test_strings_bytes_and_json_keep_their_frame_type(shop: tuple[Shop, TestClient, Any]) -> None:
    s, client, _ = shop
    with client.websocket_connect("/_ws?token=t-alice") as ws:
        s.app.queues("raw").push({"text": "héllo"}, user="alice")
        assert ws.receive() == {"type": "websocket.send", "text": "héllo"}
        assert ws.receive() == {"type": "websocket.send", "bytes": "héllo".encode()}
        assert ws.receive_json() == {"at": "2030-01-02T03:04:05+00:00"}


def test_every_connection_of_the_user_receives_and_no_one_else(shop: tuple[Shop, TestClient, Any]) -> None:
    s, client, local = shop
    with (
        client.websocket_connect("/_ws?token=t-alice") as first,
        client.websocket_connect("/_ws?token=t-alice") as second,
        client.websocket_connect("/_ws?token=t-bob") as bob,
    ):
        s.app.queues("orders").push({"id": 2, "statuses": ["a"]}, user="alice")
        local.drain(timeout=10, fail_fast=True)
        s.app.queues("orders").push({"id": 3, "statuses": ["b"]}, user="bob")
        assert first.receive_json() == {"id": 2, "status": "a"}
        assert second.receive_json() == {"id": 2, "status": "a"}
        assert bob.receive_json() == {"id": 3, "status": "b"}  # not alice's message first


def test_to_sends_to_the_named_users_not_the_jobs_user(shop: tuple[Shop, TestClient, Any]) -> None:
    s, client, _ = shop
    with client.websocket_connect("/_ws?token=t-alice") as alice, client.websocket_connect("/_ws?token=t-bob") as bob:
        s.app.queues("broadcast").push({"to": ["bob", "nobody"], "message": "for bob"}, user="alice")
        s.app.queues("broadcast").push({"to": "alice", "message": "for alice"}, user="bob")
        assert bob.receive_text() == "for bob"
        assert alice.receive_text() == "for alice"


def test_a_job_pushed_by_a_handler_sends_to_the_inherited_user(shop: tuple[Shop, TestClient, Any]) -> None:
    s, client, _ = shop
    with client.websocket_connect("/_ws?token=t-carol") as ws:
        s.app.queues("parent").push({}, user="carol")
        assert ws.receive_json() == {"child_of": "carol"}


def test_send_to_a_user_with_no_connection_is_a_no_op(shop: tuple[Shop, TestClient, Any]) -> None:
    s, client, local = shop
    s.app.queues("orders").push({"id": 4}, user="alice")
    local.drain(timeout=10, fail_fast=True)  # the job succeeded: no error from the sends
    assert local.dead_letters("orders") == []
    with client.websocket_connect("/_ws?token=t-alice") as ws:
        s.app.queues("orders").push({"id": 5, "statuses": ["later"]}, user="alice")
        assert ws.receive_json() == {"id": 5, "status": "later"}  # nothing of job 4 was kept for later


def test_send_in_a_job_without_a_user_is_a_logged_no_op_and_outside_a_job_an_error(
    shop: tuple[Shop, TestClient, Any], caplog: pytest.LogCaptureFixture
) -> None:
    s, _, local = shop
    with caplog.at_level("WARNING", logger="queuerun.sockets"):
        # An anonymous push (as the README's order example gets from a visitor who is not logged in)
        s.app.queues("misuse").push({})
        s.app.queues("misuse").push({})
        local.drain(timeout=10, fail_fast=True)
    assert s.errors == [] and local.dead_letters("misuse") == []  # the jobs succeeded, nothing retried
    warnings = [r.getMessage() for r in caplog.records if r.name == "queuerun.sockets"]
    assert len(warnings) == 1 and "'misuse' sent nothing" in warnings[0] and "no user" in warnings[0]
    with pytest.raises(SocketUsageError, match=r"socket\.send needs a user.*socket\.to\(user_ids\)"):
        Socket(s.app).send("outside any job")


@pytest.mark.parametrize("bad", ["", None, ["ok", ""]])
def test_to_requires_user_ids(bad: Any) -> None:
    with pytest.raises(SocketUsageError, match="user ID is required"):
        socket.to(bad)


def test_messages_that_cannot_be_sent_fail_at_send() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(SocketUsageError, match="cannot be serialized"):
        encode_message(loop)
    with pytest.raises(SocketUsageError, match="cannot be serialized"):
        encode_message({"when": object()})
    with pytest.raises(SocketUsageError, match="over the limit"):
        encode_message(b"x" * (MAX_MESSAGE_BYTES + 1))


@pytest.mark.parametrize(
    ("url", "code", "reason"),
    [
        ("/_ws", 4401, "authentication required"),
        ("/_ws?token=wrong", 4401, "unknown token"),
        ("/_ws?token=t-banned", 4403, "user is banned"),
    ],
)
def test_handshakes_the_hook_refuses_are_closed_with_4401_or_4403(
    shop: tuple[Shop, TestClient, Any], url: str, code: int, reason: str
) -> None:
    s, client, _ = shop
    with client.websocket_connect(url) as ws, pytest.raises(WebSocketDisconnect) as closed:
        ws.receive_text()
    assert (closed.value.code, closed.value.reason) == (code, reason)
    assert hub_for(s.app).connection_count() == 0


def test_an_app_without_an_authenticate_hook_refuses_sockets() -> None:
    s = Shop(authenticate=None)
    with (
        s.app.local(),
        TestClient(s.asgi()) as client,
        client.websocket_connect("/_ws") as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_text()
    assert closed.value.code == 4401
    assert "no authenticate hook" in closed.value.reason


def test_a_failing_hook_closes_with_1011() -> None:
    def broken(request: HttpRequest) -> str:
        raise RuntimeError("database down")

    s = Shop(authenticate=broken)
    with (
        s.app.local(),
        TestClient(s.asgi()) as client,
        client.websocket_connect("/_ws") as ws,
        pytest.raises(WebSocketDisconnect) as closed,
    ):
        ws.receive_text()
    assert closed.value.code == 1011
    assert "database down" not in closed.value.reason  # internals are logged, not shown


def test_async_hooks_and_subprotocol_tokens_work() -> None:
    async def from_protocol(request: HttpRequest) -> str | None:
        offered = [p.strip() for p in request.headers.get("sec-websocket-protocol", "").split(",")]
        return TOKENS.get(offered[1]) if len(offered) == 2 and offered[0] == "token" else None

    s = Shop(authenticate=from_protocol)
    with (
        s.app.local(),
        TestClient(s.asgi()) as client,
        client.websocket_connect("/_ws", subprotocols=["token", "t-bob"]) as ws,
    ):
        assert ws.accepted_subprotocol == "token"
        s.app.queues("orders").push({"id": 9, "statuses": ["x"]}, user="bob")
        assert ws.receive_json() == {"id": 9, "status": "x"}


def test_disconnect_removes_the_connection_and_later_sends_are_no_ops(shop: tuple[Shop, TestClient, Any]) -> None:
    s, client, local = shop
    hub = hub_for(s.app)
    with client.websocket_connect("/_ws?token=t-alice"), client.websocket_connect("/_ws?token=t-alice") as second:
        wait_until(connected(s.app, "alice", 2))
        second.close()
        wait_until(connected(s.app, "alice", 1))
    wait_until(connected(s.app, "alice", 0))
    assert hub.local_users() == []
    s.app.queues("orders").push({"id": 6}, user="alice")
    local.drain(timeout=10, fail_fast=True)


def test_plain_http_to_the_socket_endpoint_gets_426() -> None:
    s = Shop()
    with TestClient(websocket_app(s.app)) as client:
        res = client.get("/")
    assert res.status_code == 426
    assert "WebSocket" in res.json()["error"]


def test_a_client_that_does_not_read_is_cut_off_with_1013() -> None:
    s = Shop()
    endpoint = websocket_app(s.app, max_pending=5)
    asgi = Starlette(routes=[WebSocketRoute("/_ws", endpoint)])
    with s.app.local() as local, TestClient(asgi) as client, client.websocket_connect("/_ws?token=t-alice") as ws:
        wait_until(connected(s.app, "alice"))
        # The test client's transport reads everything the server sends, so block the writer
        # instead: the hub delivers faster than a stuck connection can drain.
        [connection] = hub_for(s.app)._connections["alice"]
        for i in range(20):
            connection._put(encode_message({"n": i}))  # type: ignore[attr-defined]
        messages: list[Any] = []
        with pytest.raises(WebSocketDisconnect) as closed:
            while True:
                messages.append(ws.receive_json())
        local.drain(timeout=5)
    assert closed.value.code == 1013
    assert messages == [{"n": i} for i in range(5)]
