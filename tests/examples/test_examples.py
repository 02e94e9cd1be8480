"""Each example, end to end on every backend of the conformance harness."""

from __future__ import annotations

import pytest
from conformance.harness import Harness

from examples.checkout import app as checkout
from examples.fanout import app as fanout
from examples.profile_sync import app as profile_sync
from examples.profile_sync.services import crm, helpdesk, mailing


def test_profile_sync_updates_every_service_in_order(harness: Harness) -> None:
    crm.reset()
    helpdesk.reset(fail_first=1)  # the help desk is down for the first call: the job retries
    mailing.reset()
    with harness.run(profile_sync.app) as run:
        profile_sync.save_profile("ada", "ada@one.example", "Ada")
        profile_sync.save_profile("grace", "grace@navy.example", "Grace")
        profile_sync.save_profile("ada", "ada@two.example", "Ada L.")
        profile_sync.save_profile("ada", "ada@three.example", "Ada Lovelace")
        run.drain(timeout=120)
        assert run.dead_letters("sync_profile.fifo") == []
    for service in (crm, helpdesk, mailing):
        assert service.records["ada"]["email"] == "ada@three.example"
        assert service.records["grace"]["email"] == "grace@navy.example"
        ada = [email for user, email in service.calls if user == "ada"]
        assert ada == ["ada@one.example", "ada@two.example", "ada@three.example"], service.name


def test_checkout_double_submit_is_charged_once(harness: Harness) -> None:
    checkout.gateway.charges.clear()
    with harness.run(checkout.app) as run:
        order = checkout.Order("order-1", 4999, "ada@example.com")
        first = checkout.submit_checkout(order)
        second = checkout.submit_checkout(order)
        other = checkout.submit_checkout(checkout.Order("order-2", 100, "grace@example.com"))
        run.drain(timeout=120)
    assert first == second != other
    assert sorted(checkout.gateway.charges) == [("order-1", 4999), ("order-2", 100)]


def test_fanout_splits_a_batch_into_jobs(harness: Harness) -> None:
    fanout.delivered.clear()
    recipients = max(120, int(1000 * harness.scale))
    with harness.run(fanout.app) as run:
        fanout.newsletter.push({"subject": "News", "recipients": recipients})
        run.drain(timeout=120)
    assert fanout.delivered == {f"reader-{i}@example.com" for i in range(recipients)}


@pytest.mark.parametrize(
    ("module", "expected"),
    [
        ("quickstart.app", "all jobs done; dead letters: 0"),
        ("profile_sync.app", "helpdesk calls in order: ['ada@one.example', 'ada@two.example', 'ada@three.example']"),
        ("profile_sync.app", "helpdesk is temporarily unavailable; the job fails and is retried after its backoff"),
        ("profile_sync.app", "attempt 2: crm, helpdesk and mailing updated"),  # the retry the README promises
        ("checkout.app", "charges: [('order-1001', 4999), ('order-1002', 1500)]"),
        ("fanout.app", "delivered to 1000 readers in 20 jobs"),
    ],
)
def test_example_scripts_run(module: str, expected: str) -> None:
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-m", f"examples.{module}"],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout, done.stdout
