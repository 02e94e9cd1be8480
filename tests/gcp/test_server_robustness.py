"""No request makes the push server answer 500 or raise; SIGTERM lets in-flight jobs finish;
the functions-framework target serves the same routes."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from emulators import Emulator, free_port
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from queuerun import App, JobMetadata
from queuerun.emulator_topology import delete_topology, ensure_topology
from queuerun.server.app import PushServer

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
attribute_maps = st.dictionaries(
    st.sampled_from(["qr-content-type", "qr-queued-at", "qr-seq", "qr-group", "qr-user", "qr-param-x", "other"]),
    st.text(max_size=30)
    | st.sampled_from(["application/json", "text/plain; charset=utf-8", "application/octet-stream"]),
    max_size=5,
)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """Mostly-valid envelopes with arbitrary corruption: the requests most likely to get deep."""
    message: dict[str, Any] = {
        "data": draw(st.one_of(st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode()), json_values)),
        "attributes": draw(st.one_of(attribute_maps, json_values)),
        "messageId": draw(st.one_of(st.integers(1, 10**6).map(str), json_values)),
        "publishTime": draw(st.one_of(st.just("2024-05-01T12:00:00Z"), st.text(max_size=30), json_values)),
    }
    for key in draw(st.lists(st.sampled_from(sorted(message)), max_size=2)):
        message.pop(key, None)
    body: dict[str, Any] = {
        "message": message,
        "subscription": draw(st.one_of(st.just("projects/p/subscriptions/s"), json_values)),
    }
    if draw(st.booleans()):
        body["deliveryAttempt"] = draw(json_values)
    return json.dumps(body).encode()


headers = st.dictionaries(
    st.sampled_from(
        ["content-type", "authorization", "x-cloud-trace-context", "content-encoding", "content-length", "x-other"]
    ),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    max_size=4,
)


@pytest.fixture(scope="module")
def fuzz_client(pubsub_emulator: Emulator, firestore_emulator: Emulator) -> Iterator[TestClient]:
    env = {
        "QUEUERUN_BACKEND": "gcp",
        "QUEUERUN_INSECURE_PUSH": "1",
        "GOOGLE_CLOUD_PROJECT": pubsub_emulator.project,
        "PUBSUB_EMULATOR_HOST": pubsub_emulator.host,
        "FIRESTORE_EMULATOR_HOST": firestore_emulator.host,
    }
    app = App("fuzz", settings=env)

    @app.queue("std")
    def standard(job: Any, meta: JobMetadata) -> None: ...

    @app.queue("ord.fifo")
    def ordered(job: Any, meta: JobMetadata) -> None: ...

    ensure_topology(
        app, project=pubsub_emulator.project, push_base_url="http://127.0.0.1:9", emulator_host=pubsub_emulator.host
    )
    with TestClient(PushServer(app).asgi(), raise_server_exceptions=True) as client:
        yield client
    app.backend.stop()
    delete_topology(app, project=pubsub_emulator.project, emulator_host=pubsub_emulator.host)


@pytest.mark.emulators
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    method=st.sampled_from(["POST", "POST", "POST", "GET", "PUT", "DELETE"]),
    path=st.sampled_from(
        ["/_pubsub/std", "/_pubsub/ord.fifo", "/_pubsub/none", "/_pubsub/", "/_health", "/x", "/queues/std", "/queues"]
    ),
    body=st.one_of(envelopes(), st.binary(max_size=200), json_values.map(lambda v: json.dumps(v).encode())),
    extra_headers=headers,
)
def test_no_request_gets_a_500_or_an_uncaught_exception(
    fuzz_client: TestClient, method: str, path: str, body: bytes, extra_headers: dict[str, str]
) -> None:
    response = fuzz_client.request(method, path, content=body, headers=extra_headers)
    assert response.status_code != 500 and response.status_code < 503, response.text
    if response.status_code >= 400:
        assert response.json()["error"] or response.status_code == 405


APP_MODULE = """
import time
from pathlib import Path
from queuerun import App

app = App(
    "sigterm",
    settings={"QUEUERUN_INSECURE_PUSH": "1", "GOOGLE_CLOUD_PROJECT": "p", "PUBSUB_EMULATOR_HOST": "127.0.0.1:9"},
)

@app.queue("slow")
def slow(job):
    time.sleep(job["seconds"])
    Path(job["marker"]).write_text("finished")
"""


def _envelope(payload: dict[str, Any]) -> bytes:
    return json.dumps(
        {
            "message": {
                "data": base64.b64encode(json.dumps(payload).encode()).decode(),
                "attributes": {"qr-content-type": "application/json"},
                "messageId": "1",
                "publishTime": "2024-05-01T12:00:00Z",
            },
            "subscription": "projects/test-project/subscriptions/s",
        }
    ).encode()


def _wait_healthy(url: str, process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited: {process.stdout.read() if process.stdout else b''!r}")
        try:
            if httpx.get(f"{url}/_health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("server did not become healthy")


def _start(
    tmp_path: Path, argv: list[str], extra_env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    (tmp_path / "sigterm_app.py").write_text(textwrap.dedent(APP_MODULE))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PORT": str(port), "QUEUERUN_APP": "sigterm_app:app"}
    env.pop("K_SERVICE", None)
    env.update(extra_env or {})
    process = subprocess.Popen(
        argv, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    return process, f"http://127.0.0.1:{port}"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)


def test_sigterm_lets_the_in_flight_job_finish_then_exits(tmp_path: Path) -> None:
    process, url = _start(tmp_path, [sys.executable, "-m", "queuerun.server"])
    try:
        _wait_healthy(url, process)
        marker = tmp_path / "done"
        result: dict[str, Any] = {}

        def push() -> None:
            result["response"] = httpx.post(
                f"{url}/_pubsub/slow", content=_envelope({"seconds": 1.5, "marker": str(marker)}), timeout=30
            )

        pusher = threading.Thread(target=push)
        pusher.start()
        time.sleep(0.5)  # the job is running
        os.kill(process.pid, signal.SIGTERM)
        pusher.join(30)
        assert result["response"].status_code == 204
        assert marker.read_text() == "finished"
        # uvicorn re-raises the captured SIGTERM once shut down, so the exit status reports it.
        assert process.wait(15) in (0, -signal.SIGTERM)
        output = process.stdout.read().decode() if process.stdout else ""
        assert all(json.loads(line)["severity"] for line in output.splitlines() if line.startswith("{"))
    finally:
        _stop(process)


def test_functions_framework_target_serves_the_same_routes(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("from queuerun.server.functions import queuerun  # noqa: F401\n")
    ff = Path(sys.executable).parent / "functions-framework"
    process, url = _start(tmp_path, [str(ff), "--target", "queuerun", "--asgi", "--host", "127.0.0.1"])
    try:
        _wait_healthy(url, process)
        marker = tmp_path / "ff-done"
        response = httpx.post(f"{url}/_pubsub/slow", content=_envelope({"seconds": 0, "marker": str(marker)}))
        assert response.status_code == 204 and marker.read_text() == "finished"
        assert httpx.post(f"{url}/_pubsub/slow", content=b"{").status_code == 400
        assert httpx.post(f"{url}/_pubsub/nope", content=b"{}").status_code == 404
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        finally:
            _stop(process)
