"""Ids are what they look like: no dedupe collisions through separators, path segments decoded once,
invalid UTF-8 refused rather than merged, user ids bounded at the hook's output."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from loopback import serve
from starlette.testclient import TestClient

from queuerun import App, JobMetadata
from queuerun.dedupe import dedupe_key
from queuerun.endpoint import AppHttp, HttpRequest
from queuerun.errors import ConfigurationError, PayloadError
from queuerun.limits import MAX_USER_ID_BYTES

Seen = list[tuple[Any, JobMetadata]]


def build_app(**options: Any) -> tuple[App, Seen]:
    app = App("ids", **options)
    seen: Seen = []

    @app.queue("orders.fifo", http=True, public=True)
    def orders(payload: Any, meta: JobMetadata) -> None:
        seen.append((payload, meta))

    @app.queue("tasks", http=True, public=True)
    def tasks(payload: Any, meta: JobMetadata) -> None:
        seen.append((payload, meta))

    return app, seen


# -- dedupe keys


def test_separator_in_group_and_dedupe_ids_does_not_collide() -> None:
    # Before: "a\0b"+"c" and "a"+"b\0c" hashed the same, and the second push was swallowed.
    app, seen = build_app()
    orders = app.queues("orders.fifo")
    with app.local() as local:
        first = orders.group("a\0b").dedupe("c").push({"n": 1})
        second = orders.group("a").dedupe("b\0c").push({"n": 2})
        local.drain(timeout=10)
    assert first != second
    assert sorted(p["n"] for p, _ in seen) == [1, 2]


ids = st.text(max_size=8)
key_fields = st.tuples(st.text(max_size=6), st.text(max_size=6), st.none() | ids, ids)


@settings(max_examples=500, deadline=None)
@given(a=key_fields, b=key_fields)
def test_dedupe_keys_are_injective(a: tuple[str, str, str | None, str], b: tuple[str, str, str | None, str]) -> None:
    def key(fields: tuple[str, str, str | None, str]) -> str:
        app, queue, group, dedupe = fields
        return dedupe_key(queue, group, dedupe, app=app)

    try:
        key(a), key(b)
    except UnicodeEncodeError:  # lone surrogates never get here: push refuses them first
        return
    assert (key(a) == key(b)) == (a == b)
    assert len(key(a)) == 64 and key(a).isalnum()  # a valid Firestore document id


def test_no_group_and_an_empty_group_are_different_keys() -> None:
    assert dedupe_key("q", None, "d", app="a") != dedupe_key("q", "", "d", app="a")


# -- path segments


def test_an_encoded_slash_stays_inside_the_group_id() -> None:
    # Before: /orders.fifo/a%2Fb became group "a" with dedupe id "b".
    app, seen = build_app()
    with app.local() as local, serve(AppHttp(app)) as url, httpx.Client(trust_env=False, timeout=15) as client:
        res = client.post(f"{url}/orders.fifo/a%2Fb", json={"n": 1})
        local.drain(timeout=10)
    assert res.status_code == 202, res.text
    [(_, meta)] = seen
    assert meta.group_id == "a/b"
    assert meta.params == {"group": "a/b"}


def test_a_segment_is_decoded_once_not_twice() -> None:
    app, seen = build_app()
    with app.local() as local, TestClient(AppHttp(app)) as client:
        res = client.post("/orders.fifo/g%252F1/d%2525", json={"n": 1})
        local.drain(timeout=10)
    assert res.status_code == 202, res.text
    [(_, meta)] = seen
    assert meta.group_id == "g%2F1" and meta.params["dedupe"] == "d%25"


@pytest.mark.parametrize("segment", ["%FF", "%FE", "a%C0%AF", "%ED%A0%80"])  # the last: an encoded surrogate
def test_invalid_utf8_in_a_path_segment_is_refused(segment: str) -> None:
    # Before: %FF and %FE both became U+FFFD: two clients' groups merged into one.
    app, seen = build_app()
    with app.local() as local, serve(AppHttp(app)) as url, httpx.Client(trust_env=False, timeout=15) as client:
        res = client.post(f"{url}/orders.fifo/{segment}", json={"n": 1})
        local.drain(timeout=10)
    assert res.status_code == 400, res.text
    assert "not valid UTF-8" in res.json()["error"]
    assert seen == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# "." and ".." are not sent as segments: HTTP clients resolve them (RFC 3986 dot-segments).
@given(
    group=st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=20).filter(
        lambda s: s not in (".", "..")
    )
)
def test_any_group_id_round_trips_through_the_path(group: str) -> None:
    app, seen = build_app()
    with app.local() as local, TestClient(AppHttp(app)) as client:
        res = client.post(f"/orders.fifo/{quote(group, safe='')}", json={"n": 1})
        local.drain(timeout=10)
    assert res.status_code == 202, res.text
    assert [meta.group_id for _, meta in seen] == [group]


# -- ids in code


@pytest.mark.parametrize("bad", ["\ud800", "a\udfffb"])
def test_lone_surrogates_are_refused_in_group_and_dedupe_ids(bad: str) -> None:
    app, _ = build_app()
    orders = app.queues("orders.fifo")
    with pytest.raises(ConfigurationError, match="not valid Unicode"):
        orders.group(bad)
    with pytest.raises(ConfigurationError, match="not valid Unicode"):
        orders.group("g").dedupe(bad)


def test_a_lone_surrogate_in_a_param_is_refused_at_push() -> None:
    app, _ = build_app()
    with app.local(), pytest.raises(PayloadError, match="param 'p' is not valid Unicode"):
        app.queues("tasks").push({"n": 1}, params={"p": "\ud800"})


# -- user ids from the authenticate hook


@pytest.mark.parametrize(
    ("user", "fragment"),
    [
        ("u" * (MAX_USER_ID_BYTES + 1), f"at most {MAX_USER_ID_BYTES:,}"),
        ("é" * (MAX_USER_ID_BYTES // 2 + 1), f"at most {MAX_USER_ID_BYTES:,}"),  # bytes, not characters
        ("\ud800", "not valid Unicode"),
        ("", "non-empty"),
    ],
    ids=["long", "long-in-bytes", "surrogate", "empty"],
)
def test_a_user_id_firestore_cannot_index_is_refused_at_the_hook(
    user: str, fragment: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The hook's output is the app's fault, not the caller's: a 500 that echoes nothing (as for a non-string).
    app, seen = build_app(authenticate=lambda request: user)
    with app.local() as local, TestClient(AppHttp(app)) as client:
        res = client.post("/tasks", json={"n": 1})
        local.drain(timeout=10)
    assert res.status_code == 500
    assert fragment not in res.text
    assert fragment in caplog.text and "the user id authenticate returned" in caplog.text
    assert "uuuuuuuu" not in caplog.text and "éééé" not in caplog.text  # the reason, not the value
    assert seen == []


def test_a_user_id_at_the_limit_is_carried() -> None:
    user = "u" * MAX_USER_ID_BYTES

    def authenticate(request: HttpRequest) -> str:
        return user

    app, seen = build_app(authenticate=authenticate)
    with app.local() as local, TestClient(AppHttp(app)) as client:
        res = client.post("/tasks", json={"n": 1})
        local.drain(timeout=10)
    assert res.status_code == 202, res.text
    assert [meta.user for _, meta in seen] == [user]


def test_functions_mode_keeps_the_raw_path_so_segments_are_decoded_once() -> None:
    # functions-framework (WSGI) hands over PATH_INFO already decoded: "a%2Fb" would be "a/b" there.
    from queuerun.endpoint import path_segments
    from queuerun.server.functions import wsgi_scope

    environ = {
        "REQUEST_METHOD": "POST",
        "SCRIPT_NAME": "",
        "PATH_INFO": "/queues/orders.fifo/a/b",
        "REQUEST_URI": "/queues/orders.fifo/a%2Fb?x=1",
        "QUERY_STRING": "x=1",
    }
    scope = wsgi_scope(environ)
    assert path_segments(scope, below="/queues") == ["orders.fifo", "a/b"]


@pytest.mark.parametrize("query", ["ref=%FF", "ref=%FE", "%C0%AF=1"])
def test_invalid_utf8_in_a_query_parameter_is_refused(query: str) -> None:
    # Before: %FF and %FE both reached meta.params as U+FFFD.
    app, seen = build_app()
    with app.local() as local, TestClient(AppHttp(app)) as client:
        res = client.post(f"/tasks?{query}", json={"n": 1})
        local.drain(timeout=10)
    assert res.status_code == 400, res.text
    assert "not valid UTF-8" in res.json()["error"]
    assert seen == []


def test_utf8_query_parameters_arrive_decoded() -> None:
    app, seen = build_app()
    with app.local() as local, TestClient(AppHttp(app)) as client:
        res = client.post("/tasks?ref=caf%C3%A9&empty=", json={"n": 1})
        local.drain(timeout=10)
    assert res.status_code == 202, res.text
    assert [meta.params for _, meta in seen] == [{"ref": "café", "empty": ""}]


@pytest.mark.parametrize(
    ("path", "fragment"), [("/o/a%2Fb", "%2F"), ("/o/%FF", "not valid UTF-8"), ("/o/g?r=%FE", "UTF-8")]
)
def test_a_flask_view_refuses_ids_its_routing_would_split_or_merge(path: str, fragment: str) -> None:
    import flask

    app, seen = build_app()
    site = flask.Flask("site")
    view = app.queues("orders.fifo").http.flask_view()
    site.add_url_rule("/o/<group>", view_func=view, methods=["POST"])
    site.add_url_rule("/o/<group>/<dedupe>", view_func=view, methods=["POST"])
    with app.local() as local:
        res = site.test_client().post(path, json={"n": 1})
        ok = site.test_client().post("/o/caf%C3%A9", json={"n": 2})
        local.drain(timeout=10)
    assert res.status_code == 400, res.get_data(as_text=True)
    assert fragment in res.get_json()["error"]
    assert ok.status_code == 202
    assert [meta.group_id for _, meta in seen] == ["café"]
