"""Where the process runs, read from the real process environment, and the switches that depend on it.

The development-only switches (insecure push, anonymous access to every HTTP queue) must never
reach production, whatever an ``App(settings=...)`` mapping says: these checks read ``os.environ``
itself, where a managed host (Cloud Run, GKE, Cloud Functions, App Engine) always leaves its marker.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Final

from .errors import ConfigurationError
from .settings import ENV, _flag

if TYPE_CHECKING:
    from .settings import Settings

log = logging.getLogger("queuerun.server")

# Variables a managed host sets in every container it runs; none is set on a developer's machine.
# Not FUNCTION_TARGET: functions-framework sets it locally too (Cloud Functions 2nd gen sets K_SERVICE).
MANAGED_HOST_MARKERS: Final = (
    "K_SERVICE",  # Cloud Run services, Cloud Functions (2nd gen)
    "CLOUD_RUN_JOB",  # Cloud Run jobs
    "KUBERNETES_SERVICE_HOST",  # GKE and every Kubernetes pod
    "GAE_SERVICE",  # App Engine
)


def managed_host(environ: Mapping[str, str] | None = None) -> str | None:
    """The first managed-host marker set in the process environment, as ``NAME=value``, or None."""
    env = os.environ if environ is None else environ
    for name in MANAGED_HOST_MARKERS:
        if env.get(name):
            return f"{name}={env[name]!r}"
    return None


def check_insecure_push(settings: Settings, environ: Mapping[str, str] | None = None) -> None:
    """Refuse insecure push on a managed host, or without an emulator to push from. Run at server start."""
    if not settings.insecure_push:
        return
    env = os.environ if environ is None else environ
    problems = []
    host = managed_host(env)
    if host is not None:
        problems.append(f"setting {ENV.INSECURE_PUSH} is refused on a managed host ({host}): tokens must be checked")
    if not (settings.pubsub_emulator_host or env.get(ENV.PUBSUB_EMULATOR_HOST)):
        problems.append(
            f"setting {ENV.INSECURE_PUSH} needs {ENV.PUBSUB_EMULATOR_HOST}: it exists only for the emulator, "
            "which sends no push token"
        )
    if problems:
        raise ConfigurationError(problems)


def anonymous_allowed(environ: Mapping[str, str] | None = None) -> bool:
    """Whether ``QUEUERUN_ALLOW_ANONYMOUS`` lets anonymous requests reach non-public queues (development only)."""
    env = os.environ if environ is None else environ
    if not _flag(env, ENV.ALLOW_ANONYMOUS):
        return False
    host = managed_host(env)
    if host is not None:
        raise ConfigurationError(f"setting {ENV.ALLOW_ANONYMOUS} is refused on a managed host ({host})")
    log.warning(
        "%s is set: anonymous requests reach every HTTP queue, also those not declared public (development only)",
        ENV.ALLOW_ANONYMOUS,
    )
    return True


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address) is reachable from this machine only."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def warn_if_exposed(host: str, *, server: str, insecure_push: bool = False) -> bool:
    """Log a warning when a development server binds beyond loopback; True if it did.

    Development servers bind 127.0.0.1 unless told otherwise; told otherwise, they say what that opens.
    """
    if is_loopback(host):
        return False
    reach = f"{server} listens on {host!r}: other machines on your network can reach it"
    if insecure_push:
        reach += f" and, with {ENV.INSECURE_PUSH} on, push any job to it without a token"
    log.warning("%s (bind 127.0.0.1 unless you mean it)", reach)
    return True
