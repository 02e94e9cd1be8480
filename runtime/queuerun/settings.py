"""Runtime settings, read from an injected mapping (``os.environ`` by default), never at import.

``ENV`` is the one definition of the variable names: the Pulumi components set exactly these on
the Cloud Run service, and a test checks the two cannot drift.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from .errors import ConfigurationError


class ENV:
    """Names of the environment variables the runtime reads."""

    BACKEND: Final = "QUEUERUN_BACKEND"  # "embedded" (default) or "gcp"
    APP: Final = "QUEUERUN_APP"  # "module:attribute" of the App the server loads
    PROJECT: Final = "GOOGLE_CLOUD_PROJECT"
    PUBSUB_EMULATOR_HOST: Final = "PUBSUB_EMULATOR_HOST"
    FIRESTORE_EMULATOR_HOST: Final = "FIRESTORE_EMULATOR_HOST"
    FIRESTORE_DATABASE: Final = "QUEUERUN_FIRESTORE_DATABASE"
    PUBSUB_ENDPOINT: Final = "QUEUERUN_PUBSUB_ENDPOINT"  # locational endpoint keeps ordering keys in one region
    PUSH_AUDIENCE: Final = "QUEUERUN_PUSH_AUDIENCE"
    PUSH_SERVICE_ACCOUNT: Final = "QUEUERUN_PUSH_SERVICE_ACCOUNT"
    INSECURE_PUSH: Final = "QUEUERUN_INSECURE_PUSH"  # "1" turns OIDC checks off; emulator only
    PUSH_AUTH: Final = "QUEUERUN_PUSH_AUTH"  # "verify" (default) or "cloud-run-iam"; see PushAuth
    STATE_FILE: Final = "QUEUERUN_STATE_FILE"  # embedded backend: SQLite file for durable state
    CLOUD_RUN_SERVICE: Final = "K_SERVICE"  # set by Cloud Run itself
    ENV_FILE: Final = "QUEUERUN_ENV_FILE"  # the CLI's --env-file: settings of a deployed app
    # "1": anonymous requests reach HTTP queues not declared public; development only (see hosting.py)
    ALLOW_ANONYMOUS: Final = "QUEUERUN_ALLOW_ANONYMOUS"
    # comma-separated origins (scheme://host[:port]) whose pages may open /_ws besides the same origin
    ALLOWED_ORIGINS: Final = "QUEUERUN_ALLOWED_ORIGINS"
    # the app's key that seals a job's user (see user_seal.py); from Secret Manager on Google Cloud
    USER_KEY: Final = "QUEUERUN_USER_KEY"

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(v for k, v in vars(cls).items() if k.isupper())


BackendName = Literal["embedded", "gcp"]
# How push tokens are checked. "verify": the app checks the token's signature (a public service).
# "cloud-run-iam": the service is IAM-protected, so Cloud Run checked the signature and forwards the
# token with it replaced by SIGNATURE_REMOVED_BY_GOOGLE; the app checks the claims only.
PushAuth = Literal["verify", "cloud-run-iam"]
PUSH_AUTH_MODES: Final[tuple[PushAuth, ...]] = ("verify", "cloud-run-iam")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _flag(environ: Mapping[str, str], name: str) -> bool:
    raw = environ.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ConfigurationError(f"setting {name} must be 1/0/true/false, got {raw!r}")


@dataclass(frozen=True)
class Settings:
    backend: BackendName = "embedded"
    project: str | None = None
    pubsub_emulator_host: str | None = None
    firestore_emulator_host: str | None = None
    firestore_database: str = "(default)"
    pubsub_endpoint: str | None = None
    push_audience: str | None = None
    push_service_account: str | None = None
    insecure_push: bool = False
    push_auth: PushAuth = "verify"
    state_file: str | None = None
    cloud_run_service: str | None = None
    allowed_origins: tuple[str, ...] = ()
    user_key: str | None = field(default=None, repr=False)  # a secret: never in a repr or a log line

    @property
    def on_cloud_run(self) -> bool:
        return self.cloud_run_service is not None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        backend = env.get(ENV.BACKEND, "embedded").strip().lower() or "embedded"
        problems: list[str] = []
        if backend not in ("embedded", "gcp"):
            problems.append(f"setting {ENV.BACKEND} must be 'embedded' or 'gcp', got {backend!r}")
        service = env.get(ENV.CLOUD_RUN_SERVICE) or None
        insecure = _flag(env, ENV.INSECURE_PUSH)
        project = env.get(ENV.PROJECT) or None
        if service and backend == "embedded":
            problems.append(
                f"setting {ENV.BACKEND}='embedded' on Cloud Run (K_SERVICE={service!r}): jobs would live in one "
                f"instance's memory and vanish; set {ENV.BACKEND}=gcp"
            )
        if service and insecure:
            problems.append(f"setting {ENV.INSECURE_PUSH} is refused on Cloud Run (K_SERVICE={service!r})")
        push_auth = env.get(ENV.PUSH_AUTH, "").strip().lower() or "verify"
        if push_auth not in PUSH_AUTH_MODES:
            problems.append(
                f"setting {ENV.PUSH_AUTH} must be one of {', '.join(repr(m) for m in PUSH_AUTH_MODES)}, "
                f"got {env.get(ENV.PUSH_AUTH)!r}"
            )
        elif push_auth == "cloud-run-iam" and not service:
            # Off Cloud Run nothing has checked the signature: accepting stripped tokens would accept forgeries.
            problems.append(
                f"setting {ENV.PUSH_AUTH}='cloud-run-iam' is valid only on Cloud Run ({ENV.CLOUD_RUN_SERVICE} is "
                "not set), where Cloud Run's IAM check has verified the token's signature; use 'verify'"
            )
        if backend == "gcp" and not project:
            problems.append(f"setting {ENV.PROJECT} is required when {ENV.BACKEND}=gcp, got {project!r}")
        if problems:
            raise ConfigurationError(problems)
        return cls(
            backend=backend,  # type: ignore[arg-type]  # checked above
            project=project,
            pubsub_emulator_host=env.get(ENV.PUBSUB_EMULATOR_HOST) or None,
            firestore_emulator_host=env.get(ENV.FIRESTORE_EMULATOR_HOST) or None,
            firestore_database=env.get(ENV.FIRESTORE_DATABASE) or "(default)",
            pubsub_endpoint=env.get(ENV.PUBSUB_ENDPOINT) or None,
            push_audience=env.get(ENV.PUSH_AUDIENCE) or None,
            push_service_account=env.get(ENV.PUSH_SERVICE_ACCOUNT) or None,
            insecure_push=insecure,
            push_auth=push_auth,  # type: ignore[arg-type]  # checked above
            state_file=env.get(ENV.STATE_FILE) or None,
            cloud_run_service=service,
            user_key=env.get(ENV.USER_KEY) or None,
            allowed_origins=tuple(o.strip() for o in env.get(ENV.ALLOWED_ORIGINS, "").split(",") if o.strip()),
        )
