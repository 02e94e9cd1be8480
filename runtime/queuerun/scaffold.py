"""``queuerun init NAME [DIR]``: a new app's files, ready to test, run and deploy.

The layout: ``app.py`` (the App, loading one queue per file from ``queues/``), two queues (a
standard one that fails for one input, to show retries and dead letters, and a FIFO one), a test
using ``app.local(backoff=False)``, an ``infra/`` Pulumi program deploying the folder from source,
and the ``.gcloudignore`` that keeps tests, infra and local state out of the upload. Existing files
are never overwritten.
"""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigurationError
from .names import app_name_problem

APP = '''"""The {name} app: its queues live one per file in queues/ (the file name is the queue name).

Run it locally:  queuerun dev app:app
Push a job:      queuerun push welcome '{{"email": "ada@example.com"}}' app:app
Test it:         python -m pytest
"""

from queuerun import App

app = App("{name}", queues_dir="queues")
'''

WELCOME = '''"""A standard queue: jobs run in parallel and are retried with backoff when they fail."""

from queuerun import JobMetadata

config = {{"max_attempts": 5, "min_backoff": 1, "max_backoff": 10}}


def handler(job: dict[str, str], meta: JobMetadata) -> None:
    if job["email"].endswith(".invalid"):
        # Fails every attempt: after max_attempts the job is a dead letter (queuerun dlq list welcome app:app).
        raise ValueError(f"cannot send to {{job['email']!r}}")
    print(f"welcome email to {{job['email']}} (attempt {{meta.received_count}})")
'''

PROFILE = '''"""A FIFO queue: the jobs of one group (here, one user) run one at a time, in push order."""

from queuerun import JobMetadata

config = {{"timeout": 30}}


def handler(job: dict[str, str], meta: JobMetadata) -> None:
    print(f"user {{meta.group_id}}: profile update #{{meta.sequence_number}} sets {{job}}")
'''

TEST = '''"""The queues, run in this process on the embedded backend (no cloud account needed)."""

from app import app


def test_a_welcome_email_is_sent() -> None:
    with app.local(backoff=False) as local:  # backoff=False: retries run at once, so tests stay fast
        app.queues("welcome").push({{"email": "ada@example.com"}})
        local.drain(timeout=10)
        assert local.dead_letters("welcome") == []


def test_an_email_that_keeps_failing_becomes_a_dead_letter() -> None:
    with app.local(backoff=False) as local:
        job_id = app.queues("welcome").push({{"email": "nobody@example.invalid"}})
        local.drain(timeout=10)
        [dead] = local.dead_letters("welcome")
        assert dead.job_id == job_id and dead.attempts == 5 and "cannot send" in dead.error


def test_profile_updates_of_one_user_run_in_order() -> None:
    with app.local() as local:
        profile = app.queues("profile.fifo").group("user-1")
        for n in range(3):
            profile.push({{"step": str(n)}})
        local.drain(timeout=10)
        assert local.dead_letters("profile.fifo") == []
'''

INFRA = '''"""Deploys the {name} app to Google Cloud: `pulumi up` in this folder.

Config: `pulumi config set gcp:project MY_PROJECT` (required), `gcp:region` (default us-central1).
"""

import sys
from pathlib import Path

import pulumi
from queuerun_gcp import QueueRunApp

APP_DIR = Path(__file__).resolve().parents[1]  # the app's folder: uploaded and built by Cloud Build
sys.path.insert(0, str(APP_DIR))  # the queue declarations come from the app itself

from app import app  # noqa: E402

deployed = QueueRunApp(
    "{name}",
    app=app,
    source=str(APP_DIR),
    app_target="app:app",
    region=pulumi.Config("gcp").get("region") or "us-central1",
)

pulumi.export("url", deployed.url)
pulumi.export("queuerun_env", deployed.queuerun_env)  # queuerun --env-file acts on this deployment
'''

PULUMI_YAML = """name: {name}
description: The {name} app's queues, Cloud Run service, Firestore and IAM
runtime:
  name: python
  options:
    toolchain: pip
"""

GCLOUDIGNORE = """# What a source deploy leaves out of the upload (gcloud's syntax, like .gitignore).
.gcloudignore
.git/
.queuerun/
.venv/
__pycache__/
infra/
tests/
"""

REQUIREMENTS = """# The app's own dependencies (the queuerun runtime is added by the deploy).
"""

GITIGNORE = """.queuerun/
__pycache__/
.venv/
"""


def files(name: str) -> dict[str, str]:
    """Relative path -> content of every file ``queuerun init`` writes."""
    return {
        "app.py": APP.format(name=name),
        "queues/welcome.py": WELCOME.format(),
        "queues/profile.fifo.py": PROFILE.format(),
        "tests/test_queues.py": TEST.format(),
        "infra/__main__.py": INFRA.format(name=name),
        "infra/Pulumi.yaml": PULUMI_YAML.format(name=name),
        ".gcloudignore": GCLOUDIGNORE,
        ".gitignore": GITIGNORE,
        "requirements.txt": REQUIREMENTS,
    }


def scaffold(directory: Path, name: str) -> list[Path]:
    """Write the app's files under ``directory``; refuse (writing nothing) if any already exists."""
    problem = app_name_problem(name)
    if problem:
        raise ConfigurationError(problem)
    planned = {directory / path: content for path, content in files(name).items()}
    existing = [str(path) for path in planned if path.exists()]
    if existing:
        raise ConfigurationError(f"not overwriting existing files: {', '.join(existing)}")
    for path, content in planned.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return list(planned)
