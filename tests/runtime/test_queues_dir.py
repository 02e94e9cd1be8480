"""The file convention: queues/<name>.py with handler, config and queues.self()."""

from __future__ import annotations

import sys

import pytest

from queuerun import App, ConfigurationError


def test_queue_files_declare_queues_with_their_config() -> None:
    app = App("shopfiles", queues_dir="fixtures/shopqueues")
    specs = {s.name: s for s in app.specs}
    assert sorted(specs) == ["emails", "update_profile.fifo"]
    assert specs["update_profile.fifo"].timeout == 30
    assert specs["update_profile.fifo"].fifo
    assert specs["emails"].timeout == 300


def test_queues_self_refers_to_its_own_file() -> None:
    app = App("shopself", queues_dir="fixtures/shopqueues")
    module = sys.modules["queuerun_queues.shopself.update_profile.fifo"]
    emails = sys.modules["queuerun_queues.shopself.emails"]
    with app.local() as local:
        module.queue.group("u1").push({"email": "a@b.c"})
        emails.queue.push("welcome")
        local.drain(timeout=10)
    assert module.seen == [("u1", {"email": "a@b.c"})]
    assert emails.sent == ["welcome"]


def test_missing_directory_is_a_clear_error() -> None:
    with pytest.raises(ConfigurationError, match=r"queues_dir .*nowhere.* is not a directory"):
        App("nodir", queues_dir="nowhere")


def test_queues_self_outside_a_queue_file() -> None:
    from queuerun import queues

    with pytest.raises(ConfigurationError, match=r"queues.self\(\) works only"):
        queues.self()
