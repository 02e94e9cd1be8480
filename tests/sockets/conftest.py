"""Fixtures of the socket tests: Firestore clients and hubs on the emulator."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from emulators import Emulator

from queuerun.socket_hub import FirestoreHub


@pytest.fixture
def firestore_client(clean_firestore: Emulator) -> Any:
    from queuerun.backends.gcp import make_firestore

    return make_firestore(project=clean_firestore.project, emulator_host=clean_firestore.host)


@pytest.fixture
def make_hub(firestore_client: Any) -> Iterator[Callable[..., FirestoreHub]]:
    """FirestoreHubs of one app on the emulator, one per pretend instance; closed after the test."""
    app_name = f"s{uuid.uuid4().hex[:8]}"
    hubs: list[FirestoreHub] = []

    def make(instance: str, **options: Any) -> FirestoreHub:
        hub = FirestoreHub(lambda: firestore_client, app_name=app_name, instance=instance, **options)
        hubs.append(hub)
        return hub

    yield make
    for hub in hubs:
        hub.close()
