"""IAM roles and bindings of a QueueRunApp: every binding is on one resource, never project-wide.

Who gets what:

- runtime service account: ``roles/pubsub.publisher`` on each of the app's topics,
  ``roles/pubsub.subscriber`` on pull subscriptions only, ``roles/datastore.user`` conditioned on the
  app's Firestore database (Firestore grants only at project level; the condition narrows it),
  ``roles/secretmanager.secretAccessor`` on the app's user-key secret only (the one reader of it);
- push service account: ``roles/run.invoker`` on the app's service;
- Pub/Sub service agent: ``roles/iam.serviceAccountTokenCreator`` on the push account (to mint its
  OIDC tokens), ``roles/pubsub.publisher`` on dead-letter topics, ``roles/pubsub.subscriber`` on source
  subscriptions (to forward and ack dead letters);
- build service account (source deploys): ``roles/storage.objectViewer`` on the source bucket,
  ``roles/artifactregistry.writer`` on the app's image repository, ``roles/logging.logWriter`` on the
  project (Cloud Build requires Cloud Logging for builds run as a user-specified account; the role has
  no narrower scope);
- ``allUsers``: ``roles/run.invoker`` on the service only with ``access="public"`` (and not
  ``invoker_iam_disabled``).
"""

from __future__ import annotations

import hashlib
from typing import Final

import pulumi
import pulumi_gcp as gcp

from queuerun.errors import ConfigurationError

PUBLISHER: Final = "roles/pubsub.publisher"
SUBSCRIBER: Final = "roles/pubsub.subscriber"
RUN_INVOKER: Final = "roles/run.invoker"
TOKEN_CREATOR: Final = "roles/iam.serviceAccountTokenCreator"
DATASTORE_USER: Final = "roles/datastore.user"
LOG_WRITER: Final = "roles/logging.logWriter"
OBJECT_VIEWER: Final = "roles/storage.objectViewer"
ARTIFACT_WRITER: Final = "roles/artifactregistry.writer"
SECRET_ACCESSOR: Final = "roles/secretmanager.secretAccessor"
ALL_USERS: Final = "allUsers"


def database_condition(project: pulumi.Input[str], database: pulumi.Input[str]) -> gcp.projects.IAMMemberConditionArgs:
    """An IAM condition that limits a Firestore role to one database."""
    return gcp.projects.IAMMemberConditionArgs(
        title="queuerun-database-only",
        description="Limits the grant to the app's Firestore database",
        expression=pulumi.Output.concat('resource.name == "projects/', project, "/databases/", database, '"'),
    )


def member_label(member: pulumi.Input[str], label: str | None) -> str:
    """A stable suffix for the Pulumi name of a grant: the given label, or a hash of a plain member."""
    if label is not None:
        return label
    if isinstance(member, str):
        return hashlib.sha256(member.encode()).hexdigest()[:8]
    raise ConfigurationError(
        f"grant for member {member!r}: the member is not known yet (an Output), so pass name= to label the grant"
    )
