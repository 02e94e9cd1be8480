"""Checkout on Google Cloud: ``pulumi up`` from examples/checkout (its Pulumi.yaml points here).

The app is the module ``examples.checkout.app``, as ``queuerun dev examples.checkout.app:app`` names it.
``from_app_target`` imports it by that name, uploads the directory under the same package path and
has the service load the same target, so the archive and ``QUEUERUN_APP`` agree.

The checkout form posts from the customer's browser, so the service is public (``access="public"``):
Cloud Run admits every request and a real shop adds an ``authenticate`` hook to its App.

Config (all optional): ``gcp:project``; ``gcp:region`` (default us-central1);
``checkout:deletionProtection`` (default true).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pulumi

from queuerun_gcp import QueueRunApp, QueueRunAppArgs

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root, where ``examples`` imports

checkout = QueueRunApp(
    "checkout",
    QueueRunAppArgs.from_app_target("examples.checkout.app:app"),
    source_exclude=["infra"],  # this program is not part of the app
    access="public",  # the shop's checkout form posts from the customer's browser
    region=pulumi.Config("gcp").get("region") or "us-central1",
    deletion_protection=pulumi.Config().get_bool("deletionProtection", True),
)

pulumi.export("url", checkout.url)
pulumi.export("topics", checkout.topics)
pulumi.export("dead_letter_topics", checkout.dead_letter_topics)
pulumi.export("firestore_database", checkout.firestore_database)  # the dedupe records live here
pulumi.export("queuerun_env", checkout.queuerun_env)  # `queuerun --env-file` acts on this deployment
