"""Fan-out: one request splits a large batch into many small jobs that run in parallel.

``newsletter`` receives the whole mailing; it splits the recipients into batches and queues one
``deliver`` job per batch with ``push_many`` (one batched publish on Google Cloud).

    queuerun dev examples.fanout.app:app
    queuerun push newsletter '{"subject": "Hello", "recipients": 1000}' --app examples.fanout.app:app
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from queuerun import App, JobMetadata

app = App("fanout")
BATCH = 50
delivered: set[str] = set()
_lock = threading.Lock()


@dataclass
class Mailing:
    subject: str
    recipients: int


@dataclass
class Batch:
    subject: str
    to: list[str]
    batch: int


@app.queue("newsletter", timeout=120)
def newsletter(mailing: Mailing, meta: JobMetadata) -> None:
    recipients = [f"reader-{i}@example.com" for i in range(mailing.recipients)]
    batches = [
        Batch(mailing.subject, recipients[i : i + BATCH], i // BATCH) for i in range(0, len(recipients), BATCH)
    ]
    deliver.push_many(batches)


@app.queue("deliver", timeout=60, concurrency=8, min_backoff=1)
def deliver(batch: Batch, meta: JobMetadata) -> None:
    with _lock:
        delivered.update(batch.to)


def main() -> None:
    with app.local() as local:
        newsletter.push({"subject": "November news", "recipients": 1000})
        local.drain(timeout=60)
    print(f"delivered to {len(delivered)} readers in {1000 // BATCH} jobs")


if __name__ == "__main__":
    main()
