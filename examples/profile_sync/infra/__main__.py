"""Profile sync on Google Cloud: ``pulumi up`` from examples/profile_sync (its Pulumi.yaml points here).

The app imports its siblings relatively (``from .services import ...``), so it only imports as the
package ``examples.profile_sync``. ``from_app_target`` imports it by that name, uploads the directory
under the same package path and has the service load the same target, so the archive and
``QUEUERUN_APP`` agree.

The web app's backend, not the browser, queues the changes: the service admits only callers with a
Google ID token of a member granted ``roles/run.invoker`` (``access="iam"``). Grant the backend's
service account with ``sync.grant_invoke("serviceAccount:web@PROJECT.iam.gserviceaccount.com")``.

Config (all optional): ``gcp:project``; ``gcp:region`` (default us-central1);
``profile_sync:deletionProtection`` (default true).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pulumi

from queuerun_gcp import QueueRunApp, QueueRunAppArgs

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root, where ``examples`` imports

sync = QueueRunApp(
    "profile-sync",
    QueueRunAppArgs.from_app_target("examples.profile_sync.app:app"),
    source_exclude=["infra"],  # this program is not part of the app
    access="iam",  # the web app's backend posts changes with an ID token; no browser calls the service
    region=pulumi.Config("gcp").get("region") or "us-central1",
    deletion_protection=pulumi.Config().get_bool("deletionProtection", True),
)

pulumi.export("url", sync.url)
pulumi.export("topics", sync.topics)
pulumi.export("dead_letter_topics", sync.dead_letter_topics)
pulumi.export("subscriptions", sync.subscriptions)
pulumi.export("queuerun_env", sync.queuerun_env)  # `queuerun --env-file` acts on this deployment
