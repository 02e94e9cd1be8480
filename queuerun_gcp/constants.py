"""Names shared with the runtime and fixed by the deployed resources.

The runtime must use the same values (Firestore collections and TTL field, push route, function
target); they are gathered here so the contract is in one place.
"""

from __future__ import annotations

import hashlib
from typing import Final

from queuerun import store_names
from queuerun.topology import PUSH_PATH

# Re-exported: the runtime writes these collections.
DEDUPE_COLLECTION: Final = store_names.DEDUPE_COLLECTION
DONE_COLLECTION: Final = store_names.DONE_COLLECTION

TYPE_TOKEN: Final = "queuerun:index:QueueRunApp"

# Firestore: the runtime writes dedupe and completion records with an ``expires_at`` timestamp;
# TTL policies on these collection groups delete them (up to 24 h late, so reads still check).
# WebSocket presence and inbox messages expire the same way.
TTL_FIELD: Final = store_names.EXPIRES_FIELD
TTL_COLLECTIONS: Final = store_names.TTL_COLLECTION_GROUPS

# Pub/Sub pushes each queue's jobs to ``{service_uri}{PUSH_ROUTE_PREFIX}{queue}``: the runtime's route.
PUSH_ROUTE_PREFIX: Final = PUSH_PATH

# The functions-framework target the runtime provides (``queuerun.server.functions``), for users who
# deploy with Google's own ``gcloud run deploy --function`` flow; the component's builds run the
# runtime's own server instead.
FUNCTION_TARGET: Final = "queuerun"
# The runtime's third-party dependencies, installed by the source build: queuerun itself is not on
# PyPI, so the component uploads the package and lists these in the generated requirements.txt. The
# same list as ``runtime/pyproject.toml`` (a test keeps them equal); never Pulumi.
RUNTIME_REQUIREMENTS: Final = (
    "starlette>=1.0",
    "uvicorn>=0.30",
    "python-multipart>=0.0.9",
    "google-cloud-pubsub>=2.20",
    "google-cloud-firestore>=2.16",
    "google-auth>=2.30",
    "requests>=2.31",
    "pydantic>=2",
    "websockets>=15",
)
DEFAULT_APP_TARGET: Final = "main:app"
DEFAULT_BASE_IMAGE: Final = "python:3.11-slim"
CONTAINER_PORT: Final = 8080

# Service account ids are 6-30 characters: app names are 1-20, so these suffixes keep every id in range.
RUNTIME_ACCOUNT_SUFFIX: Final = "-runtime"
PUSH_ACCOUNT_SUFFIX: Final = "-push"
BUILD_ACCOUNT_SUFFIX: Final = "-build"

CLOUD_RUN_TIMEOUT_MAX: Final = 3600
DEFAULT_REQUEST_TIMEOUT: Final = 300
# Pub/Sub keeps a subscription's messages at most 31 days: dead letters stay as long as possible.
DEAD_LETTER_RETENTION: Final = "2678400s"
# An empty TTL is Pub/Sub's "never expires"; the default deletes subscriptions idle for 31 days.
NEVER_EXPIRE: Final = ""

# None of these is on in a fresh project (cloud.google.com/service-usage/docs/enabled-service).
# cloudresourcemanager: the provider reads the project (number, IAM) through it.
REQUIRED_APIS: Final = (
    "cloudresourcemanager.googleapis.com",
    "iam.googleapis.com",
    "run.googleapis.com",
    "pubsub.googleapis.com",
    "firestore.googleapis.com",
    "secretmanager.googleapis.com",  # the app's user key (QUEUERUN_USER_KEY)
)
SOURCE_BUILD_APIS: Final = (
    "cloudbuild.googleapis.com",
    "artifactregistry.googleapis.com",
    "storage.googleapis.com",
)

# Who may reach the service besides Pub/Sub push (QueueRunAppArgs.access).
ACCESS_CHOICES: Final = ("private", "iam", "public")
# Values of the runtime's QUEUERUN_PUSH_AUTH: on an IAM-protected service Cloud Run has checked the push
# token and forwards it with its signature removed; on a public one the server verifies it in full.
PUSH_AUTH_IAM: Final = "cloud-run-iam"
PUSH_AUTH_VERIFY: Final = "verify"


def push_audience(project: str, app: str) -> str:
    """The OIDC audience on every push subscription of an app, also given to the service as env.

    Fixed per app because the service URL cannot be fed back into the service (a graph cycle).
    """
    return f"queuerun:{project}:{app}"


def firestore_database_id(app: str) -> str:
    """Id of the database the component creates when no existing one is named (4-63 chars)."""
    return f"{app}-queuerun"


def source_bucket_name(app: str, project: str) -> str:
    """Globally unique, deterministic bucket name: at most 20 + 14 + 8 characters."""
    return f"{app}-queuerun-src-{hashlib.sha256(project.encode()).hexdigest()[:8]}"
