"""The quickstart app on Google Cloud: ``pulumi up`` from the repository root (Pulumi.yaml points here).

Config (all optional): ``gcp:project``; ``gcp:region`` (default us-central1); ``quickstart:image`` to
deploy a pre-built image instead of building ``examples/quickstart`` from source;
``quickstart:deletionProtection`` (default true).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pulumi

from queuerun_gcp import QueueRunApp

APP_DIR = Path(__file__).resolve().parents[1]  # examples/quickstart: the app's source tree
sys.path.insert(0, str(APP_DIR))  # the infra program reads the queue declarations from the app itself

from app import app  # noqa: E402

config = pulumi.Config("quickstart")
image = config.get("image")

quickstart = QueueRunApp(
    "quickstart",
    app=app,
    image=image,
    source=None if image else str(APP_DIR),
    source_exclude=["infra"],  # this program is not part of the app
    region=pulumi.Config("gcp").get("region") or "us-central1",
    app_target="app:app",
    deletion_protection=config.get_bool("deletionProtection", True),
)

pulumi.export("url", quickstart.url)
pulumi.export("topics", quickstart.topics)
pulumi.export("dead_letter_topics", quickstart.dead_letter_topics)
pulumi.export("runtime_service_account", quickstart.runtime_service_account_email)
pulumi.export("queuerun_env", quickstart.queuerun_env)  # `queuerun --env-file` acts on this deployment
