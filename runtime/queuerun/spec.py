"""QueueSpec: the pure declaration of one queue, and the rules its options must follow.

The runtime, the Pulumi components and the manifest all read this one type. Rules are kept as
data so every problem is reported at once, and so the components can skip values not known yet.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final, Literal

from .errors import ConfigurationError
from .names import is_fifo, queue_name_problem

Delivery = Literal["push", "pull"]

# Content types a queue's HTTP endpoint can accept; `accepts=` narrows this set.
HTTP_CONTENT_TYPES: Final = (
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
    "text/plain",
    "application/octet-stream",
)

DEFAULT_TIMEOUT: Final = 300.0
DEFAULT_MAX_ATTEMPTS: Final = 5
DEFAULT_MIN_BACKOFF: Final = 10.0
DEFAULT_MAX_BACKOFF: Final = 600.0
DEFAULT_DEDUPE_WINDOW: Final = 300.0
DEFAULT_CONCURRENCY: Final = 10

PUSH_TIMEOUT_MAX: Final = 600.0  # Pub/Sub's ack deadline ceiling, which is also the push request timeout
# Pull jobs may run past Pub/Sub's 600 s ack deadline: the worker's client library extends the lease
# for as long as the job runs. We support up to an hour (the library's default max_lease_duration):
# a worker-pool instance that is replaced gets only 10 s after SIGTERM, so longer jobs would mostly
# be cut off and rerun.
PULL_TIMEOUT_MAX: Final = 3600.0
ACK_DEADLINE_MIN: Final = 10
ACK_DEADLINE_MARGIN: Final = 10  # lets the server answer 5xx itself before Pub/Sub gives up on the request
# The longest push handler: its answer must still come inside the 600 s ack deadline.
PUSH_TIMEOUT_MAX_HANDLER: Final = PUSH_TIMEOUT_MAX - ACK_DEADLINE_MARGIN


@dataclass(frozen=True)
class QueueSpec:
    """Everything declared about one queue. Build with :func:`make_spec` to validate."""

    name: str
    timeout: float = DEFAULT_TIMEOUT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    min_backoff: float = DEFAULT_MIN_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    dedupe_window: float = DEFAULT_DEDUPE_WINDOW
    http: bool = False
    accepts: tuple[str, ...] = HTTP_CONTENT_TYPES
    concurrency: int = DEFAULT_CONCURRENCY
    delivery: Delivery = "push"
    exactly_once: bool = False
    public: bool = field(default=False)

    @property
    def fifo(self) -> bool:
        return is_fifo(self.name)

    @property
    def ack_deadline(self) -> int:
        """Subscription ack deadline in seconds: the timeout plus a margin, within Pub/Sub's 10-600."""
        return int(min(PUSH_TIMEOUT_MAX, max(ACK_DEADLINE_MIN, math.ceil(self.timeout) + ACK_DEADLINE_MARGIN)))

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before retrying after failed delivery number ``attempt`` (1-based)."""
        delay = self.min_backoff * (2 ** max(0, attempt - 1)) if self.min_backoff > 0 else 0.0
        return float(min(self.max_backoff, delay))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, used by the manifest."""
        out: dict[str, Any] = {f.name: getattr(self, f.name) for f in fields(self)}
        out["accepts"] = list(self.accepts)
        out["fifo"] = self.fifo
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QueueSpec:
        if "name" not in data:
            raise ConfigurationError(f"queue spec {dict(data)!r} has no 'name'")
        options = {k: v for k, v in data.items() if k not in ("name", "fifo")}
        return make_spec(str(data["name"]), **options)


OPTION_NAMES: Final = tuple(f.name for f in fields(QueueSpec) if f.name != "name")


@dataclass(frozen=True)
class Rule:
    """One check on one option. ``check`` returns a message fragment when the value is bad."""

    option: str
    check: Callable[[Any, Mapping[str, Any]], str | None]


def _number(lo: float, hi: float, *, lo_open: bool = False) -> Callable[[Any, Mapping[str, Any]], str | None]:
    def check(value: Any, _: Mapping[str, Any]) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return f"must be a number of seconds, got {value!r}"
        too_low = value <= lo if lo_open else value < lo
        if too_low or value > hi:
            low = f"more than {lo:g}" if lo_open else f"at least {lo:g}"
            return f"must be {low} and at most {hi:g}, got {value!r}"
        return None

    return check


def whole_number_problem(value: Any, lo: int, hi: int) -> str | None:
    """Why ``value`` is not a whole number in [lo, hi], or None. Shared with the components' rules."""
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be a whole number, got {value!r}"
    if not lo <= value <= hi:
        return f"must be between {lo} and {hi}, got {value!r}"
    return None


def _int_range(lo: int, hi: int) -> Callable[[Any, Mapping[str, Any]], str | None]:
    return lambda value, _: whole_number_problem(value, lo, hi)


def _boolean(value: Any, _: Mapping[str, Any]) -> str | None:
    return None if isinstance(value, bool) else f"must be True or False, got {value!r}"


def _timeout(value: Any, options: Mapping[str, Any]) -> str | None:
    delivery = options.get("delivery", "push")
    hi = PUSH_TIMEOUT_MAX_HANDLER if delivery == "push" else PULL_TIMEOUT_MAX
    problem = _number(0, hi, lo_open=True)(value, options)
    if problem and delivery == "push" and isinstance(value, (int, float)) and value > hi:
        problem += (
            f" (push delivery: Pub/Sub's ack deadline, which is also the push request's deadline, is at most "
            f"{PUSH_TIMEOUT_MAX:g} s, and the server needs {ACK_DEADLINE_MARGIN} s of it to answer a timed-out "
            "job itself before Pub/Sub gives up on the request)"
        )
    return problem


def _max_backoff(value: Any, options: Mapping[str, Any]) -> str | None:
    problem = _number(0, 600)(value, options)
    low = options.get("min_backoff", DEFAULT_MIN_BACKOFF)
    if problem is None and isinstance(low, (int, float)) and not isinstance(low, bool) and value < low:
        problem = f"must be at least min_backoff ({low!r}), got {value!r}"
    return problem


def _accepts(value: Any, _: Mapping[str, Any]) -> str | None:
    if isinstance(value, str) or not isinstance(value, Iterable):
        return f"must be a list of content types, got {value!r}"
    items = list(value)
    bad = [v for v in items if v not in HTTP_CONTENT_TYPES]
    if bad:
        return f"has unsupported content types {bad!r}; choose from {list(HTTP_CONTENT_TYPES)!r}"
    if not items:
        return "must name at least one content type, got []"
    return None


def _delivery(value: Any, _: Mapping[str, Any]) -> str | None:
    return None if value in ("push", "pull") else f"must be 'push' or 'pull', got {value!r}"


# Options that mean something for one delivery only, and why; given (truthy) on the other, refused.
DELIVERY_ONLY: Final[Mapping[str, tuple[Delivery, str]]] = {
    "exactly_once": ("pull", "Pub/Sub push subscriptions never deliver exactly once"),
}


def _delivery_only(option: str, check: Callable[[Any, Mapping[str, Any]], str | None]) -> Rule:
    """``check``, then refuse the option on a queue whose delivery is not the one it belongs to."""
    only, why = DELIVERY_ONLY[option]

    def rule(value: Any, options: Mapping[str, Any]) -> str | None:
        problem = check(value, options)
        delivery = options.get("delivery", "push")
        if problem is None and value and delivery != only:
            problem = f"is only available with delivery={only!r}, and this queue's delivery is {delivery!r} ({why})"
        return problem

    return Rule(option, rule)


RULES: Final[tuple[Rule, ...]] = (
    Rule("timeout", _timeout),
    # The runtime dead-letters on the last attempt itself, so 1-4 work too; Pub/Sub's dead-letter
    # policy (5-100) is only the backstop, given max(5, max_attempts): see dead_letter_policy_attempts.
    Rule("max_attempts", _int_range(1, 100)),
    Rule("min_backoff", _number(0, 600)),  # Pub/Sub retry policy range
    Rule("max_backoff", _max_backoff),
    Rule("dedupe_window", _number(0, 7 * 24 * 3600, lo_open=True)),
    Rule("http", _boolean),
    Rule("public", _boolean),
    Rule("accepts", _accepts),
    Rule("concurrency", _int_range(1, 1000)),
    Rule("delivery", _delivery),
    _delivery_only("exactly_once", _boolean),
)


def spec_problems(name: Any, options: Mapping[str, Any], *, known: Callable[[Any], bool] = lambda _: True) -> list[str]:
    """Every problem with a queue declaration, each naming queue, option and value.

    ``known`` lets callers (the Pulumi components) skip values that are not resolved yet.
    """
    problems: list[str] = []
    label = name if isinstance(name, str) else repr(name)
    if known(name):
        problem = queue_name_problem(name)
        if problem:
            problems.append(problem)
    unknown = sorted(set(options) - set(OPTION_NAMES))
    if unknown:
        problems.append(f"queue {label!r}: unknown options {unknown!r}; valid options are {list(OPTION_NAMES)!r}")
    resolved = {k: v for k, v in options.items() if known(v)}
    for rule in RULES:
        if rule.option in resolved:
            problem = rule.check(resolved[rule.option], resolved)
            if problem:
                problems.append(f"queue {label!r}: {rule.option} {problem}")
    return problems


def make_spec(name: str, **options: Any) -> QueueSpec:
    """Validate a declaration and build its spec; raises ConfigurationError listing every problem."""
    problems = spec_problems(name, options)
    if problems:
        raise ConfigurationError(problems)
    if "accepts" in options:
        options["accepts"] = tuple(options["accepts"])
    for key in ("timeout", "min_backoff", "max_backoff", "dedupe_window"):
        if key in options:
            options[key] = float(options[key])
    return QueueSpec(name=name, **options)
