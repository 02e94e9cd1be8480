"""queuerun_gcp: Pulumi components that provision queuerun apps on Google Cloud.

``QueueRunApp("shop", app=app, source="app_dir", region="us-central1")`` reads the app's queue
declarations (or a manifest, or explicit specs) and creates every topic, subscription, dead-letter
topic, the Cloud Run service, Firestore TTL policies and least-privilege IAM.
"""

from .app import QueueResources, QueueRunApp
from .args import AppLike, QueueRunAppArgs
from .constants import (
    DEDUPE_COLLECTION,
    DONE_COLLECTION,
    FUNCTION_TARGET,
    PUSH_ROUTE_PREFIX,
    TTL_FIELD,
    TYPE_TOKEN,
    push_audience,
)

__all__ = [
    "DEDUPE_COLLECTION",
    "DONE_COLLECTION",
    "FUNCTION_TARGET",
    "PUSH_ROUTE_PREFIX",
    "TTL_FIELD",
    "TYPE_TOKEN",
    "AppLike",
    "QueueResources",
    "QueueRunApp",
    "QueueRunAppArgs",
    "push_audience",
]
