"""Fan-out on Google Cloud: ``pulumi up`` from examples/fanout (its Pulumi.yaml points here).

The app is the module ``examples.fanout.app``, as ``queuerun dev examples.fanout.app:app`` names it.
``from_app_target`` imports it by that name, uploads the directory under the same package path and
has the service load the same target, so the archive and ``QUEUERUN_APP`` agree.

Config (all optional): ``gcp:project``; ``gcp:region`` (default us-central1);
``fanout:deletionProtection`` (default true).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pulumi

from queuerun_gcp import QueueRunApp, QueueRunAppArgs

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root, where ``examples`` imports

fanout = QueueRunApp(
    "fanout",
    QueueRunAppArgs.from_app_target("examples.fanout.app:app"),
    source_exclude=["infra"],  # this program is not part of the app
    region=pulumi.Config("gcp").get("region") or "us-central1",
    deletion_protection=pulumi.Config().get_bool("deletionProtection", True),
)

pulumi.export("url", fanout.url)
pulumi.export("topics", fanout.topics)
pulumi.export("dead_letter_topics", fanout.dead_letter_topics)
pulumi.export("push_service_account", fanout.push_service_account_email)
pulumi.export("queuerun_env", fanout.queuerun_env)  # `queuerun --env-file` acts on this deployment
