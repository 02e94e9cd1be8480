"""Shared fixtures. The emulator machinery lives in tests/emulators.py; these are thin wrappers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import emulators
import pytest
from conformance.gcp_harness import GcpHarness
from conformance.harness import EmbeddedHarness, Harness
from conformance.pull_harness import PullHarness
from emulators import Emulator, Kind


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


@pytest.fixture(scope="session")
def emulator_tools() -> str:
    """The path of gcloud. Skips the test when gcloud or java is missing, but fails it when CI=true."""
    try:
        return emulators.require_tools()
    except emulators.EmulatorUnavailable as exc:
        if _in_ci():
            pytest.fail(f"{exc} (CI=true: the emulator tests must run)", pytrace=False)
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def _emulators(emulator_tools: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[Kind, Emulator]]:
    """Both emulators, started together once per session and stopped by process group at the end."""
    running = emulators.start_all(tmp_path_factory.mktemp("emulators"))
    try:
        yield running
    finally:
        for emulator in running.values():
            emulators.stop(emulator)


@pytest.fixture(scope="session")
def pubsub_emulator(_emulators: dict[Kind, Emulator]) -> Emulator:
    """The session's Pub/Sub emulator: ``.host`` is ``127.0.0.1:PORT``, ``.project`` the project id."""
    return _emulators["pubsub"]


@pytest.fixture(scope="session")
def firestore_emulator(_emulators: dict[Kind, Emulator]) -> Emulator:
    """The session's Firestore emulator: ``.host`` is ``127.0.0.1:PORT``, ``.project`` the project id."""
    return _emulators["firestore"]


@pytest.fixture
def clean_firestore(firestore_emulator: Emulator) -> Emulator:
    """The Firestore emulator, emptied of every document before the test."""
    emulators.reset_firestore(firestore_emulator)
    return firestore_emulator


@pytest.fixture
def emulator_env(pubsub_emulator: Emulator, firestore_emulator: Emulator) -> dict[str, str]:
    """A fresh settings mapping (PUBSUB_EMULATOR_HOST, FIRESTORE_EMULATOR_HOST, GOOGLE_CLOUD_PROJECT) to inject."""
    return emulators.emulator_env(pubsub_emulator, firestore_emulator)


@pytest.fixture
def emulator_environ(emulator_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The same settings put into os.environ for this test only (the Google clients read os.environ)."""
    for name, value in emulator_env.items():
        monkeypatch.setenv(name, value)
    return emulator_env


# -- backends of the conformance harness ---------------------------------------------------------
# A backend joins the conformance suite and the example tests by adding its name here.
HARNESSES = ["embedded", "gcp", "pull"]


@pytest.fixture(params=HARNESSES)
def harness(request: pytest.FixtureRequest) -> Harness:
    if request.param == "embedded":
        return EmbeddedHarness(name="embedded", scale=1.0, retry_floor=0.0)
    gap = request.node.get_closest_marker("emulator_gap")
    # harnesses=(...) narrows a gap to the emulator harnesses that show it.
    if gap is not None and request.param in gap.kwargs.get("harnesses", ("gcp", "pull")):
        pytest.skip(f"emulator gap: {gap.args[0]} (covered on the embedded backend)")
    env: dict[str, str] = request.getfixturevalue("emulator_env")
    pubsub: Emulator = request.getfixturevalue("pubsub_emulator")
    if request.param == "pull":
        # Streaming pull from the emulator, redelivering a nacked message about at once.
        firestore: Emulator = request.getfixturevalue("firestore_emulator")
        return PullHarness(
            name="pull",
            scale=0.5,
            retry_floor=0.0,
            env=env,
            project=pubsub.project,
            pubsub_host=pubsub.host,
            firestore=firestore,
        )
    # The emulator pushes at most 2 messages at once and retries about once a second.
    return GcpHarness(name="gcp", scale=0.1, retry_floor=0.9, env=env, project=pubsub.project, pubsub_host=pubsub.host)
