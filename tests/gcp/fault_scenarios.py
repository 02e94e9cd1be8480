"""Fault injection on the emulators: each scenario pushes jobs under one fault and counts, per job,
whether it completed, was dead-lettered, was lost or ran twice.

Loopback only, bounded in time (every wait has a deadline), and every process it starts (the
emulators when run as a script, the push-server workers of the ``kill -9`` scenarios) is stopped
by process group. ``tests/gcp/test_fault_suite.py`` runs the fast scenarios in the default test
run; run them all with ``.venv/bin/python tests/gcp/fault_scenarios.py``, which prints the README's
table, one row per scenario.

The push server runs as ``queuerun dev --emulators`` runs it, with the ledger that delivers jobs
the emulator dropped (:mod:`queuerun.emulator_ledger`; "recovered" counts them), except in the
scenario named "no ledger". Lost counts jobs neither completed nor dead-lettered by the deadline;
doubled, jobs whose handler completed more than once.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from queuerun import App, JobMetadata, PushError
from queuerun.backends.gcp import GcpBackend, make_publisher
from queuerun.emulator_ledger import Ledger, Recovery, delete_ledgers, ensure_ledgers
from queuerun.emulator_topology import delete_topology, ensure_topology
from queuerun.server.redelivery import RedeliveryWatch
from queuerun.server.serve import BackgroundServer

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fault_worker
from faults import FaultProxy  # tests/gcp is not a package: its helpers are imported by path


@dataclass(frozen=True)
class Tally:
    scenario: str
    pushed: int
    completed: int
    dead: int
    lost: int
    doubled: int
    recovered: int = 0  # jobs the dev server's ledger delivered itself (the emulator had dropped them)
    rerun_after_record: int = 0  # FIFO jobs run again after their completion record was written: must be 0
    push_errors: int = 0

    def row(self) -> str:
        """A row of the README's fault table."""
        cells = (self.scenario, self.pushed, self.completed, self.dead, self.lost, self.doubled, self.recovered)
        return "| " + " | ".join(str(cell) for cell in cells) + " |"

    def line(self) -> str:
        return (
            f"{self.scenario:<34} pushed={self.pushed:<4} completed={self.completed:<4} dead={self.dead:<4} "
            f"lost={self.lost:<3} doubled={self.doubled:<3} recovered={self.recovered:<3} "
            f"push errors={self.push_errors} reruns after the record={self.rerun_after_record}"
        )


class Runs:
    """Completed runs per job id, from handler threads."""

    def __init__(self) -> None:
        self.count: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def add(self, job_id: str) -> None:
        with self._lock:
            self.count[job_id] += 1


GRACE = 5.0  # seconds without a delivery before the ledger delivers a job itself (the dev server: 60)


def _fails(job_id: str, attempt: int, rate: float) -> bool:
    """A deterministic coin per (job, attempt): reruns of a scenario see the same faults."""
    digest = hashlib.sha256(f"{job_id}/{attempt}".encode()).digest()
    return digest[0] / 256 < rate


@contextmanager
def served(
    env: dict[str, str], project: str, pubsub_host: str, declare: Callable[[App, Runs], None]
) -> Iterator[tuple[App, Runs, list[Recovery]]]:
    """The app served in this process as ``queuerun dev --emulators`` serves it: with the ledger."""
    app = App(f"f{uuid.uuid4().hex[:10]}", settings={**env, "QUEUERUN_BACKEND": "gcp", "QUEUERUN_INSECURE_PUSH": "1"})
    runs = Runs()
    declare(app, runs)
    watch = RedeliveryWatch(grace=GRACE)
    server = BackgroundServer(app, push_options={"redelivery": watch}).start()
    ensure_topology(app, project=project, push_base_url=server.url, emulator_host=pubsub_host)
    ensure_ledgers(app, project=project, emulator_host=pubsub_host, lease=fault_worker.LEASE)
    recoveries: list[Recovery] = []
    ledger = Ledger(
        app,
        watch,
        server.url,
        project=project,
        emulator_host=pubsub_host,
        poll=0.5,
        lease=fault_worker.LEASE,
        on_recovery=recoveries.append,
    ).start()
    try:
        yield app, runs, recoveries
    finally:
        ledger.stop()
        server.stop()
        app.backend.stop()
        delete_ledgers(app, project=project, emulator_host=pubsub_host)
        delete_topology(app, project=project, emulator_host=pubsub_host)


def settle(
    name: str,
    app: App,
    queue: str,
    runs: Runs,
    recoveries: list[Recovery],
    pushed: set[str],
    timeout: float,
    **extra: int,
) -> Tally:
    """Wait until every pushed job completed or was dead-lettered, or the deadline."""
    backend = app.backend
    assert isinstance(backend, GcpBackend)
    dead: set[str] = set()
    deadline = time.monotonic() + timeout
    while True:
        dead = {d.job_id for d in backend.dead_letters(queue)}
        if pushed <= set(runs.count) | dead or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # dead letters are polled: no event to wait on
    completed = pushed & set(runs.count)
    return Tally(
        name,
        pushed=len(pushed),
        completed=len(completed),
        dead=len(pushed & dead),
        lost=len(pushed - completed - dead),
        doubled=sum(1 for job in pushed if runs.count[job] > 1),
        recovered=len(pushed & {r.job_id for r in recoveries}),
        **extra,
    )


# -- scenarios ---------------------------------------------------------------------------------
def random_failures(env: dict[str, str], project: str, pubsub_host: str, *, fifo: bool, jobs: int = 20) -> Tally:
    queue = "work.fifo" if fifo else "work"

    def declare(app: App, runs: Runs) -> None:
        @app.queue(queue, min_backoff=0, max_backoff=1)
        def handle(job: Any, meta: JobMetadata) -> None:
            if _fails(meta.job_id, meta.received_count, 0.25):
                raise RuntimeError("injected failure")
            runs.add(meta.job_id)

    with served(env, project, pubsub_host, declare) as (app, runs, recoveries):
        ref = app.queues(queue)
        pushed = {(ref.group(f"g{i % 3}") if fifo else ref).push({"n": i}) for i in range(jobs)}
        return settle(f"random failures ({'fifo' if fifo else 'standard'})", app, queue, runs, recoveries, pushed, 90)


def dedupe_race(env: dict[str, str], project: str, pubsub_host: str, *, pushers: int = 8) -> Tally:
    def declare(app: App, runs: Runs) -> None:
        app.queue("pay.fifo")(lambda job, meta: runs.add(meta.job_id))

    with served(env, project, pubsub_host, declare) as (app, runs, recoveries):
        ids: list[str] = []
        barrier = threading.Barrier(pushers)

        def push() -> None:
            barrier.wait()
            ids.append(app.queues("pay.fifo").group("g").dedupe("same").push({"order": 1}))

        threads = [threading.Thread(target=push) for _ in range(pushers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        tally = settle("dedupe race (8 threads)", app, "pay.fifo", runs, recoveries, set(ids), 60)
        # Two ids for one dedupe id would be a double: count the extra ones.
        return Tally(**{**tally.__dict__, "doubled": tally.doubled + len(set(ids)) - 1})


def poison_in_group(env: dict[str, str], project: str, pubsub_host: str) -> Tally:
    def declare(app: App, runs: Runs) -> None:
        app.queue("orders.fifo")(lambda job, meta: runs.add(meta.job_id))

    with served(env, project, pubsub_host, declare) as (app, runs, recoveries):
        backend = app.backend
        assert isinstance(backend, GcpBackend)
        publisher = make_publisher(emulator_host=pubsub_host)
        group = {"qr-group": "g", "qr-content-type": "application/json"}
        poison = [
            (b"[" * 50_000 + b"]" * 50_000, group),
            (b'{"$queuerun": "bytes", "base64": 5}', {**group, "qr-content-type": "application/vnd.queuerun+json"}),
            (b"hello", {}),
        ]
        pushed = {
            publisher.publish(backend.topic_path("orders.fifo"), data, ordering_key="g", **attrs).result(timeout=30)
            for data, attrs in poison
        }
        publisher.stop()
        pushed |= {app.queues("orders.fifo").group("g").push({"n": i}) for i in range(5)}
        return settle("poison messages in a group", app, "orders.fifo", runs, recoveries, pushed, 60)


def pubsub_unreachable(env: dict[str, str], project: str, pubsub_host: str, *, jobs: int = 6) -> Tally:
    proxy = FaultProxy(pubsub_host)
    proxied = {**env, "PUBSUB_EMULATOR_HOST": proxy.host}

    def declare(app: App, runs: Runs) -> None:
        app.queue("pay.fifo")(lambda job, meta: runs.add(meta.job_id))

    try:
        with served(proxied, project, pubsub_host, declare) as (app, runs, recoveries):
            backend = app.backend
            assert isinstance(backend, GcpBackend)
            backend.unavailable_deadline = 2.0
            pushed: set[str] = set()
            errors = 0
            ref = app.queues("pay.fifo").group("g")
            for i in range(jobs):
                proxy.set("refuse" if i % 2 else "up")
                try:
                    pushed.add(ref.dedupe(f"d{i}").push({"n": i}))
                except PushError:
                    errors += 1
                    proxy.set("up")
                    pushed.add(_retry_push(lambda n=i: ref.dedupe(f"d{n}").push({"n": n})))  # the caller's retry
            proxy.set("up")
            return settle("Pub/Sub refusing pushes", app, "pay.fifo", runs, recoveries, pushed, 60, push_errors=errors)
    finally:
        proxy.close()


def _retry_push(push: Callable[[], str], deadline: float = 30.0) -> str:
    """A caller's retry after an outage: again until it succeeds. The first retry may fail too: gRPC
    reconnects with backoff (1 s, growing), so the channel can still be down when Pub/Sub is back."""
    give_up = time.monotonic() + deadline
    while True:
        try:
            return push()
        except PushError:
            if time.monotonic() > give_up:
                raise


# -- kill -9 of the push server ------------------------------------------------------------------
class Worker:
    """The push server in its own process (tests/gcp/fault_worker.py), on a fixed loopback port so
    its push subscriptions reach it again after a restart. Stopped by process group only."""

    def __init__(self, env: dict[str, str], app_name: str, port: int, runs: Path, *extra: str) -> None:
        self.args = [sys.executable, str(Path(fault_worker.__file__)), app_name, str(port), str(runs), *extra]
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.url = f"http://127.0.0.1:{port}"
        self.log = runs.with_name(runs.name + ".log")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        import urllib.request

        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_health", timeout=1):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"the fault worker did not start: {self.log.read_text()[-3000:]}") from None
                time.sleep(0.1)  # polling a port: there is no event to wait on

    def kill(self) -> None:
        """SIGKILL the worker's process group, as the issue's fault run did, and reap it."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def wait_exit(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float = 10) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        if self.wait_exit(grace) is None:
            self.kill()


def read_runs(runs: Path, kinds: tuple[str, ...] = ("start", "done")) -> list[collections.Counter[str]]:
    """Per kind of line (started, completed, recovered), the count per job id in the workers' log."""
    counts: dict[str, collections.Counter[str]] = {kind: collections.Counter() for kind in kinds}
    if runs.exists():
        for line in runs.read_text().splitlines():
            kind, _, job_id = line.partition(" ")
            if kind in counts:
                counts[kind][job_id] += 1
    return [counts[kind] for kind in kinds]


@contextmanager
def worker_app(
    env: dict[str, str], project: str, pubsub_host: str, workdir: Path, *extra: str
) -> Iterator[tuple[App, Worker, Path]]:
    """An app whose push server runs in a worker process; this side pushes and reads dead letters."""
    from queuerun.emulators import free_port

    app = App(f"k{uuid.uuid4().hex[:10]}", settings={**env, "QUEUERUN_BACKEND": "gcp", "QUEUERUN_INSECURE_PUSH": "1"})
    fault_worker.declare(app)
    port = free_port()
    runs = workdir / f"{app.name}.runs"
    worker = Worker({**env, "GOOGLE_CLOUD_PROJECT": project}, app.name, port, runs, *extra)
    ensure_topology(app, project=project, push_base_url=worker.url, emulator_host=pubsub_host)
    try:
        worker.start()
        yield app, worker, runs
    finally:
        worker.stop()
        app.backend.stop()
        delete_ledgers(app, project=project, emulator_host=pubsub_host)
        delete_topology(app, project=project, emulator_host=pubsub_host)


def wait_until(predicate: Callable[[], bool], timeout: float) -> bool:
    """Poll ``predicate`` until true (True) or the deadline (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # the runs file is polled: written by another process
    return True


def reruns_after_record(runs: Path) -> int:
    """Jobs started again after their completion record was written (read in the log's order)."""
    recorded: set[str] = set()
    reruns: set[str] = set()
    for line in runs.read_text().splitlines() if runs.exists() else ():
        kind, _, job_id = line.partition(" ")
        if kind == "recorded":
            recorded.add(job_id)
        elif kind == "start" and job_id in recorded:
            reruns.add(job_id)
    return len(reruns)


def settle_runs(name: str, app: App, queue: str, runs: Path, pushed: set[str], timeout: float, **extra: int) -> Tally:
    """Wait until every pushed job completed or was dead-lettered, or the deadline; count from the runs file."""
    backend = app.backend
    assert isinstance(backend, GcpBackend)
    deadline = time.monotonic() + timeout
    while True:
        done, recovered = read_runs(runs, ("done", "recovered"))
        dead = {d.job_id for d in backend.dead_letters(queue)}
        if pushed <= set(done) | dead or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # dead letters are polled: no event to wait on
    completed = pushed & set(done)
    return Tally(
        name,
        pushed=len(pushed),
        completed=len(completed),
        dead=len(pushed & dead),
        lost=len(pushed - completed - dead),
        doubled=sum(1 for job in pushed if done[job] > 1),
        recovered=len(pushed & set(recovered)),
        rerun_after_record=reruns_after_record(runs),
        **extra,
    )


def kill_server(
    env: dict[str, str],
    project: str,
    pubsub_host: str,
    workdir: Path,
    *,
    fifo: bool,
    jobs: int = 12,
    kills: int = 1,
    recover: bool = True,
) -> Tally:
    """Push ``jobs`` jobs, SIGKILL the push server while some run (``kills`` times), restart it each
    time. With ``recover``, the server runs the dev server's ledger, as ``queuerun dev --emulators``."""
    queue = "work.fifo" if fifo else "work"
    extra = ("--recover", str(GRACE)) if recover else ()
    with worker_app(env, project, pubsub_host, workdir, *extra) as (app, worker, runs):
        ref = app.queues(queue)
        pushed = {(ref.group(f"g{i % 3}") if fifo else ref).push({"n": i}) for i in range(jobs)}
        for k in range(kills):
            # Kill just after a job started (it sleeps JOB_SECONDS: the kill lands mid-run) once
            # ``want`` jobs completed, progressing each time.
            want = (k + 1) * jobs // (kills + 2)
            seen = [sum(read_runs(runs)[0].values())]

            def running(want: int = want, seen: list[int] = seen) -> bool:
                started, done = (sum(c.values()) for c in read_runs(runs))
                fresh, seen[0] = started > seen[0], started
                return fresh and done >= want and started > done

            if not wait_until(running, 60):
                break  # nothing more runs (jobs lost): the tally shows it
            worker.kill()
            worker.start()
        return settle_runs(
            f"kill -9 x{kills} mid-job ({'fifo' if fifo else 'standard'}{'' if recover else ', no ledger'})",
            app,
            queue,
            runs,
            pushed,
            120,
        )


def crash_around_completion(env: dict[str, str], project: str, pubsub_host: str, workdir: Path, *, when: str) -> Tally:
    """One FIFO job whose push server is SIGKILLed just before (or after) its completion record is
    written; then a second job of the group, which runs once the first is settled."""
    extra = ("--crash", when, "--recover", str(GRACE))
    with worker_app(env, project, pubsub_host, workdir, *extra) as (app, worker, runs):
        group = app.queues("work.fifo").group("g")
        first = group.push({"crash": True})
        if not wait_until(lambda: worker.wait_exit(0.1) is not None, 60):
            raise AssertionError(f"the worker did not crash {when} the completion record of job {first}")
        worker.start()
        second = group.push({"n": 2})
        return settle_runs(f"kill -9 {when} (fifo)", app, "work.fifo", runs, {first, second}, 90)


def main() -> None:
    import tempfile

    from queuerun import emulators

    with tempfile.TemporaryDirectory() as workdir:
        running = emulators.start_all(Path(workdir))
        try:
            env = emulators.emulator_env(running["pubsub"], running["firestore"])
            args = (env, running["pubsub"].project, running["pubsub"].host)
            work = Path(workdir)
            print("| scenario | pushed | completed | dead-lettered | lost | doubled | recovered by the ledger |")
            print("|---|---|---|---|---|---|---|", flush=True)
            for scenario in (
                lambda: random_failures(*args, fifo=False),
                lambda: random_failures(*args, fifo=True),
                lambda: dedupe_race(*args),
                lambda: poison_in_group(*args),
                lambda: pubsub_unreachable(*args),
                lambda: kill_server(*args, work, fifo=False, jobs=30, kills=3, recover=False),
                lambda: kill_server(*args, work, fifo=False, jobs=30, kills=3),
                lambda: kill_server(*args, work, fifo=True, jobs=30, kills=3),
                lambda: crash_around_completion(*args, work, when="before-record"),
                lambda: crash_around_completion(*args, work, when="after-record"),
            ):
                print(scenario().row(), flush=True)
        finally:
            for emulator in running.values():
                emulators.stop(emulator)


if __name__ == "__main__":
    main()
