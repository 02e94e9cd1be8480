"""No request body or header set makes a queue endpoint answer 500 or raise."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from queuerun import App
from queuerun.endpoint import AppHttp

app = App("fuzz", http_max_body=4096)


@app.queue("plain", http=True, public=True)
def plain(payload: Any) -> None: ...


@app.queue("ordered.fifo", http=True, public=True, accepts=["application/json", "text/plain"])
def ordered(payload: Any) -> None: ...


content_types = st.one_of(
    st.sampled_from(
        [
            "application/json",
            "application/json; charset=utf-16",
            "text/plain; charset=bogus",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=xyz",
            "multipart/form-data",
            "application/octet-stream",
            "",
            ";;;",
        ]
    ),
    st.text(alphabet=st.characters(min_codepoint=1, max_codepoint=255), max_size=40),
)
paths = st.one_of(
    st.sampled_from(["/plain", "/ordered.fifo", "/ordered.fifo/g", "/ordered.fifo/g/d", "/", "/plain/x/y/z"]),
    # A leading "//" would make the client read a host out of the path.
    st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=30).map(
        lambda s: "/" + s.lstrip("/")
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["POST", "GET", "PUT", "DELETE", "PATCH"]),
    path=paths,
    content_type=content_types,
    body=st.one_of(st.binary(max_size=5000), st.text(max_size=200).map(str.encode)),
    extra=st.dictionaries(
        st.sampled_from(["authorization", "x-cloud-trace-context", "content-length"]),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    ),
)
def test_never_a_500(method: str, path: str, content_type: str, body: bytes, extra: dict[str, Any]) -> None:
    headers: dict[str, Any] = dict(extra)  # a Content-Length that lies about the body included
    headers["content-type"] = content_type.encode("latin-1")
    with app.local(), TestClient(AppHttp(app), raise_server_exceptions=True) as client:
        res = client.request(method, path, content=body, headers=headers)
    assert res.status_code < 500, (res.status_code, res.text)
    if res.status_code >= 400:
        assert res.json()["error"]
