"""Queues as HTTP endpoints, through the ASGI test client, on the embedded backend."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from queuerun import App, JobMetadata
from queuerun.endpoint import AppHttp, HttpRequest
from queuerun.errors import AuthenticationError, ConfigurationError
from queuerun.payload import UploadedFile

Seen = list[tuple[str, Any, JobMetadata]]


def build_app(**app_options: Any) -> tuple[App, Seen]:
    app = App("web", **app_options)
    seen: Seen = []

    @app.queue("tasks", http=True, public=True)
    def tasks(payload: Any, meta: JobMetadata) -> None:
        seen.append(("tasks", payload, meta))

    @app.queue("updates.fifo", http=True, public=True)
    def updates(payload: Any, meta: JobMetadata) -> None:
        seen.append(("updates.fifo", payload, meta))

    @app.queue("jsononly", http=True, public=True, accepts=["application/json"])
    def jsononly(payload: Any, meta: JobMetadata) -> None:
        seen.append(("jsononly", payload, meta))

    @app.queue("internal")
    def internal(payload: Any) -> None: ...

    return app, seen


@pytest.fixture
def web() -> Iterator[tuple[TestClient, App, Seen]]:
    app, seen = build_app()
    with app.local() as local, TestClient(AppHttp(app)) as client:
        client.drain = local.drain  # type: ignore[attr-defined]
        yield client, app, seen


def test_json_body_becomes_a_job(web: tuple[TestClient, App, Seen]) -> None:
    client, _, seen = web
    res = client.post("/tasks?source=web", json={"title": "write docs"})
    client.drain(timeout=10)  # type: ignore[attr-defined]
    assert res.status_code == 202
    job_id = res.headers["x-job-id"]
    assert res.json() == {"job_id": job_id, "queue": "tasks"}
    [(queue, payload, meta)] = seen
    assert (queue, payload, meta.job_id, dict(meta.params), meta.user) == (
        "tasks",
        {"title": "write docs"},
        job_id,
        {"source": "web"},
        None,
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"content": "hello", "headers": {"content-type": "text/plain"}}, "hello"),
        ({"content": "żółw".encode("iso-8859-2"), "headers": {"content-type": "text/plain; charset=latin2"}}, "żółw"),
        ({"content": b"\x00\x01", "headers": {"content-type": "application/octet-stream"}}, b"\x00\x01"),
        ({"data": {"name": "Ada", "tags": ["a", "b"]}}, {"name": "Ada", "tags": ["a", "b"]}),
    ],
    ids=["text", "text in another charset", "bytes", "urlencoded form"],
)
def test_content_types(web: tuple[TestClient, App, Seen], kwargs: dict[str, Any], expected: Any) -> None:
    client, _, seen = web
    res = client.post("/tasks", **kwargs)
    client.drain(timeout=10)  # type: ignore[attr-defined]
    assert res.status_code == 202, res.text
    assert seen[0][1] == expected and type(seen[0][1]) is type(expected)


def test_multipart_keeps_fields_and_files(web: tuple[TestClient, App, Seen]) -> None:
    client, _, seen = web
    res = client.post(
        "/tasks",
        data={"caption": "me"},
        files={"avatar": ("me.png", b"\x89PNG\r\n\x1a\n...", "image/png")},
    )
    client.drain(timeout=10)  # type: ignore[attr-defined]
    assert res.status_code == 202, res.text
    payload = seen[0][1]
    assert payload["caption"] == "me"
    assert payload["avatar"] == UploadedFile("me.png", "image/png", b"\x89PNG\r\n\x1a\n...")


def test_fifo_route_carries_group_and_dedupe(web: tuple[TestClient, App, Seen]) -> None:
    client, _, seen = web
    first = client.post("/updates.fifo/user-1/form-9", json={"email": "a@b.c"})
    again = client.post("/updates.fifo/user-1/form-9", json={"email": "a@b.c"})
    other = client.post("/updates.fifo/user-2", json={"email": "x@y.z"})
    client.drain(timeout=10)  # type: ignore[attr-defined]
    assert [r.status_code for r in (first, again, other)] == [202, 202, 202]
    assert first.headers["x-job-id"] == again.headers["x-job-id"] != other.headers["x-job-id"]
    got = sorted((m.group_id, dict(m.params)) for _, _, m in seen)
    assert got == [("user-1", {"group": "user-1", "dedupe": "form-9"}), ("user-2", {"group": "user-2"})]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "fragment"),
    [
        (
            "POST",
            "/tasks",
            {"content": b"{bad", "headers": {"content-type": "application/json"}},
            400,
            "malformed JSON",
        ),
        ("POST", "/tasks", {"content": b"", "headers": {"content-type": "application/json"}}, 422, "body is empty"),
        ("POST", "/updates.fifo", {"json": {"a": 1}}, 400, "group is missing"),
        ("POST", "/nope", {"json": {"a": 1}}, 404, "no HTTP queue named 'nope'"),
        ("POST", "/internal", {"json": {"a": 1}}, 404, "no HTTP queue named 'internal'"),
        ("POST", "/tasks/extra", {"json": {"a": 1}}, 404, "no such route"),
        ("GET", "/tasks", {}, 405, "use POST, not GET"),
        ("POST", "/tasks", {"content": b"x", "headers": {"content-type": "image/png"}}, 415, "'image/png' is not"),
        ("POST", "/tasks", {"content": b"x"}, 415, "no Content-Type"),
        (  # curl -d '{...}' without -H: JSON under curl's default form type
            "POST",
            "/tasks",
            {"content": b'{"a": 1}', "headers": {"content-type": "application/x-www-form-urlencoded"}},
            400,
            "looks like JSON but arrived as a form (Content-Type: application/x-www-form-urlencoded, curl's default "
            "for -d); send it with Content-Type: application/json",
        ),
        ("POST", "/jsononly", {"data": {"a": "1"}}, 415, "send one of ['application/json']"),
        ("POST", "/tasks", {"content": b"\xff\xfe", "headers": {"content-type": "text/plain"}}, 400, "not valid"),
        (
            "POST",
            "/tasks",
            {"content": b"boundary", "headers": {"content-type": "multipart/form-data"}},
            400,
            "without a boundary",
        ),
        ("POST", "/tasks?" + "&".join(f"p{i}=v" for i in range(120)), {"json": {}}, 400, "Pub/Sub allows 100"),
    ],
)
def test_bad_requests_get_a_clear_4xx_and_queue_nothing(
    web: tuple[TestClient, App, Seen], method: str, path: str, kwargs: dict[str, Any], status: int, fragment: str
) -> None:
    client, _, seen = web
    res = client.request(method, path, **kwargs)
    client.drain(timeout=10)  # type: ignore[attr-defined]
    assert res.status_code == status, res.text
    assert fragment in res.json()["error"]
    assert seen == []


def test_body_over_the_limit_is_413() -> None:
    app, seen = build_app(http_max_body=1000)
    with app.local() as local, TestClient(AppHttp(app)) as client:
        declared = client.post("/tasks", content=b"x" * 1001, headers={"content-type": "text/plain"})

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while reading
            for _ in range(5):
                yield b"y" * 300

        streamed = client.post("/tasks", content=chunks(), headers={"content-type": "text/plain"})
        local.drain(timeout=10)
    assert declared.status_code == 413 and streamed.status_code == 413
    assert "1,000-byte limit" in declared.json()["error"]
    assert seen == []


def test_max_body_must_stay_under_pubsub_limit() -> None:
    with pytest.raises(ConfigurationError, match="http_max_body must be 1 to 9,437,184 bytes"):
        App("huge", http_max_body=10 * 1024 * 1024)


def _bearer_auth(request: HttpRequest) -> str | None:
    token = request.headers.get("authorization", "")
    if not token:
        return None
    if token == "Bearer alice-token":
        return "alice"
    if token == "Bearer banned":
        raise AuthenticationError("alice's account is suspended", status=403)
    raise AuthenticationError("unknown token")


def test_authenticated_user_reaches_the_job_and_its_children() -> None:
    app, seen = build_app(authenticate=_bearer_auth)
    children: list[str | None] = []

    @app.queue("child")
    def child(payload: Any, meta: JobMetadata) -> None:
        children.append(meta.user)

    @app.queue("parent", http=True, public=True)
    def parent(payload: Any, meta: JobMetadata) -> None:
        child.push("from parent")

    with app.local() as local, TestClient(AppHttp(app)) as client:
        ok = client.post("/parent", json={}, headers={"authorization": "Bearer alice-token"})
        anon = client.post("/tasks", json={})
        bad = client.post("/tasks", json={}, headers={"authorization": "Bearer nope"})
        banned = client.post("/tasks", json={}, headers={"authorization": "Bearer banned"})
        local.drain(timeout=10)
    assert (ok.status_code, anon.status_code, bad.status_code, banned.status_code) == (202, 202, 401, 403)
    assert bad.headers["www-authenticate"] == "Bearer"
    assert banned.json() == {"error": "alice's account is suspended"}
    assert children == ["alice"]
    assert [m.user for q, _, m in seen if q == "tasks"] == [None]


def test_async_authenticate_hook() -> None:
    async def auth(request: HttpRequest) -> str | None:
        return request.headers.get("x-user")

    app, seen = build_app(authenticate=auth)
    with app.local() as local, TestClient(AppHttp(app)) as client:
        client.post("/tasks", json={}, headers={"x-user": "bob"})
        local.drain(timeout=10)
    assert [m.user for _, _, m in seen] == ["bob"]


def test_queue_http_mounts_in_a_starlette_app() -> None:
    app, seen = build_app()
    site = Starlette(routes=[Mount("/api/updates", app=app.queues("updates.fifo").http)])
    with app.local() as local, TestClient(site) as client:
        res = client.post("/api/updates/user-7", json={"email": "a@b.c"})
        missing = client.post("/api/updates", json={"email": "a@b.c"})
        local.drain(timeout=10)
    assert res.status_code == 202 and missing.status_code == 400
    assert [(m.group_id, p) for _, p, m in seen] == [("user-7", {"email": "a@b.c"})]


def test_queue_http_works_as_a_flask_view() -> None:
    import flask
    app, seen = build_app()
    site = flask.Flask("site")
    view = app.queues("updates.fifo").http.flask_view()
    site.add_url_rule("/updates/<group>", view_func=view, methods=["POST"])
    site.add_url_rule("/updates/<group>/<dedupe>", endpoint="dedupe", view_func=view, methods=["POST"])
    with app.local() as local:
        client = site.test_client()
        res = client.post("/updates/u1/d1", data=json.dumps({"a": 1}), content_type="application/json")
        dup = client.post("/updates/u1/d1", data=json.dumps({"a": 1}), content_type="application/json")
        bad = client.post("/updates/u1", data="{", content_type="application/json")
        local.drain(timeout=10)
    assert (res.status_code, dup.status_code, bad.status_code) == (202, 202, 400)
    assert res.headers["x-job-id"] == dup.headers["x-job-id"]
    assert [(m.group_id, p) for _, p, m in seen] == [("u1", {"a": 1})]


def test_http_on_a_queue_not_declared_for_it() -> None:
    app, _ = build_app()
    with pytest.raises(ConfigurationError, match="declare it with http=True"):
        _ = app.queues("internal").http
