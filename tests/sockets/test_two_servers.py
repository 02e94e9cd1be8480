"""Two server processes on loopback sharing the emulators: a job on one reaches a socket on the other.

Server B receives the job from the Pub/Sub emulator's push subscription and runs it; the client is
connected to server A (and, in one test, to B as well). Messages cross through the Firestore
emulator: presence records and A's inbox listener.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from emulators import Emulator
from socket_helpers import ServerProcess
from socket_server import build
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from queuerun import App
from queuerun.emulator_topology import delete_topology, ensure_topology
from queuerun.socket_hub import PRESENCE_COLLECTION

pytestmark = pytest.mark.emulators

HERE = Path(__file__).parent


class Cluster:
    def __init__(self, app: App, a: ServerProcess, b: ServerProcess) -> None:
        self.app, self.a, self.b = app, a, b

    def connect(self, server: ServerProcess, user: str | None) -> ClientConnection:
        query = f"?user={user}" if user else ""
        return connect(f"{server.ws_url}/_ws{query}", proxy=None, open_timeout=30)


@pytest.fixture
def cluster(
    emulator_env: dict[str, str], pubsub_emulator: Emulator, clean_firestore: Emulator, tmp_path: Path
) -> Iterator[Cluster]:
    name = f"w{uuid.uuid4().hex[:10]}"
    # The processes share the app's user key, as a deployment's instances do: a job's user is sealed
    # by the process that pushes it and checked by the one that runs it.
    settings = {
        **emulator_env,
        "QUEUERUN_BACKEND": "gcp",
        "QUEUERUN_INSECURE_PUSH": "1",
        "QUEUERUN_USER_KEY": "k" * 32,
    }
    env = {**os.environ, **settings, "SOCKET_TEST_APP": name, "PYTHONPATH": str(HERE)}
    servers: list[ServerProcess] = []
    app = build(name, settings)
    try:
        for server in ("A", "B"):
            servers.append(
                ServerProcess(
                    "socket_server:asgi",
                    env={**env, "SERVER_NAME": server},
                    cwd=HERE,
                    log_path=tmp_path / f"server-{server}.log",
                )
            )
        for server_process in servers:
            server_process.wait_ready()
        a, b = servers
        # Pub/Sub pushes every job to B: the jobs run there, never on A.
        ensure_topology(app, project=pubsub_emulator.project, push_base_url=b.url, emulator_host=pubsub_emulator.host)
        yield Cluster(app, a, b)
    finally:
        for server_process in servers:
            server_process.stop()
        app.backend.stop()
        delete_topology(app, project=pubsub_emulator.project, emulator_host=pubsub_emulator.host)


def receive(ws: ClientConnection, count: int, timeout: float = 30.0) -> list[Any]:
    deadline = time.monotonic() + timeout
    return [json.loads(ws.recv(timeout=max(0.1, deadline - time.monotonic()))) for _ in range(count)]


def presence_of(firestore: Any, app: App, user: str) -> list[dict[str, Any]]:
    docs = (d.to_dict() for d in firestore.collection(PRESENCE_COLLECTION).stream())
    return [d for d in docs if d["app"] == app.name and d["user"] == user]


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_a_job_on_one_server_reaches_a_client_on_the_other_in_order(cluster: Cluster) -> None:
    with cluster.connect(cluster.a, "alice") as ws:
        cluster.app.queues("notify").push({"count": 30}, user="alice")
        got = receive(ws, 30)
    assert got == [{"seq": i, "ran_on": "B"} for i in range(30)]


def test_connections_on_both_servers_receive_everything_in_order(cluster: Cluster) -> None:
    with cluster.connect(cluster.a, "alice") as on_a, cluster.connect(cluster.b, "alice") as on_b:
        cluster.app.queues("notify").push({"count": 10}, user="alice")
        expected = [{"seq": i, "ran_on": "B"} for i in range(10)]
        assert receive(on_a, 10) == expected  # through Firestore
        assert receive(on_b, 10) == expected  # in the process that ran the job


def test_other_users_receive_nothing(cluster: Cluster) -> None:
    with cluster.connect(cluster.a, "bob") as bob, cluster.connect(cluster.a, "alice") as alice:
        cluster.app.queues("notify").push({"count": 1}, user="alice")
        assert receive(alice, 1) == [{"seq": 0, "ran_on": "B"}]
        with pytest.raises(TimeoutError):
            bob.recv(timeout=1.0)


def test_disconnect_withdraws_the_users_presence(cluster: Cluster, firestore_client: Any) -> None:
    with cluster.connect(cluster.a, "alice"), cluster.connect(cluster.b, "alice"):
        wait_until(lambda: len(presence_of(firestore_client, cluster.app, "alice")) == 2)
    wait_until(lambda: presence_of(firestore_client, cluster.app, "alice") == [])


def test_a_real_server_refuses_an_unauthenticated_socket_with_4401(cluster: Cluster) -> None:
    with cluster.connect(cluster.a, None) as ws, pytest.raises(ConnectionClosed) as closed:
        ws.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4401, "authentication required")
