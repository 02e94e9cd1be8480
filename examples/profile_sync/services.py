"""Stand-ins for the CRM, the help desk and the email service: they record what they were told."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class FakeService:
    name: str
    fail_first: int = 0  # how many calls fail before the service "recovers" (to show retries)
    records: dict[str, dict[str, str]] = field(default_factory=dict)
    calls: list[tuple[str, str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self, fail_first: int = 0) -> None:
        with self._lock:
            self.fail_first = fail_first
            self.records.clear()
            self.calls.clear()

    def update(self, user_id: str, profile: dict[str, str]) -> None:
        with self._lock:
            if self.fail_first > 0:
                self.fail_first -= 1
                raise ConnectionError(f"{self.name} is temporarily unavailable")
            self.records[user_id] = dict(profile)
            self.calls.append((user_id, profile["email"]))


crm = FakeService("crm")
helpdesk = FakeService("helpdesk", fail_first=1)
mailing = FakeService("mailing")
