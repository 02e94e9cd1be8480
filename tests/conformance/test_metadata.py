"""Every JobMetadata field, with its documented meaning."""

from __future__ import annotations

import datetime as dt
import threading

from queuerun import App, JobMetadata, queues

from .harness import Harness


def test_metadata_fields_on_a_fifo_queue(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    metas: list[JobMetadata] = []

    @app.queue("profile.fifo")
    def handler(job: dict[str, str], meta: JobMetadata) -> None:
        metas.append(meta)

    before = dt.datetime.now(dt.UTC)
    with harness.run(app) as run:
        job_id = handler.group("user-1").push({"email": "a@b.c"}, params={"id": "42"}, user="alice")
        run.drain(timeout=60)
    after = dt.datetime.now(dt.UTC)

    assert len(metas) == 1
    meta = metas[0]
    assert meta.job_id == job_id
    assert meta.queue_name == "profile.fifo"
    assert meta.group_id == "user-1"
    assert meta.queued_at.tzinfo is not None and meta.queued_at.utcoffset() == dt.timedelta(0)
    assert before - dt.timedelta(seconds=1) <= meta.queued_at <= after
    assert meta.received_count == 1
    assert isinstance(meta.sequence_number, int) and meta.sequence_number > 0
    assert dict(meta.params) == {"id": "42"}
    assert meta.user == "alice"
    assert meta.signal.aborted is False


def test_standard_queue_has_no_group_or_sequence(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    metas: list[JobMetadata] = []

    @app.queue("emails")
    def handler(job: str, meta: JobMetadata) -> None:
        metas.append(meta)

    with harness.run(app) as run:
        job_id = handler.push("hello")
        run.drain(timeout=60)
    [meta] = metas
    assert (meta.job_id, meta.group_id, meta.sequence_number, meta.user, dict(meta.params)) == (
        job_id,
        None,
        None,
        None,
        {},
    )


def test_jobs_pushed_from_a_handler_inherit_its_user(harness: Harness, app_name: str) -> None:
    app = App(app_name)
    users: dict[str, str | None] = {}
    lock = threading.Lock()

    @app.queue("first")
    def first(job: str, meta: JobMetadata) -> None:
        queues("second").push("nested")  # module-level queues() resolves this handler's app

    @app.queue("second")
    async def second(job: str, meta: JobMetadata) -> None:
        with lock:
            users[job] = meta.user
        if job == "nested":
            await app.queues("third").apush("deeper")

    @app.queue("third")
    def third(job: str, meta: JobMetadata) -> None:
        with lock:
            users[job] = meta.user

    with harness.run(app) as run:
        first.push("top", user="bob")
        second.push("anonymous")
        run.drain(timeout=60)
    assert users == {"nested": "bob", "deeper": "bob", "anonymous": None}
