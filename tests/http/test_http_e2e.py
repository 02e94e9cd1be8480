"""HTTP endpoints end to end on the emulators: a request to the push server's ``/queues/...`` route on a
loopback port, Pub/Sub, the push back to the same server, and the handler seeing payload, params and user."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import emulators
import httpx
import pytest
from emulators import Emulator

from queuerun import App, JobMetadata
from queuerun.emulator_topology import delete_topology, ensure_topology
from queuerun.endpoint import HttpRequest
from queuerun.errors import AuthenticationError
from queuerun.payload import UploadedFile
from queuerun.server.serve import BackgroundServer

pytestmark = pytest.mark.emulators

TOKENS = {"Bearer alice-token": "alice", "Bearer bob-token": "bob"}
DRAIN = 20.0  # seconds; the emulator pushes at most 2 messages at once


async def bearer_auth(request: HttpRequest) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization is None:
        return None
    if authorization not in TOKENS:
        raise AuthenticationError("unknown token")
    return TOKENS[authorization]


@dataclass
class Shop:
    app: App
    client: httpx.Client
    seen: list[tuple[str, Any, JobMetadata]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, queue: str, payload: Any, meta: JobMetadata) -> None:
        with self.lock:
            self.seen.append((queue, payload, meta))

    def drain(self) -> list[tuple[str, Any, JobMetadata]]:
        """Wait until every job pushed so far settled; hand over (and forget) what the handlers saw."""
        self.app.backend.drain(timeout=DRAIN, fail_fast=True)
        with self.lock:
            seen, self.seen[:] = list(self.seen), []
        return seen


def build_app(settings: dict[str, str]) -> tuple[App, Shop]:
    app = App(f"h{uuid.uuid4().hex[:10]}", authenticate=bearer_auth, settings=settings)
    shop = Shop(app, httpx.Client(trust_env=False))  # loopback only: no proxy from the environment

    @app.queue("tasks", http=True, public=True)
    def tasks(payload: Any, meta: JobMetadata) -> None:
        shop.record("tasks", payload, meta)

    @app.queue("updates.fifo", http=True, public=True)
    def updates(payload: Any, meta: JobMetadata) -> None:
        shop.record("updates.fifo", payload, meta)

    @app.queue("followups")
    def followups(payload: Any, meta: JobMetadata) -> None:
        shop.record("followups", payload, meta)

    @app.queue("orders", http=True, public=True)
    async def orders(payload: Any, meta: JobMetadata) -> None:
        shop.record("orders", payload, meta)
        await followups.apush({"order": payload["id"]})

    return app, shop


@pytest.fixture(scope="module")
def shop(pubsub_emulator: Emulator, firestore_emulator: Emulator) -> Iterator[Shop]:
    settings = {
        **emulators.emulator_env(pubsub_emulator, firestore_emulator),
        "QUEUERUN_BACKEND": "gcp",
        "QUEUERUN_INSECURE_PUSH": "1",  # the emulator sends no OIDC token
    }
    app, shop = build_app(settings)
    project, host = pubsub_emulator.project, pubsub_emulator.host
    with BackgroundServer(app) as server:
        shop.client.base_url = httpx.URL(server.url + "/queues")
        try:
            ensure_topology(app, project=project, push_base_url=server.url, emulator_host=host)
            yield shop
        finally:
            shop.client.close()
            app.backend.stop()
            delete_topology(app, project=project, emulator_host=host)


def post(
    shop: Shop, path: str, *, user: str | None = "alice", headers: dict[str, str] | None = None, **kwargs: Any
) -> str:
    """POST as ``user`` (None: anonymous); the job id of the 202."""
    auth = {"authorization": f"Bearer {user}-token"} if user else {}
    res = shop.client.post(path, headers={**auth, **(headers or {})}, **kwargs)
    assert res.status_code == 202, res.text
    assert res.json()["job_id"] == res.headers["x-job-id"]
    return res.headers["x-job-id"]


def test_every_body_kind_reaches_the_handler_with_params_and_user(shop: Shop) -> None:
    sent = {
        post(shop, "/tasks?source=e2e", json={"title": "write docs", "n": [1, 2]}): {
            "title": "write docs",
            "n": [1, 2],
        },
        post(shop, "/tasks", data={"name": "Ada", "tags": ["a", "b"]}): {"name": "Ada", "tags": ["a", "b"]},
        post(
            shop,
            "/tasks",
            user="bob",
            data={"caption": "me"},
            files={"avatar": ("me.png", b"\x89PNG\r\n\x1a\n\x00\xff", "image/png")},
        ): {"caption": "me", "avatar": UploadedFile("me.png", "image/png", b"\x89PNG\r\n\x1a\n\x00\xff")},
        post(shop, "/tasks", user=None, content="żółw", headers={"content-type": "text/plain"}): "żółw",
        post(shop, "/tasks", content=b"\x00\x01\xfe", headers={"content-type": "application/octet-stream"}): (
            b"\x00\x01\xfe"
        ),
    }
    seen = shop.drain()
    got = {meta.job_id: (queue, payload, meta) for queue, payload, meta in seen}
    assert sorted(got) == sorted(sent) and len(seen) == len(sent)
    for job_id, expected in sent.items():
        queue, payload, _ = got[job_id]
        assert (queue, payload, type(payload)) == ("tasks", expected, type(expected))
    users = [got[job_id][2].user for job_id in sent]
    assert users == ["alice", "alice", "bob", None, "alice"]
    params = [dict(got[job_id][2].params) for job_id in sent]
    assert params == [{"source": "e2e"}, {}, {}, {}, {}]


def test_fifo_route_with_dedupe_id_posted_twice_is_one_job(shop: Shop) -> None:
    first = post(shop, "/updates.fifo/user-1/form-9", json={"email": "a@b.c"})
    again = post(shop, "/updates.fifo/user-1/form-9", json={"email": "a@b.c"})
    other = post(shop, "/updates.fifo/user-2", user="bob", json={"email": "x@y.z"})
    seen = shop.drain()
    assert first == again != other
    got = sorted((m.job_id, m.group_id, dict(m.params), m.user, p) for _, p, m in seen)
    assert got == sorted(
        [
            (first, "user-1", {"group": "user-1", "dedupe": "form-9"}, "alice", {"email": "a@b.c"}),
            (other, "user-2", {"group": "user-2"}, "bob", {"email": "x@y.z"}),
        ]
    )


def test_a_job_pushed_by_an_authenticated_handler_carries_the_same_user(shop: Shop) -> None:
    parent = post(shop, "/orders", user="bob", json={"id": 42})
    anonymous = post(shop, "/orders", user=None, json={"id": 43})
    seen = shop.drain()
    by_queue = sorted((queue, payload.get("order", payload.get("id")), meta.user) for queue, payload, meta in seen)
    assert by_queue == [("followups", 42, "bob"), ("followups", 43, None), ("orders", 42, "bob"), ("orders", 43, None)]
    assert {m.job_id for q, _, m in seen if q == "orders"} == {parent, anonymous}


def test_a_rejected_request_queues_nothing(shop: Shop) -> None:
    bad = shop.client.post("/tasks", json={}, headers={"authorization": "Bearer stolen"})
    no_group = shop.client.post("/updates.fifo", json={})
    assert (bad.status_code, bad.headers["www-authenticate"], bad.json()) == (401, "Bearer", {"error": "unknown token"})
    assert no_group.status_code == 400
    assert shop.drain() == []
