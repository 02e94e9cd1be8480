"""Firestore collection and field names the runtime writes, shared with the Pulumi components.

Each collection group gets a TTL policy on ``EXPIRES_FIELD`` in production; TTL deletion lags up to
24 h, so every read still checks the expiry itself.
"""

from __future__ import annotations

from typing import Final

DEDUPE_COLLECTION: Final = "queuerun_dedupe"  # dedupe reservations, one per (project, app, queue, group, dedupe id)
DONE_COLLECTION: Final = "queuerun_done"  # FIFO completion records
PRESENCE_COLLECTION: Final = "queuerun_socket_presence"  # which instance holds a user's WebSockets
INBOX_COLLECTION: Final = "queuerun_socket_inbox"  # one document per instance...
MESSAGES_COLLECTION: Final = "queuerun_socket_messages"  # ...whose messages sub-collection it listens to
EXPIRES_FIELD: Final = "expires_at"
TTL_COLLECTION_GROUPS: Final = (DEDUPE_COLLECTION, DONE_COLLECTION, PRESENCE_COLLECTION, MESSAGES_COLLECTION)
