"""Who may set a job's user: only a holder of the app's user key. The key seals the user into the message.

On Google Cloud a job's user travels in the ``qr-user`` message attribute, and anyone allowed to publish
to the app's topics (every ``grant_publish`` member) can write any attribute. So the runtime that
pushes a job with a user adds ``qr-user-seal``: an HMAC-SHA256, under the app's key, over the job's
identity fields (app, queue, user, group, dedupe id, queued-at time, content type, params and a digest
of the payload). The server that runs a job believes ``qr-user`` only with a seal that verifies; a
user without one is stripped (logged by job id, never by value) and the job runs anonymous. A copied
seal is worth nothing on another payload, queue, group or time.

The key is ``QUEUERUN_USER_KEY``: on Google Cloud a Secret Manager secret that only the runtime service
account may read (``QueueRunApp`` creates it and mounts it as that variable). Publishers outside the
runtime cannot seal, so the jobs they publish are anonymous: to act for a user, queue through the app
(an HTTP queue, whose ``authenticate`` hook decides the user) instead of publishing to a topic.

Without the setting: on a managed host (Cloud Run, GKE, ...) no user is sealed or believed, and a push
with a user fails naming the setting; on a developer's machine each process makes a key of its own,
so users survive between the producer and the push server of one process (``queuerun dev``, tests),
not between processes.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from .errors import ConfigurationError
from .hosting import managed_host
from .settings import ENV
from .wire import A_CONTENT_TYPE, A_DEDUPE, A_GROUP, A_PARAM_PREFIX, A_QUEUE, A_QUEUED_AT, A_USER

log = logging.getLogger("queuerun.server")

A_USER_SEAL: Final = "qr-user-seal"
SEAL_VERSION: Final = "v1"
MIN_KEY_BYTES: Final = 32
_PROCESS_KEY: Final = secrets.token_bytes(MIN_KEY_BYTES)  # development only: see the module docstring


@dataclass(frozen=True)
class UserSeal:
    """Seals and checks the user of one app's jobs."""

    key: bytes
    app: str

    def seal(self, attributes: Mapping[str, str], data: bytes) -> str:
        digest = hmac.new(self.key, _identity(self.app, attributes, data), hashlib.sha256).hexdigest()
        return f"{SEAL_VERSION}.{digest}"

    def verifies(self, attributes: Mapping[str, str], data: bytes) -> bool:
        given = attributes.get(A_USER_SEAL, "")
        return A_USER in attributes and hmac.compare_digest(given, self.seal(attributes, data))


def _identity(app: str, attributes: Mapping[str, str], data: bytes) -> bytes:
    """The fields a seal covers, as one unambiguous byte string (JSON: no separator can be smuggled)."""
    fields = [SEAL_VERSION, app]
    fields += [attributes.get(name, "") for name in (A_QUEUE, A_USER, A_GROUP, A_DEDUPE, A_QUEUED_AT, A_CONTENT_TYPE)]
    params = sorted((k, v) for k, v in attributes.items() if k.startswith(A_PARAM_PREFIX))
    return json.dumps([fields, params, hashlib.sha256(data).hexdigest()]).encode()


def user_seal(key: str | None, app: str) -> UserSeal | None:
    """The seal of ``app`` under ``key`` (``QUEUERUN_USER_KEY``), a per-process key off managed hosts, or None."""
    if key:
        raw = key.encode("utf-8")
        if len(raw) < MIN_KEY_BYTES:
            raise ConfigurationError(f"setting {ENV.USER_KEY} must be at least {MIN_KEY_BYTES} bytes, got {len(raw)}")
        return UserSeal(raw, app)
    if managed_host() is not None:
        return None
    return UserSeal(_PROCESS_KEY, app)


def require(seal: UserSeal | None, *, queue: str) -> UserSeal:
    """The seal, or ConfigurationError: a job with a user cannot be pushed without a key to seal it."""
    if seal is None:
        raise ConfigurationError(
            f"queue {queue!r}: cannot push a job with a user: setting {ENV.USER_KEY} is not set on this managed "
            "host (QueueRunApp provides it from Secret Manager)"
        )
    return seal


def sealed(seal: UserSeal | None, attributes: dict[str, str], data: bytes, *, queue: str) -> dict[str, str]:
    """``attributes`` with the user sealed (call :func:`require` first: this raises the same)."""
    if A_USER not in attributes:
        return attributes
    return {**attributes, A_USER_SEAL: require(seal, queue=queue).seal(attributes, data)}


def admitted(
    seal: UserSeal | None, attributes: Mapping[str, str], data: bytes, *, queue: str, job_id: str
) -> Mapping[str, str]:
    """``attributes`` as the runtime may believe them: a user without a valid seal is removed."""
    if A_USER not in attributes and A_USER_SEAL not in attributes:
        return attributes
    if seal is not None and seal.verifies(attributes, data):
        return attributes
    log.warning(
        "job %s of queue %s carries a user the runtime did not seal: it runs without one",
        job_id[:100],
        queue[:100],
        extra={"queue": queue[:100], "job_id": job_id[:100]},
    )
    return {k: v for k, v in attributes.items() if k not in (A_USER, A_USER_SEAL)}
