"""`CoordinatorOptions`: the one frozen record every coordinator is configured with."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
import os
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypedDict

from ephemeral_actors._signals._pattern import pattern_tokens
from ephemeral_actors._validate import (
    MAX_SECONDS,
    check_int,
    check_seconds,
    check_seconds_or_none,
    name_unknown_keywords,
    unknown_keyword,
)

if TYPE_CHECKING:
    from ephemeral_actors._records import OperationSnapshot
    from ephemeral_actors._retry import RetryPolicy
    from ephemeral_actors._signals import SignalBus, SignalConstraints, SignalEvent
    from ephemeral_actors.backends import Backend

__all__ = ["CoordinatorOptions", "OptionsKwargs", "merge_options"]

Seconds = int | float | _dt.timedelta
"""A duration: seconds as int or float (never bool), or a `datetime.timedelta`."""


ASYNC_DEFAULT_CONCURRENCY = 100
"""`max_concurrency` of a coroutine body when the options did not set it (I/O-bound work)."""


class _DefaultConcurrency(int):
    """`os.cpu_count()`, marked as a default nobody asked for.

    It is an `int` like any other value (it compares, hashes and prints as the CPU
    count), so `CoordinatorOptions().max_concurrency` stays meaningful; its type is
    what lets a coordinator with a coroutine body tell "not given" from "given".
    """

    __slots__ = ()


_CPU_COUNT: list[_DefaultConcurrency] = []


def _default_concurrency() -> int:
    # Read once: os.cpu_count() reads /sys on Linux (about 5 µs), for every record
    # built without max_concurrency.
    if not _CPU_COUNT:
        _CPU_COUNT.append(_DefaultConcurrency(os.cpu_count() or 1))
    return _CPU_COUNT[0]


def resolve_concurrency(options: CoordinatorOptions, *, is_async: bool) -> int:
    """The global limit a coordinator starts with.

    An explicit `max_concurrency` is used as given. Left out, it is the CPU count for
    plain bodies (CPU-bound or blocking work gains nothing from more threads) and
    `ASYNC_DEFAULT_CONCURRENCY` for coroutine bodies, whose operations mostly wait on
    I/O and cost no thread each.
    """
    limit = options.max_concurrency
    if is_async and type(limit) is _DefaultConcurrency:
        return ASYNC_DEFAULT_CONCURRENCY
    return int(limit)


@dataclass(frozen=True, kw_only=True)
class CoordinatorOptions:
    """How a coordinator runs: limits, window, scheduling, signals and callbacks.

    Every field is validated when the record is built; a bad value raises
    `TypeError` or `ValueError` naming the field and the value. Durations accept
    seconds (int or float) or a `datetime.timedelta` of at most
    `threading.TIMEOUT_MAX` (about 292 years on Linux) and are stored as float
    seconds. Pattern sets (`cancel_on_signals`, ...) accept a string (which may be a
    comma list) or an iterable of strings, each pattern at most 1,024 characters, and
    are stored as a tuple.

    Example:
        ```python
        options = CoordinatorOptions(max_concurrency=8, max_tracked_operations=500)
        ```
    """

    max_concurrency: int = field(default_factory=_default_concurrency)
    """Global limit on running operations (>= 1).

    Left out, it reads as `os.cpu_count()`, the limit of plain bodies; a coordinator
    with a coroutine body whose options did not set it runs up to 100 at once
    (`coordinator.max_concurrency` shows the limit in force). Changed in 0.2.0."""
    max_concurrency_per_key: int = 1
    """Keyed coordinators: running operations per key (>= 1)."""
    enable_dynamic_concurrency: bool = False
    """Allow `set_max_concurrency()` at runtime."""
    max_tracked_operations: int = 200
    """Size of the operation window and of the pending backlog (>= 1)."""
    max_operation_lifetime: float | None = 300.0
    """Age bound of the window, by start time, in seconds; `None` disables it."""
    enable_fair_scheduling: bool = False
    """Keyed coordinators: `try_enqueue` rejects a key with too many pending items."""
    fair_scheduling_threshold: int = 10
    """Pending items per key at which fair scheduling rejects (>= 1)."""
    cancel_on_signals: str | Iterable[str] | None = None
    """Signal patterns that cancel work (a str, which may be a comma list, or strs).

    Stored as a tuple of str."""
    defer_on_signals: str | Iterable[str] | None = None
    """Signal patterns that defer new work."""
    resume_on_signals: str | Iterable[str] | None = None
    """Signal patterns that end a deferral at once."""
    drain_on_signals: str | Iterable[str] | None = None
    """Patterns: a matching bus signal (or, without a shared bus, one of this
    coordinator's own signals) calls `complete()` (.NET v1.x). Added in 0.2."""
    clear_on_signals: str | Iterable[str] | None = None
    """Patterns: a matching signal from this coordinator's operations clears the events
    matching the same patterns from the shared bus (.NET v1.x). Added in 0.2."""
    max_defer_attempts: int = 10
    """Re-checks before deferred work runs anyway (>= 0; 0 disables deferral)."""
    defer_check_interval: float = 0.1
    """Seconds between deferral re-checks (> 0)."""
    signals: SignalBus | None = None
    """A shared signal bus: operation signals are published to it."""
    signal_constraints: SignalConstraints | None = None
    """Constraints applied to caused emissions."""
    on_signal: Callable[[SignalEvent], None] | None = None
    """Called synchronously for each emitted signal; exceptions are logged."""
    on_signal_async: Callable[[SignalEvent], Coroutine[Any, Any, None]] | None = None
    """Async handler run on a bounded background processor."""
    max_concurrent_signal_handlers: int = 4
    """Concurrency of `on_signal_async` (>= 1)."""
    max_queued_signals: int = 1000
    """Queue bound for `on_signal_async` (>= 1); when full the newest event is dropped."""
    on_sample: Callable[[tuple[OperationSnapshot, ...]], None] | None = None
    """Called after each completion with the window; exceptions are logged."""
    key_idle_timeout: float = 60.0
    """Keyed coordinators: seconds a key stays idle before its child actor is reaped."""
    name: str | None = None
    """Coordinator name for logs, metrics, actor names and `repr`."""
    backend: Backend | None = None
    """Where bodies run (`ephemeral_actors.backends`); `None` runs them in-process."""
    max_restarts: int = 10
    """Worker crashes tolerated within `restart_window` (>= 0); one more faults the coordinator."""
    restart_window: float = 60.0
    """Seconds over which `max_restarts` counts crashes (> 0)."""
    item_timeout: float | None = None
    """Seconds an attempt may run (> 0); `None`: no deadline. A coroutine body past it
    is cancelled, a plain body asked to cancel and abandoned after a further
    `item_timeout`; the attempt fails with `OperationTimeoutError`. Added in 0.2."""
    retry: RetryPolicy | None = None
    """Re-run failed attempts (`RetryPolicy`); `None`: every failure is final. Added in 0.2."""
    exit_timeout: float = 30.0
    """Seconds an unclosed coordinator may take to finish its work at interpreter exit
    (>= 0); what is left then is cancelled and logged. Added in 0.2.0."""
    describe: Callable[[Any], str] | None = None
    """`item -> str`, called at intake in the caller's thread; `str(result)[:200]` is the
    operation's `label` (None when it raises, which is logged). Added in 0.2.0."""
    max_tracked_failures: int = 100
    """Failed (and cancelled) operations kept for `get_failed()` after the window trimmed
    them (>= 0; 0 keeps only the window's). Added in 0.2.0."""
    rate_limit: float | None = None
    """Operations started per second, whole coordinator (> 0); `None`: no limit.

    Starts never exceed `rate_burst + rate_limit * t` in any window of `t` seconds;
    items held back wait in the backlog, not in worker slots."""
    rate_limit_per_key: float | None = None
    """Keyed coordinators: operations of one key started per second (> 0); `None`: no limit.

    A key waiting for its rate never holds up other keys."""
    rate_burst: int = 1
    """Starts a rate limit lets through at once after a quiet spell (>= 1); each limit
    has its own bucket of `rate_burst`."""


def _int_at_least(minimum: int) -> Callable[[str, object], object]:
    def check(name: str, value: object) -> object:
        return check_int(name, value, minimum=minimum)

    return check


def _seconds(*, allow_zero: bool) -> Callable[[str, object], object]:
    def check(name: str, value: object) -> object:
        return check_seconds(name, value, allow_zero=allow_zero)

    return check


def _seconds_or_none(*, allow_zero: bool) -> Callable[[str, object], object]:
    def check(name: str, value: object) -> object:
        return check_seconds_or_none(name, value, allow_zero=allow_zero)

    return check


def _bool(name: str, value: object) -> object:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")
    return value


def _callable_or_none(name: str, value: object) -> object:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__} {value!r}")
    return value


def _name(name: str, value: object) -> object:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{name} must be a str or None, got {type(value).__name__} {value!r}")
    return value


def _bus(name: str, value: object) -> object:
    from ephemeral_actors._signals import SignalBus  # noqa: PLC0415 - imports the options

    if value is not None and not isinstance(value, SignalBus):
        raise TypeError(f"{name} must be a SignalBus or None, got {type(value).__name__} {value!r}")
    return value


def _constraints(name: str, value: object) -> object:
    from ephemeral_actors._signals import SignalConstraints  # noqa: PLC0415 - as above

    if value is not None and not isinstance(value, SignalConstraints):
        raise TypeError(
            f"{name} must be a SignalConstraints or None, got {type(value).__name__} {value!r}"
        )
    return value


def _retry(name: str, value: object) -> object:
    from ephemeral_actors._retry import RetryPolicy  # noqa: PLC0415 - as above

    if value is not None and not isinstance(value, RetryPolicy):
        raise TypeError(
            f"{name} must be a RetryPolicy or None, got {type(value).__name__} {value!r}"
        )
    return value


def _backend(name: str, value: object) -> object:
    if value is not None and not callable(getattr(value, "wrap", None)):
        raise TypeError(
            f"{name} must implement ephemeral_actors.backends.Backend (a wrap() method), "
            f"got {type(value).__name__} {value!r}"
        )
    return value


def _check_rate(name: str, value: object) -> float | None:
    """A rate in starts per second: a positive, finite int or float (not a bool), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be starts per second as an int or float, or None, "
            f"got {type(value).__name__} {value!r}"
        )
    rate = float(value)
    if math.isnan(rate) or math.isinf(rate) or rate <= 0:
        raise ValueError(f"{name} must be a finite number of starts per second > 0, got {value!r}")
    if 1.0 / rate > MAX_SECONDS:
        # One start per interval: the interval must fit a timer (threading.TIMEOUT_MAX).
        raise ValueError(
            f"{name} must be at least 1 / threading.TIMEOUT_MAX ({1.0 / MAX_SECONDS!r}) "
            f"starts per second, got {value!r}"
        )
    return rate


def _pattern_set(name: str, value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        pattern_tokens(name, value)
        return (value,)
    if isinstance(value, Iterable) and not isinstance(value, bytes | bytearray):
        items = tuple(value)
        for item in items:
            if not isinstance(item, str):
                raise TypeError(
                    f"{name} must hold str patterns, got {type(item).__name__} {item!r}"
                )
        # Refuse an over-long pattern here, naming the field, rather than when the
        # coordinator first compiles the set.
        pattern_tokens(name, items)
        return items
    raise TypeError(
        f"{name} must be a str, an iterable of str or None, got {type(value).__name__} {value!r}"
    )


_FIELD_CHECKS: dict[str, Callable[[str, object], object]] = {
    "max_concurrency": _int_at_least(1),
    "max_concurrency_per_key": _int_at_least(1),
    "enable_dynamic_concurrency": _bool,
    "max_tracked_operations": _int_at_least(1),
    "max_operation_lifetime": _seconds_or_none(allow_zero=False),
    "enable_fair_scheduling": _bool,
    "fair_scheduling_threshold": _int_at_least(1),
    "cancel_on_signals": _pattern_set,
    "defer_on_signals": _pattern_set,
    "resume_on_signals": _pattern_set,
    "drain_on_signals": _pattern_set,
    "clear_on_signals": _pattern_set,
    "max_defer_attempts": _int_at_least(0),
    "defer_check_interval": _seconds(allow_zero=False),
    "signals": _bus,
    "signal_constraints": _constraints,
    "on_signal": _callable_or_none,
    "on_signal_async": _callable_or_none,
    "max_concurrent_signal_handlers": _int_at_least(1),
    "max_queued_signals": _int_at_least(1),
    "on_sample": _callable_or_none,
    "key_idle_timeout": _seconds(allow_zero=False),
    "name": _name,
    "backend": _backend,
    "max_restarts": _int_at_least(0),
    "restart_window": _seconds(allow_zero=False),
    "item_timeout": _seconds_or_none(allow_zero=False),
    "retry": _retry,
    "exit_timeout": _seconds(allow_zero=True),
    "describe": _callable_or_none,
    "max_tracked_failures": _int_at_least(0),
    "rate_limit": _check_rate,
    "rate_limit_per_key": _check_rate,
    "rate_burst": _int_at_least(1),
}
"""Each field's check: `(name, value) -> value`, normalised, or raise naming the field."""


class _Factory:
    """The default a field with a default factory shows in the constructor's signature."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY = _Factory()


def _install_init(cls: type) -> None:
    """Give `cls` a constructor that checks only what differs from the defaults.

    The one dataclasses writes for a frozen record stores each field with its own
    `object.__setattr__` call, and a `__post_init__` would then read every field back
    to find the ones to check: 10 µs for this record, a quarter of building and
    closing an unused coordinator. This one has the same keyword-only signature and
    defaults. It runs a field's check only when the value *is not* its default object
    (a default is valid by construction), in field order, so the first bad field is
    the one reported; then it stores the whole record with one `__dict__` assignment.
    """
    namespace: dict[str, Any] = {"_store": object.__setattr__, "_MISSING": _FACTORY}
    params: list[str] = []
    lines: list[str] = []
    for f in dataclasses.fields(cls):
        name = f.name
        namespace[f"_check_{name}"] = _FIELD_CHECKS[name]
        if f.default_factory is not dataclasses.MISSING:
            namespace[f"_factory_{name}"] = f.default_factory
            params.append(f"{name}=_MISSING")
            lines.append(f"    if {name} is _MISSING:")
            lines.append(f"        {name} = _factory_{name}()")
            lines.append("    else:")
            lines.append(f"        {name} = _check_{name}({name!r}, {name})")
        else:
            namespace[f"_default_{name}"] = f.default
            params.append(f"{name}=_default_{name}")
            lines.append(f"    if {name} is not _default_{name}:")
            lines.append(f"        {name} = _check_{name}({name!r}, {name})")
    record = ", ".join(f"{f.name!r}: {f.name}" for f in dataclasses.fields(cls))
    source = "\n".join(
        [
            f"def __init__(self, *, {', '.join(params)}):",
            *lines,
            f"    _store(self, '__dict__', {{{record}}})",
        ]
    )
    exec(source, namespace)  # noqa: S102 - our own source, built from the field list
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    generated = vars(cls)["__init__"]
    init.__doc__ = generated.__doc__
    init.__annotations__ = dict(generated.__annotations__)
    cls.__init__ = init  # type: ignore[misc]  # replacing it is the point


_install_init(CoordinatorOptions)


class OptionsKwargs(TypedDict, total=False):
    """The `CoordinatorOptions` fields, as keyword arguments of constructors and `for_each`.

    `WorkCoordinator(body, max_concurrency=8)` is typed through
    `**option_fields: Unpack[OptionsKwargs]`, so a type checker knows each keyword
    and its type. It mirrors the dataclass field by field (same names, same
    annotations); a test keeps the two in sync.
    """

    max_concurrency: int
    max_concurrency_per_key: int
    enable_dynamic_concurrency: bool
    max_tracked_operations: int
    max_operation_lifetime: float | None
    enable_fair_scheduling: bool
    fair_scheduling_threshold: int
    cancel_on_signals: str | Iterable[str] | None
    defer_on_signals: str | Iterable[str] | None
    resume_on_signals: str | Iterable[str] | None
    drain_on_signals: str | Iterable[str] | None
    clear_on_signals: str | Iterable[str] | None
    max_defer_attempts: int
    defer_check_interval: float
    signals: SignalBus | None
    signal_constraints: SignalConstraints | None
    on_signal: Callable[[SignalEvent], None] | None
    on_signal_async: Callable[[SignalEvent], Coroutine[Any, Any, None]] | None
    max_concurrent_signal_handlers: int
    max_queued_signals: int
    on_sample: Callable[[tuple[OperationSnapshot, ...]], None] | None
    key_idle_timeout: float
    name: str | None
    backend: Backend | None
    max_restarts: int
    restart_window: float
    item_timeout: float | None
    retry: RetryPolicy | None
    exit_timeout: float
    describe: Callable[[Any], str] | None
    max_tracked_failures: int
    rate_limit: float | None
    rate_limit_per_key: float | None
    rate_burst: int


_FIELDS = frozenset(f.name for f in dataclasses.fields(CoordinatorOptions))
name_unknown_keywords(CoordinatorOptions, _FIELDS)


_DEFAULTS: list[CoordinatorOptions] = []


def default_options() -> CoordinatorOptions:
    """`CoordinatorOptions()`, built once.

    The record is frozen, so it can be shared; validating it anew would cost more than
    building an unused coordinator should.
    """
    if not _DEFAULTS:
        _DEFAULTS.append(CoordinatorOptions())
    return _DEFAULTS[0]


def merge_options(
    options: CoordinatorOptions | None,
    option_fields: Mapping[str, Any],
    *,
    where: str,
) -> CoordinatorOptions:
    """Combine an `options=` record with option fields given as keywords; keywords win.

    Every public constructor, `from_iterable` and `for_each` call this, so the rules
    (and the messages) are the same everywhere.

    Args:
        options: A `CoordinatorOptions`, or None for the defaults.
        option_fields: Field name -> value, from the caller's `**option_fields`.
        where: The public callable's name, for error messages (`"WorkCoordinator"`).

    Returns:
        `options` itself when there are no keywords, else a new validated record.

    Raises:
        TypeError: `options` is not a `CoordinatorOptions`, or a keyword is not an
            option field (the message lists the close matches); or a field has a
            value of the wrong type.
        ValueError: A field has an invalid value.
    """
    if options is not None and not isinstance(options, CoordinatorOptions):
        raise TypeError(
            f"options must be a CoordinatorOptions or None, got {type(options).__name__}"
        )
    unknown = sorted(set(option_fields) - _FIELDS)
    if unknown:
        raise unknown_keyword(where, unknown[0], _FIELDS, "CoordinatorOptions")
    if not option_fields:
        return default_options() if options is None else options
    if options is None:
        # Built from scratch rather than replace()d from the defaults, so a field left
        # out keeps its default factory (max_concurrency follows the CPU count).
        return CoordinatorOptions(**option_fields)
    return dataclasses.replace(options, **option_fields)
