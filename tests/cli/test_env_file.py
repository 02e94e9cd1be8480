"""``--env-file``: CLI commands run against a deployed app with that deployment's settings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from emulators import Emulator

from queuerun import cli
from queuerun.env_file import ALLOWED_KEYS, read_env_file
from queuerun.errors import ConfigurationError
from queuerun.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
APP = "tests.cli.cliapp:app"

# What `pulumi stack output queuerun_env --json` prints for a deployed app.
DEPLOYED = {
    "QUEUERUN_BACKEND": "gcp",
    "GOOGLE_CLOUD_PROJECT": "prod-project",
    "QUEUERUN_FIRESTORE_DATABASE": "cliapp-queuerun",
    "QUEUERUN_PUBSUB_ENDPOINT": "europe-west1-pubsub.googleapis.com:443",
    "QUEUERUN_APP": APP,
}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- the file ----------------------------------------------------------------------------------
def test_the_pulumi_output_json_is_read_as_is(tmp_path: Path) -> None:
    assert read_env_file(write(tmp_path, "prod.json", json.dumps(DEPLOYED, indent=2))) == DEPLOYED


def test_key_value_lines_take_comments_export_and_quotes(tmp_path: Path) -> None:
    text = """
# the production deployment
export QUEUERUN_BACKEND=gcp
GOOGLE_CLOUD_PROJECT = prod-project   # inline comment
QUEUERUN_FIRESTORE_DATABASE="cliapp-queuerun"
QUEUERUN_PUBSUB_ENDPOINT='europe-west1-pubsub.googleapis.com:443'
QUEUERUN_PUSH_AUDIENCE="say \\"hi\\" # not a comment"
QUEUERUN_STATE_FILE=

"""
    assert read_env_file(write(tmp_path, "prod.env", text)) == {
        "QUEUERUN_BACKEND": "gcp",
        "GOOGLE_CLOUD_PROJECT": "prod-project",
        "QUEUERUN_FIRESTORE_DATABASE": "cliapp-queuerun",
        "QUEUERUN_PUBSUB_ENDPOINT": "europe-west1-pubsub.googleapis.com:443",
        "QUEUERUN_PUSH_AUDIENCE": 'say "hi" # not a comment',
        "QUEUERUN_STATE_FILE": "",
    }


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("a.json", '{"GOOGLE_CLOUD_PROJECT": "p", "GOOGLE_PROJECT": "p", "QUEUERUN_REGION": "x"}', "GOOGLE_PROJECT, "),
        ("a.env", "GOOGLE_CLOUD_PROJECT=p\nK_SERVICE=shop\n", "not runtime settings: K_SERVICE"),
        ("a.json", '{"GOOGLE_CLOUD_PROJECT": "p"', "not valid JSON"),
        ("a.json", '{"QUEUERUN_BACKEND": 1}', "values must be strings"),
        ("a.json", "[]", "must be an object"),
        ("a.env", "GOOGLE_CLOUD_PROJECT=p\nthis is not a setting\n", "line 2: expected KEY=VALUE"),
        ("a.env", 'GOOGLE_CLOUD_PROJECT="p\n', "unterminated"),
        ("a.env", "GOOGLE_CLOUD_PROJECT='p' q\n", "after the quoted value"),
    ],
)
def test_a_bad_file_is_refused_with_one_line_naming_it(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = write(tmp_path, name, text)

    with pytest.raises(ConfigurationError, match=message) as refused:
        read_env_file(path)

    assert str(path) in str(refused.value) and "\n" not in str(refused.value)


def test_unknown_keys_are_all_listed(tmp_path: Path) -> None:
    path = write(tmp_path, "a.json", '{"GOOGLE_PROJECT": "p", "QUEUERUN_REGION": "x", "QUEUERUN_BACKEND": "gcp"}')

    with pytest.raises(ConfigurationError, match="not runtime settings: GOOGLE_PROJECT, QUEUERUN_REGION"):
        read_env_file(path)


def test_every_setting_the_pulumi_output_names_is_allowed() -> None:
    assert set(DEPLOYED) <= ALLOWED_KEYS


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "No such file"), ("{oops", "not valid JSON"), ("GOOGLE_PROJECT=p", "not runtime settings")],
)
def test_a_missing_or_bad_file_exits_2_with_one_line_and_no_traceback(
    tmp_path: Path, content: str | None, message: str
) -> None:
    path = tmp_path / ("prod.env" if content and "=" in content else "prod.json")
    if content is not None:
        path.write_text(content)
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUERUN_")}

    done = subprocess.run(
        [sys.executable, "-m", "queuerun.cli", "dlq", "list", "broken", "--app", APP, "--env-file", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )

    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert message in done.stderr and str(path) in done.stderr


# -- commands resolve the deployment's settings -------------------------------------------------
class FakeBackend:
    def dead_letters(self, queue: str) -> list[Any]:
        return []


@pytest.fixture
def resolved(monkeypatch: pytest.MonkeyPatch) -> list[Settings]:
    """The settings each command's backend is made from (the backend itself faked: no cloud)."""
    seen: list[Settings] = []

    def backend_for(app: Any, state_file: str | None) -> FakeBackend:
        seen.append(app.settings)
        return FakeBackend()

    monkeypatch.setattr(cli, "backend_for", backend_for)
    for name in DEPLOYED:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("QUEUERUN_ENV_FILE", raising=False)
    return seen


@pytest.mark.parametrize(
    "argv",
    [
        ["dlq", "list", "broken", "--env-file", "{file}"],
        ["--env-file", "{file}", "dlq", "list", "broken"],
        ["dlq", "list", "broken", "--app", APP, "--env-file", "{file}"],
    ],
    ids=["after-command", "before-command", "with-app"],
)
def test_dlq_list_uses_the_project_database_and_endpoint_from_the_file(
    tmp_path: Path, resolved: list[Settings], capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    file = write(tmp_path, "prod.json", json.dumps(DEPLOYED))
    os.environ["GOOGLE_CLOUD_PROJECT"] = "laptop-default-project"  # the file wins over the environment
    try:
        code = cli.main([arg.replace("{file}", str(file)) for arg in argv])
    finally:
        del os.environ["GOOGLE_CLOUD_PROJECT"]

    assert code == 0, capsys.readouterr().err
    [settings] = resolved
    assert (settings.backend, settings.project, settings.firestore_database, settings.pubsub_endpoint) == (
        "gcp",
        "prod-project",
        "cliapp-queuerun",
        "europe-west1-pubsub.googleapis.com:443",
    )
    assert "no dead letters in 'broken'" in capsys.readouterr().out
    assert "QUEUERUN_BACKEND" not in os.environ  # the file's values held for that command only


def test_queuerun_env_file_variable_names_the_file(
    tmp_path: Path, resolved: list[Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUERUN_ENV_FILE", str(write(tmp_path, "prod.env", "GOOGLE_CLOUD_PROJECT=from-env-file\n")))

    assert cli.main(["dlq", "list", "broken", "--app", APP]) == 0

    assert resolved[0].project == "from-env-file"


# -- the clients made from those settings ---------------------------------------------------------
@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Google clients built without looking for a laptop's credentials (no call is made)."""
    import google.auth
    from google.auth.credentials import AnonymousCredentials

    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (AnonymousCredentials(), "prod-project"))  # type: ignore[no-untyped-call]


def test_the_backend_of_a_deployed_app_talks_to_its_regional_pubsub_and_its_database(no_credentials: None) -> None:
    from queuerun.backends.gcp import GcpBackend

    backend = GcpBackend.from_settings(Settings.from_environ(DEPLOYED), app_name="cliapp")

    assert backend.subscriber.api_endpoint == "europe-west1-pubsub.googleapis.com:443"  # dead-letter listing
    assert backend.publisher.api_endpoint == "europe-west1-pubsub.googleapis.com:443"
    assert (backend.firestore.project, backend.firestore._database) == ("prod-project", "cliapp-queuerun")


def test_make_subscriber_uses_the_configured_endpoint(no_credentials: None) -> None:
    from queuerun.backends.gcp import make_subscriber

    assert make_subscriber(endpoint="us-central1-pubsub.googleapis.com:443").api_endpoint == (
        "us-central1-pubsub.googleapis.com:443"
    )
    assert make_subscriber().api_endpoint == "pubsub.googleapis.com"  # the global endpoint otherwise


# -- end to end, on the emulators ---------------------------------------------------------------
@pytest.mark.emulators
def test_dlq_list_with_an_env_file_reads_that_deployments_dead_letters(
    tmp_path: Path, pubsub_emulator: Emulator, firestore_emulator: Emulator
) -> None:
    from queuerun.backends.gcp import make_publisher
    from queuerun.emulator_topology import delete_topology, ensure_topology
    from queuerun.names import dead_letter_topic_id
    from tests.cli.cliapp import app

    project = f"envfile-{uuid.uuid4().hex[:8]}"  # a project of its own on the shared emulator
    ensure_topology(app, project=project, push_base_url="http://127.0.0.1:9", emulator_host=pubsub_emulator.host)
    try:
        publisher = make_publisher(emulator_host=pubsub_emulator.host)
        dead_letter_topic = f"projects/{project}/topics/{dead_letter_topic_id(app.name, 'broken')}"
        future = publisher.publish(
            dead_letter_topic,
            b'"poison"',
            **{"qr-content-type": "application/json", "qr-error": "RuntimeError: boom", "qr-attempts": "5"},
        )
        future.result(timeout=30)
        publisher.stop()
        env_file = write(
            tmp_path,
            "emulated.env",
            f"QUEUERUN_BACKEND=gcp\nGOOGLE_CLOUD_PROJECT={project}\nQUEUERUN_APP={APP}\n"
            f"PUBSUB_EMULATOR_HOST={pubsub_emulator.host}\nFIRESTORE_EMULATOR_HOST={firestore_emulator.host}\n",
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUERUN_", "PUBSUB_", "FIRESTORE_"))}

        done = subprocess.run(
            [sys.executable, "-m", "queuerun.cli", "dlq", "list", "broken", "--env-file", str(env_file)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )

        assert done.returncode == 0, done.stderr
        assert "attempts=5" in done.stdout and "RuntimeError: boom" in done.stdout
    finally:
        delete_topology(app, project=project, emulator_host=pubsub_emulator.host)
