"""The fast scenarios of the fault-injection suite (tests/gcp/fault_scenarios.py): nothing lost,
nothing doubled."""

from __future__ import annotations

import pytest
from emulators import Emulator
from fault_scenarios import dedupe_race, poison_in_group, pubsub_unreachable

pytestmark = pytest.mark.emulators


def test_racing_pushers_of_one_dedupe_id_queue_one_job_that_runs_once(
    emulator_env: dict[str, str], pubsub_emulator: Emulator
) -> None:
    tally = dedupe_race(emulator_env, pubsub_emulator.project, pubsub_emulator.host)
    print(tally.line())
    assert (tally.pushed, tally.completed, tally.lost, tally.doubled) == (1, 1, 0, 0)


def test_poison_messages_are_dead_lettered_and_their_group_completes(
    emulator_env: dict[str, str], pubsub_emulator: Emulator
) -> None:
    tally = poison_in_group(emulator_env, pubsub_emulator.project, pubsub_emulator.host)
    print(tally.line())
    assert (tally.pushed, tally.completed, tally.dead, tally.lost, tally.doubled) == (8, 5, 3, 0, 0)


def test_pushes_while_pubsub_refuses_connections_queue_each_job_once(
    emulator_env: dict[str, str], pubsub_emulator: Emulator
) -> None:
    tally = pubsub_unreachable(emulator_env, pubsub_emulator.project, pubsub_emulator.host)
    print(tally.line())
    assert tally.push_errors == 3
    assert (tally.pushed, tally.completed, tally.lost, tally.doubled) == (6, 6, 0, 0)
