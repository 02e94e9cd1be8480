"""Quickstart: a standard queue and a FIFO queue, run in-process on the embedded backend.

Run it with `make demo` (or `python examples/quickstart/app.py` inside the venv). It pushes jobs and
prints what happens: FIFO jobs run in order per group, a duplicate push is ignored, and a failing
job is retried until it succeeds. No cloud account needed.
"""

from __future__ import annotations

import threading
import time

from queuerun import App, JobMetadata

app = App("quickstart")
_print_lock = threading.Lock()
_started = time.monotonic()


def say(text: str) -> None:
    with _print_lock:
        print(f"[{time.monotonic() - _started:5.2f}s] {text}", flush=True)


@app.queue("emails", min_backoff=0.2, max_backoff=1)
def send_email(job: dict[str, str], meta: JobMetadata) -> None:
    """Standard queue: jobs run in parallel. The first attempt for 'flaky' fails, to show a retry."""
    if job["to"].startswith("flaky") and meta.received_count == 1:
        say(f"emails        attempt {meta.received_count} for {job['to']} FAILED (SMTP timeout); retry in 0.2s")
        raise ConnectionError("SMTP timeout")
    say(f"emails        sent {job['subject']!r} to {job['to']} (attempt {meta.received_count})")


@app.queue("update_profile.fifo", timeout=30)
def update_profile(job: dict[str, str], meta: JobMetadata) -> None:
    """FIFO queue: one job at a time per user, in push order."""
    time.sleep(0.05)  # pretend to call the CRM
    say(f"update_profile user={meta.group_id} seq={meta.sequence_number} set email={job['email']}")


def main() -> None:
    with app.local() as local:
        say("pushing 3 profile updates for alice and 2 for bob (FIFO, grouped by user)")
        for email in ("alice@one.example", "alice@two.example", "alice@three.example"):
            update_profile.group("alice").push({"email": email})
        for email in ("bob@one.example", "bob@two.example"):
            update_profile.group("bob").push({"email": email})

        say("bob submits a form twice: two pushes with dedupe id 'form-7'")
        first = update_profile.group("bob").dedupe("form-7").push({"email": "bob@form.example"})
        again = update_profile.group("bob").dedupe("form-7").push({"email": "bob@form.example"})
        say(f"double submit: second push returned the first job's id: {again == first} ({first[:8]}...), one job")
        say("pushing 2 emails; the one to flaky@example.com fails its first attempt")

        send_email.push({"to": "carol@example.com", "subject": "Welcome"})
        send_email.push({"to": "flaky@example.com", "subject": "Receipt"})

        local.drain(timeout=30)
        dead = local.dead_letters("emails")
        say(f"all jobs done; dead letters: {len(dead)}")


if __name__ == "__main__":
    main()
