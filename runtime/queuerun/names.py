"""The one parser for app and queue names, and how they map to Google Cloud ids.

Shared by the runtime, the Pulumi components and the dev tooling, so a name accepted
locally is a name that deploys.
"""

from __future__ import annotations

import hashlib
import re

FIFO_SUFFIX = ".fifo"

# App names prefix every resource. Service account ids are 6-30 chars of [a-z0-9-], and we append
# at most "-push" / "-run": 20 chars keeps every derived id in range.
APP_NAME_RE = re.compile(r"^[a-z]([a-z0-9-]{0,18}[a-z0-9])?$")
APP_NAME_MAX = 20

# queue-run's rule: letters, digits, "_" and "-", optionally ".fifo". The length keeps
# "<app>-<queue>-dlq-pull" far below Pub/Sub's 255-char ids.
QUEUE_NAME_RE = re.compile(r"^[A-Za-z0-9_-]+(\.fifo)?$")
QUEUE_NAME_MAX = 80


def app_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid app name, or None."""
    if not isinstance(name, str):
        return f"app name must be a string, got {name!r}"
    if not APP_NAME_RE.match(name):
        return (
            f"app name {name!r} is invalid: use 1-{APP_NAME_MAX} lowercase letters, digits and '-', "
            "starting with a letter and not ending with '-' (it prefixes every Cloud resource)"
        )
    return None


def queue_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid queue name, or None."""
    if not isinstance(name, str):
        return f"queue name must be a string, got {name!r}"
    if not name or not QUEUE_NAME_RE.match(name):
        return f"queue name {name!r} is invalid: use letters, digits, '_' and '-', optionally ending in '{FIFO_SUFFIX}'"
    if len(name) > QUEUE_NAME_MAX:
        return f"queue name {name!r} is {len(name)} characters long: at most {QUEUE_NAME_MAX}"
    return None


def is_fifo(queue_name: str) -> bool:
    """A queue is FIFO exactly when its name ends in ``.fifo``."""
    return queue_name.endswith(FIFO_SUFFIX)


def topic_id(app: str, queue: str) -> str:
    """Pub/Sub topic id of a queue: ``<app>-<queue>`` (topic ids may contain '.')."""
    return f"{app}-{queue}"


def dead_letter_topic_id(app: str, queue: str) -> str:
    return f"{app}-{queue}-dlq"


def subscription_id(app: str, queue: str) -> str:
    return f"{app}-{queue}-sub"


def dead_letter_subscription_id(app: str, queue: str) -> str:
    return f"{app}-{queue}-dlq-sub"


def route_slug(queue: str) -> str:
    """URL path segment of a queue: the name itself (all its characters are URL-safe)."""
    return queue


def resource_slug(queue: str) -> str:
    """A lowercase [a-z0-9-] form of a queue name, unique per name, for ids stricter than topics.

    ``Emails`` and ``emails`` would collide once lowercased, so a short hash of the exact name
    is appended whenever the name is not already in that form.
    """
    simple = queue.replace(".fifo", "-fifo").replace("_", "-").lower()
    if simple == queue:
        return simple
    return f"{simple}-{hashlib.sha256(queue.encode()).hexdigest()[:6]}"
