"""The one arguments type of :class:`QueueRunApp`, with secure defaults."""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any, Literal, Protocol

import pulumi

from queuerun.errors import ConfigurationError
from queuerun.manifest import Manifest
from queuerun.spec import QueueSpec

from .constants import DEFAULT_APP_TARGET, DEFAULT_BASE_IMAGE

Access = Literal["private", "iam", "public"]


class AppLike(Protocol):
    """Anything that declares queues: ``queuerun.App`` or a stand-in with the same two attributes."""

    @property
    def name(self) -> str: ...

    @property
    def specs(self) -> Sequence[QueueSpec]: ...


@dataclass(frozen=True)
class QueueRunAppArgs:
    """Arguments of :class:`QueueRunApp`. Give exactly one of ``app``/``manifest``/``queues`` and of
    ``source``/``image``; everything else has a secure default."""

    app: AppLike | None = None
    """The application object; its ``name`` and ``specs`` are read."""
    manifest: str | PathLike[str] | Manifest | None = None
    """A manifest file written by ``queuerun manifest MODULE:APP`` (or a loaded ``Manifest``)."""
    queues: Sequence[QueueSpec | Mapping[str, Any]] | None = None
    """Explicit queue specs, for infra repos that do not import the application."""
    app_name: str | None = None
    """App name with ``queues=``; defaults to the component's name. Prefixes every cloud resource."""

    source: str | PathLike[str] | None = None
    """Directory of the app's source. It is uploaded (only the app: ``.gcloudignore`` or ``.gitignore`` are
    honoured, local state, secrets and caches never go) with the queuerun runtime, a ``requirements.txt``
    merging the runtime's dependencies with the app's and a ``Dockerfile`` running the runtime's server;
    Cloud Build builds it with the build service account and the service runs the image by digest."""
    source_package: str | None = None
    """Dotted package the ``source`` directory is uploaded as (``"examples.shop"`` puts it at
    ``examples/shop/``), for apps whose modules import their siblings relatively; ``app_target`` then
    names the module by its full path (``"examples.shop.app:app"``). Default: the archive's root."""
    source_exclude: Sequence[str] = ()
    """Glob patterns of ``source`` paths left out of the upload (a pattern matching a directory leaves
    out all of it), e.g. ``["infra", "tests"]``."""
    image: pulumi.Input[str] | None = None
    """A container image to run instead of building ``source``."""
    region: pulumi.Input[str] | None = None
    """Region of the service, Firestore database and source bucket; defaults to config ``gcp:region``."""
    project: str | None = None
    """Project id; defaults to the provider's project."""

    app_target: pulumi.Input[str] = DEFAULT_APP_TARGET
    """``module:attribute`` of the App inside the image (``QUEUERUN_APP``); with ``source``, a module of
    the uploaded source (checked at construction)."""
    base_image: str = DEFAULT_BASE_IMAGE
    """Base image of the generated Dockerfile of source builds (a Python 3.11+ image with pip)."""

    access: Access = "private"
    """Who can reach the service besides Pub/Sub push, which always can:

    - ``"private"``: internal ingress; only Pub/Sub and callers inside the project's network that hold
      ``roles/run.invoker`` (:meth:`QueueRunApp.grant_invoke`). HTTP queues and ``/_ws`` are not
      reachable from the internet.
    - ``"iam"``: reachable from the internet, but Cloud Run admits only requests with a Google ID token of
      a member granted ``roles/run.invoker``: other services and scripts, not browsers.
    - ``"public"``: anyone on the internet reaches the service (``allUsers`` invoker, or
      ``invoker_iam_disabled``); the app's ``authenticate`` hook is then what admits callers. Needed by
      browsers posting to HTTP queues and connecting to ``/_ws``, and by queues declared ``public=True``.
    """
    websockets: bool = False
    """The app's pages connect to ``/_ws`` for job notifications (``socket.send``): browsers must reach
    the service, so the component warns unless ``access="public"``."""
    allowed_origins: Sequence[str] = ()
    """Origins (``https://host[:port]``) besides the service's own whose pages may open ``/_ws``
    (``QUEUERUN_ALLOWED_ORIGINS``); a handshake from any other site is refused before the app's hook
    sees its cookies. ``"*"`` allows every site."""
    invoker_iam_disabled: bool = False
    """With ``access="public"``: turn Cloud Run's invoker check off instead of granting ``allUsers``, for
    organizations whose policy (domain restricted sharing) forbids ``allUsers``."""

    request_timeout: pulumi.Input[int] | None = None
    """Cloud Run request timeout in seconds, at least every ack deadline; default: the largest of those and 300."""
    min_instances: pulumi.Input[int] = 0
    """Minimum instances (0 scales to zero)."""
    max_instances: pulumi.Input[int] = 10
    """Maximum instances: bounded so a retry storm cannot scale without limit. With it, at most
    ``max_instances x concurrency`` jobs of a queue run at once across the service."""
    container_concurrency: pulumi.Input[int] | None = None
    """Concurrent requests per instance; default: the push queues' ``concurrency`` summed, plus 80 for
    HTTP endpoints, WebSockets and health checks (at most 1000)."""
    worker_instances: pulumi.Input[int] = 1
    """Instances of the worker pool that consumes ``delivery="pull"`` queues (only made when the app has
    some): a fixed count (manual scaling), or the minimum with ``worker_max_instances``."""
    worker_max_instances: pulumi.Input[int] | None = None
    """With it, the worker pool autoscales on CPU between ``worker_instances`` and this."""
    cpu: pulumi.Input[str] = "1"
    """CPU limit per instance."""
    memory: pulumi.Input[str] = "512Mi"
    """Memory limit per instance."""
    env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    """Extra environment variables; may not override the ones the runtime reads."""
    labels: Mapping[str, str] = field(default_factory=dict)
    """Labels on every labelled resource (``managed-by: queuerun`` is always added)."""

    deletion_protection: bool = True
    """Protects the queues' topics and subscriptions (queued jobs, dead letters), the Firestore database,
    the source bucket and the service: Pulumi ``protect`` on each, so ``pulumi destroy`` stops before
    deleting any of them, plus the services' own deletion protection. False for throwaway stacks."""
    firestore_database: str | None = None
    """An existing Firestore database id (e.g. ``(default)``); by default a dedicated one is created."""
    firestore_location: str | None = None
    """Location of a created database; defaults to ``region``."""
    firestore_ttl: bool = True
    """Manage the TTL policies; set False if another stack already manages them on a shared database."""
    enable_apis: bool = True
    """Enable the Google APIs the app needs (none is on in a fresh project), never disabling them on
    destroy; needs ``serviceusage.services.enable``. False leaves them to you: the component then warns
    with the list to enable."""

    @classmethod
    def from_app_target(cls, target: str, **overrides: Any) -> QueueRunAppArgs:
        """Args that deploy the App at ``target`` (``"package.module:attribute"``, importable now) from source.

        Imports the module and reads the App from it; uploads the directory of the module's package under
        that package's path (``source_package``; none for a top-level module), and has the service load the
        same ``target``: the archive layout and ``app_target`` agree by construction. ``overrides`` are
        further fields (``region=``, ``source_exclude=``...).
        """
        module_name, _, attribute = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigurationError(f"app target {target!r}: cannot import {module_name!r}: {exc}") from exc
        app = getattr(module, attribute, None) if attribute else None
        if app is None or module.__file__ is None:
            raise ConfigurationError(f"app target {target!r} must be 'module:attribute' naming an App in a file")
        package = module.__package__ or None
        source = Path(module.__file__).parent
        return cls(app=app, source=str(source), source_package=package, app_target=target, **overrides)


FIELD_NAMES: frozenset[str] = frozenset(QueueRunAppArgs.__dataclass_fields__)
