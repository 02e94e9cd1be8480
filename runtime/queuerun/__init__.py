"""queuerun: job queues for Python apps on Google Cloud (Pub/Sub, Firestore, Cloud Run).

Declare queues with ``@app.queue(...)``, push with ``queue.group(id).dedupe(id).push(payload)``,
and run everything in-process with ``app.local()``. This package never imports Pulumi.
"""

from .app import App, queues
from .backends.base import DeadLetter
from .errors import (
    ConfigurationError,
    GroupIdRequiredError,
    PayloadError,
    PushError,
    PushOutcomeUnknownError,
    QueueNotFoundError,
    QueueRunError,
    Reject,
)
from .metadata import JobMetadata, JobSignal
from .queue import Queue
from .sockets import socket
from .spec import QueueSpec

__all__ = [
    "App",
    "ConfigurationError",
    "DeadLetter",
    "GroupIdRequiredError",
    "JobMetadata",
    "JobSignal",
    "PayloadError",
    "PushError",
    "PushOutcomeUnknownError",
    "Queue",
    "QueueNotFoundError",
    "QueueRunError",
    "QueueSpec",
    "Reject",
    "queues",
    "socket",
]
