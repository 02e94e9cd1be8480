"""A dead letter published by the runtime carries its traceback within Pub/Sub's attribute limits."""

from __future__ import annotations

from queuerun.backends.gcp import MAX_TRACE_CHUNKS, trace_attributes, trace_from_attributes
from queuerun.wire import MAX_ATTRIBUTE_VALUE_BYTES


def test_a_short_traceback_round_trips_in_one_attribute() -> None:
    trace = 'Traceback (most recent call last):\n  File "h.py", line 1, in h\nValueError: no'
    attrs = trace_attributes(trace, room=90)
    assert list(attrs) == ["qr-trace-0"]
    assert trace_from_attributes(attrs) == trace


def test_a_long_traceback_keeps_its_end_in_at_most_4_attributes_of_1024_bytes() -> None:
    frames = "".join(f'  File "mod{i}.py", line {i}, in f{i} ✓\n    call()\n' for i in range(400))
    trace = "Traceback (most recent call last):\n" + frames + "RuntimeError: the end ✓"
    attrs = trace_attributes(trace, room=90)
    assert len(attrs) == MAX_TRACE_CHUNKS
    assert all(len(v.encode()) <= MAX_ATTRIBUTE_VALUE_BYTES for v in attrs.values())
    kept = trace_from_attributes(attrs)
    assert kept.startswith("...\n") and kept.endswith("RuntimeError: the end ✓")
    assert trace.endswith(kept.removeprefix("...\n"))  # a suffix, not split inside a character


def test_the_traceback_gives_way_to_the_jobs_own_attributes() -> None:
    assert len(trace_attributes("x" * 5000, room=2)) == 2
    assert trace_attributes("x" * 5000, room=0) == {}
    assert trace_attributes("", room=10) == {}


def test_the_emulator_dev_console_prints_a_dead_letters_traceback_and_keeps_retries_to_one_line() -> None:
    import logging
    import sys

    from queuerun.emulator_dev import _JobLine

    try:
        raise KeyError("customer")
    except KeyError:
        exc_info = sys.exc_info()

    def line(status: str) -> str:
        record = logging.LogRecord("queuerun.server", logging.ERROR, __file__, 1, "m", None, exc_info)
        record.__dict__.update({"queue": "billing", "job_id": "9", "attempt": 5, "status": status, "error": "x"})
        return _JobLine().format(record)

    dead, retry = line("dead"), line("retry")
    assert dead.splitlines()[0].endswith("billing job=9 attempt=5 dead (x)")
    assert "Traceback (most recent call last):" in dead and dead.endswith("KeyError: 'customer'")
    assert "\n" not in retry
