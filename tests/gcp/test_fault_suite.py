"""The fast scenarios of the fault-injection suite (tests/gcp/fault_scenarios.py): nothing lost,
nothing doubled."""

from __future__ import annotations

from pathlib import Path

import pytest
from emulators import Emulator
from fault_scenarios import crash_around_completion, dedupe_race, kill_server, poison_in_group, pubsub_unreachable

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


def test_a_push_server_killed_twice_mid_job_loses_no_job_the_ledger_recovers_what_the_emulator_drops(
    emulator_env: dict[str, str], pubsub_emulator: Emulator, tmp_path: Path
) -> None:
    tally = kill_server(
        emulator_env, pubsub_emulator.project, pubsub_emulator.host, tmp_path, fifo=False, jobs=12, kills=2
    )
    print(tally.line())
    # A standard job is at least once: one killed between its handler's return and its acknowledgement
    # runs again (README's semantics table), so doubles are bounded (one per kill), not zero.
    assert (tally.pushed, tally.completed, tally.dead, tally.lost) == (12, 12, 0, 0)
    assert tally.doubled <= 4  # at most the jobs in flight at each kill (2 per subscription)


def test_a_push_server_killed_mid_job_loses_no_fifo_job_and_reruns_none_it_recorded_as_done(
    emulator_env: dict[str, str], pubsub_emulator: Emulator, tmp_path: Path
) -> None:
    tally = kill_server(emulator_env, pubsub_emulator.project, pubsub_emulator.host, tmp_path, fifo=True, jobs=9)
    print(tally.line())
    assert (tally.pushed, tally.completed, tally.dead, tally.lost) == (9, 9, 0, 0)
    # A kill can land between a handler's return and its completion record (README's window):
    # such a job runs again. No job whose record was written ever does.
    assert tally.rerun_after_record == 0 and tally.doubled <= 2


def test_a_crash_after_the_completion_record_does_not_rerun_a_completed_fifo_job(
    emulator_env: dict[str, str], pubsub_emulator: Emulator, tmp_path: Path
) -> None:
    tally = crash_around_completion(
        emulator_env, pubsub_emulator.project, pubsub_emulator.host, tmp_path, when="after-record"
    )
    print(tally.line())
    assert (tally.pushed, tally.completed, tally.lost, tally.doubled, tally.rerun_after_record) == (2, 2, 0, 0, 0)


def test_a_crash_between_handler_return_and_completion_record_reruns_the_fifo_job_the_stated_window(
    emulator_env: dict[str, str], pubsub_emulator: Emulator, tmp_path: Path
) -> None:
    """README's semantics table: the one window in which a completed FIFO job runs again."""
    tally = crash_around_completion(
        emulator_env, pubsub_emulator.project, pubsub_emulator.host, tmp_path, when="before-record"
    )
    print(tally.line())
    assert (tally.pushed, tally.completed, tally.lost, tally.doubled, tally.rerun_after_record) == (2, 2, 0, 1, 0)
