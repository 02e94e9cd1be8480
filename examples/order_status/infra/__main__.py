"""Order status on Google Cloud: ``pulumi up`` from examples/order_status (its Pulumi.yaml points here).

Browsers post orders to the ``orders`` queue and open ``/_ws`` for their live status, so the service
is public (``access="public"``): Cloud Run lets every request through and the app's ``authenticate``
hook decides who the caller is. ``websockets=True`` says the page needs ``/_ws``; the image runs the
runtime's own server, which serves it.

Config (all optional): ``gcp:project``; ``gcp:region`` (default us-central1);
``order_status:deletionProtection`` (default true).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pulumi

from queuerun_gcp import QueueRunApp, QueueRunAppArgs

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root, where ``examples`` imports

orders = QueueRunApp(
    "orders",
    QueueRunAppArgs.from_app_target("examples.order_status.app:app"),
    source_exclude=["infra", "server.py"],  # this program, and the local all-in-one server
    access="public",
    websockets=True,
    region=pulumi.Config("gcp").get("region") or "us-central1",
    deletion_protection=pulumi.Config().get_bool("deletionProtection", True),
)

pulumi.export("url", orders.url)
pulumi.export("topics", orders.topics)
pulumi.export("dead_letter_topics", orders.dead_letter_topics)
pulumi.export("queuerun_env", orders.queuerun_env)  # `queuerun --env-file` acts on this deployment
