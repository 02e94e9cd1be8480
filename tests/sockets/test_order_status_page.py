"""The order-status example in headless Chromium: the page shows each step live, as the job sends it.

Chromium (Debian's ``chromium``) is driven over the DevTools protocol. Without it the test skips,
except in CI (CI=true), where it fails.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from socket_helpers import ServerProcess
from websockets.sync.client import ClientConnection, connect

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order_status"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]
loopback = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}:
            pytest.fail("chromium is not installed (CI=true: the browser test must run)", pytrace=False)
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path


class DevTools:
    """A minimal DevTools protocol client for one page target."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self._ids = itertools.count(1)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        self.ws.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=30))
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[DevTools]:
    binary = chromium_path()
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    log = (tmp_path / "chromium.log").open("wb")
    process = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its pid is its process group id: stopped with all its helpers
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not start: {(tmp_path / 'chromium.log').read_text()[-2000:]}")
            time.sleep(0.05)
        port = int(port_file.read_text().split()[0])
        with loopback.open(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.load(response)
        page = next(t for t in targets if t["type"] == "page")
        with connect(page["webSocketDebuggerUrl"], proxy=None, max_size=None) as ws:
            yield DevTools(ws)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # helpers left in the group
        log.close()


@pytest.fixture
def order_server(tmp_path: Path) -> Iterator[ServerProcess]:
    env = {**os.environ, "ORDER_STEP_SECONDS": "0.5", "QUEUERUN_BACKEND": "embedded"}
    server = ServerProcess("server:asgi", env=env, cwd=EXAMPLE, log_path=tmp_path / "server.log")
    try:
        yield server.wait_ready("/")
    finally:
        server.stop()


def wait_for(devtools: DevTools, expression: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = devtools.evaluate(expression)
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(
        f"{expression} stayed falsy for {timeout:g} s; page: {devtools.evaluate('document.body.innerText')}"
    )


def test_the_order_page_shows_each_status_live(browser: DevTools, order_server: ServerProcess) -> None:
    browser.call("Page.navigate", url=f"{order_server.url}/?token=demo-alice")
    wait_for(browser, "document.getElementById('connection')?.textContent === 'open'")

    browser.evaluate("document.getElementById('order').click()")
    seen: list[str] = []  # the status line as the user saw it, sampled while the job runs
    deadline = time.monotonic() + 20
    while (not seen or seen[-1] != "shipped") and time.monotonic() < deadline:
        shown = browser.evaluate("document.getElementById('status').textContent")
        if not seen or seen[-1] != shown:
            seen.append(shown)
        time.sleep(0.05)
    log = browser.evaluate("[...document.querySelectorAll('#log li')].map(li => li.dataset.status)")

    assert log == ["preparing", "packaging", "shipped"]
    # Each step was on screen by itself before the next arrived (0.5 s apart): live, not at the end.
    assert [s for s in seen if s in log] == ["preparing", "packaging", "shipped"]


def test_the_page_shows_why_a_bad_token_is_refused(browser: DevTools, order_server: ServerProcess) -> None:
    browser.call("Page.navigate", url=f"{order_server.url}/?token=stolen")
    shown = wait_for(
        browser, "(t => t.startsWith('closed') && t)(document.getElementById('connection')?.textContent ?? '')"
    )
    assert shown == "closed (4401: unknown token: use demo-<your name>)"
