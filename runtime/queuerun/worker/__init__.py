"""``queuerun worker``: streaming-pull consumers for ``delivery="pull"`` queues (see :mod:`.pull`)."""

from .pull import PullWorker, pull_specs, run_worker

__all__ = ["PullWorker", "pull_specs", "run_worker"]
