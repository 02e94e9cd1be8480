"""Profile sync: a user's profile changes reach the CRM, the help desk and the email service in order.

The web app saves the profile and queues one job per change, grouped by user id, so two quick
edits by the same user can never land out of order. Different users sync in parallel.

    queuerun dev examples.profile_sync.app:app
    curl -X POST localhost:8080/queues/sync_profile.fifo/user-1 -H 'content-type: application/json' \\
         -d '{"user_id": "user-1", "email": "new@example.com", "name": "Ada"}'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from queuerun import App, JobMetadata

from .services import crm, helpdesk, mailing

app = App("profile-sync")


@dataclass
class ProfileChange:
    user_id: str
    email: str
    name: str


@app.queue("sync_profile.fifo", timeout=60, min_backoff=0.2, max_backoff=5, http=True, accepts=["application/json"])
def sync_profile(change: ProfileChange, meta: JobMetadata) -> None:
    """Push one change to every downstream service; any failure retries the whole job, in order."""
    profile = asdict(change)
    step = f"sync {change.user_id} #{meta.sequence_number} ({change.email}), attempt {meta.received_count}"
    for service in (crm, helpdesk, mailing):
        if service.records.get(change.user_id) != profile:  # idempotent: a retry skips what is done
            try:
                service.update(change.user_id, profile)
            except ConnectionError as exc:
                print(f"{step}: {exc}; the job fails and is retried after its backoff", flush=True)
                raise
    print(f"{step}: crm, helpdesk and mailing updated", flush=True)


def save_profile(user_id: str, email: str, name: str) -> str:
    """What the web app's request handler does after writing its own database."""
    return sync_profile.group(user_id).push(ProfileChange(user_id, email, name))


def main() -> None:
    with app.local() as local:
        save_profile("ada", "ada@one.example", "Ada")
        save_profile("ada", "ada@two.example", "Ada L.")
        save_profile("grace", "grace@navy.example", "Grace")
        save_profile("ada", "ada@three.example", "Ada Lovelace")
        local.drain(timeout=30)
    for service in (crm, helpdesk, mailing):
        print(f"{service.name:<9} {dict(sorted((u, r['email']) for u, r in service.records.items()))}")
    print(f"helpdesk calls in order: {[e for u, e in helpdesk.calls if u == 'ada']}")


if __name__ == "__main__":
    main()
