"""CoordinatorOptions validation and normalisation, and argument checks (SPEC sections 2, 3, 4)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import math
import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ephemeral_actors import (
    CoordinatorOptions,
    KeyedWorkCoordinator,
    ResultCoordinator,
    SignalBus,
    SignalConstraints,
    WorkCoordinator,
)


def _noop(*_: Any) -> None:
    return None


async def _anoop(*_: Any) -> None:
    return None


NAN, INF = math.nan, math.inf

# (field, bad value, expected exception, text the message must show)
BAD_OPTIONS: list[Any] = [
    # max_concurrency: int >= 1
    ("max_concurrency", True, TypeError, "True"),
    ("max_concurrency", 2.0, TypeError, "2.0"),
    ("max_concurrency", "4", TypeError, "'4'"),
    ("max_concurrency", None, TypeError, "None"),
    ("max_concurrency", 0, ValueError, "0"),
    ("max_concurrency", -1, ValueError, "-1"),
    # max_concurrency_per_key: int >= 1
    ("max_concurrency_per_key", False, TypeError, "False"),
    ("max_concurrency_per_key", 1.5, TypeError, "1.5"),
    ("max_concurrency_per_key", 0, ValueError, "0"),
    ("max_concurrency_per_key", -3, ValueError, "-3"),
    # enable_dynamic_concurrency: bool
    ("enable_dynamic_concurrency", 1, TypeError, "1"),
    ("enable_dynamic_concurrency", "yes", TypeError, "'yes'"),
    ("enable_dynamic_concurrency", None, TypeError, "None"),
    # max_tracked_operations: int >= 1
    ("max_tracked_operations", True, TypeError, "True"),
    ("max_tracked_operations", 10.0, TypeError, "10.0"),
    ("max_tracked_operations", 0, ValueError, "0"),
    ("max_tracked_operations", -200, ValueError, "-200"),
    # max_operation_lifetime: seconds > 0 or None
    ("max_operation_lifetime", True, TypeError, "True"),
    ("max_operation_lifetime", "300", TypeError, "'300'"),
    ("max_operation_lifetime", 0, ValueError, "0"),
    ("max_operation_lifetime", -1.5, ValueError, "-1.5"),
    ("max_operation_lifetime", NAN, ValueError, "nan"),
    ("max_operation_lifetime", INF, ValueError, "inf"),
    ("max_operation_lifetime", -INF, ValueError, "-inf"),
    ("max_operation_lifetime", dt.timedelta(0), ValueError, "timedelta(0)"),
    ("max_operation_lifetime", dt.timedelta(seconds=-1), ValueError, "timedelta(days=-1"),
    # enable_fair_scheduling: bool
    ("enable_fair_scheduling", 0, TypeError, "0"),
    ("enable_fair_scheduling", "true", TypeError, "'true'"),
    # fair_scheduling_threshold: int >= 1
    ("fair_scheduling_threshold", True, TypeError, "True"),
    ("fair_scheduling_threshold", 0, ValueError, "0"),
    ("fair_scheduling_threshold", -1, ValueError, "-1"),
    # pattern sets: str, iterable of str, or None
    ("cancel_on_signals", 5, TypeError, "5"),
    ("cancel_on_signals", [1], TypeError, "1"),
    ("cancel_on_signals", ["ok", None], TypeError, "None"),
    pytest.param("cancel_on_signals", b"x.*", TypeError, "b'x.*'"),
    ("defer_on_signals", 3.5, TypeError, "3.5"),
    ("defer_on_signals", ("a", 7), TypeError, "7"),
    ("resume_on_signals", object, TypeError, "object"),
    ("resume_on_signals", [b"x"], TypeError, "b'x'"),
    # max_defer_attempts: int >= 0
    ("max_defer_attempts", True, TypeError, "True"),
    ("max_defer_attempts", 2.5, TypeError, "2.5"),
    ("max_defer_attempts", -1, ValueError, "-1"),
    # defer_check_interval: seconds > 0
    ("defer_check_interval", None, TypeError, "None"),
    ("defer_check_interval", True, TypeError, "True"),
    ("defer_check_interval", "0.1", TypeError, "'0.1'"),
    ("defer_check_interval", 0, ValueError, "0"),
    ("defer_check_interval", -0.1, ValueError, "-0.1"),
    ("defer_check_interval", NAN, ValueError, "nan"),
    ("defer_check_interval", INF, ValueError, "inf"),
    ("defer_check_interval", dt.timedelta(0), ValueError, "timedelta(0)"),
    # signals: SignalBus or None
    pytest.param("signals", "bus", TypeError, "'bus'"),
    # signal_constraints: SignalConstraints or None
    pytest.param("signal_constraints", 5, TypeError, "5"),
    # callbacks: callable or None
    ("on_signal", "print", TypeError, "'print'"),
    ("on_signal", 5, TypeError, "5"),
    ("on_signal_async", "handler", TypeError, "'handler'"),
    ("on_sample", ["not", "callable"], TypeError, "['not', 'callable']"),
    # max_concurrent_signal_handlers: int >= 1
    ("max_concurrent_signal_handlers", True, TypeError, "True"),
    ("max_concurrent_signal_handlers", 0, ValueError, "0"),
    ("max_concurrent_signal_handlers", -4, ValueError, "-4"),
    # max_queued_signals: int >= 1
    ("max_queued_signals", "10", TypeError, "'10'"),
    ("max_queued_signals", False, TypeError, "False"),
    ("max_queued_signals", 0, ValueError, "0"),
    # key_idle_timeout: seconds > 0
    ("key_idle_timeout", None, TypeError, "None"),
    ("key_idle_timeout", True, TypeError, "True"),
    ("key_idle_timeout", 0, ValueError, "0"),
    ("key_idle_timeout", -60, ValueError, "-60"),
    ("key_idle_timeout", NAN, ValueError, "nan"),
    ("key_idle_timeout", INF, ValueError, "inf"),
    # name: str or None
    pytest.param("name", 42, TypeError, "42"),
    pytest.param("name", b"coord", TypeError, "b'coord'"),
]


@pytest.mark.parametrize(("field", "value", "error", "shown"), BAD_OPTIONS)
def test_bad_option_values_are_rejected_naming_field_and_value(field, value, error, shown):
    """Every option rejects wrong types and out-of-range values with a message naming field and value."""
    with pytest.raises(error) as info:
        CoordinatorOptions(**{field: value})
    assert type(info.value) is error, "option validation raises plain ValueError/TypeError"
    message = str(info.value)
    assert field in message
    assert shown in message


SPEC_FIELDS = {
    "max_concurrency",
    "max_concurrency_per_key",
    "enable_dynamic_concurrency",
    "max_tracked_operations",
    "max_operation_lifetime",
    "enable_fair_scheduling",
    "fair_scheduling_threshold",
    "cancel_on_signals",
    "defer_on_signals",
    "resume_on_signals",
    "max_defer_attempts",
    "defer_check_interval",
    "signals",
    "signal_constraints",
    "on_signal",
    "on_signal_async",
    "max_concurrent_signal_handlers",
    "max_queued_signals",
    "on_sample",
    "key_idle_timeout",
    "name",
}
"""The fields SPEC section 3 lists (section 13 may add `backend`, tested with the backends)."""


def test_every_spec_option_field_is_covered_by_the_table():
    """The bad-value table exercises every field of SPEC section 3, and each is a real field."""
    fields = {f.name for f in dataclasses.fields(CoordinatorOptions)}
    covered = {row.values[0] if hasattr(row, "values") else row[0] for row in BAD_OPTIONS}
    assert covered == SPEC_FIELDS
    assert fields >= SPEC_FIELDS


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(CoordinatorOptions)])
def test_every_field_is_checked(field):
    """No field escapes validation: an arbitrary object is refused, naming the field.

    Validation skips a field whose value is its default object (a default is valid), so
    a field missing from the table of checks would accept anything: this fails then.
    """
    with pytest.raises(TypeError, match=rf"^{field} must"):
        CoordinatorOptions(**{field: object()})


# -- valid values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "given", "stored"),
    [
        ("max_operation_lifetime", dt.timedelta(minutes=2), 120.0),
        ("max_operation_lifetime", 5, 5.0),
        ("max_operation_lifetime", 0.25, 0.25),
        ("max_operation_lifetime", None, None),
        ("defer_check_interval", dt.timedelta(milliseconds=50), 0.05),
        ("defer_check_interval", 1, 1.0),
        ("key_idle_timeout", dt.timedelta(seconds=90), 90.0),
        ("key_idle_timeout", 3, 3.0),
    ],
)
def test_durations_are_normalised_to_float_seconds(field, given, stored):
    """Durations given as int, float or timedelta are stored as float seconds."""
    value = getattr(CoordinatorOptions(**{field: given}), field)
    assert value == stored
    assert type(value) is type(stored)


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("payment.*", ("payment.*",)),
        ("a.*, b.failed", ("a.*, b.failed",)),
        (["x", "y.*"], ("x", "y.*")),
        (("only",), ("only",)),
        ((p for p in ["gen1", "gen2"]), ("gen1", "gen2")),
        ([], ()),
        (None, None),
    ],
)
def test_pattern_sets_become_tuples(given, stored):
    """Pattern sets given as a str or an iterable of str are stored as a tuple."""
    options = CoordinatorOptions(
        cancel_on_signals=given,
        defer_on_signals=list(given) if isinstance(given, tuple) else None,
        resume_on_signals="resume" if given is None else None,
    )
    assert options.cancel_on_signals == stored
    if isinstance(given, tuple):
        assert options.defer_on_signals == stored
        assert isinstance(options.defer_on_signals, tuple)
    assert options.resume_on_signals == (None if given is not None else ("resume",))


def test_valid_values_are_kept():
    """Valid values of every kind are accepted and kept as given."""
    bus = SignalBus()
    try:
        constraints = SignalConstraints(max_depth=3)
        options = CoordinatorOptions(
            max_concurrency=3,
            max_concurrency_per_key=2,
            enable_dynamic_concurrency=True,
            max_tracked_operations=1,
            enable_fair_scheduling=True,
            fair_scheduling_threshold=1,
            max_defer_attempts=0,
            signals=bus,
            signal_constraints=constraints,
            on_signal=_noop,
            on_signal_async=_anoop,
            on_sample=_noop,
            max_concurrent_signal_handlers=1,
            max_queued_signals=1,
            name="orders",
        )
        assert options.max_concurrency == 3
        assert options.max_concurrency_per_key == 2
        assert options.enable_dynamic_concurrency is True
        assert options.max_tracked_operations == 1
        assert options.max_defer_attempts == 0
        assert options.signals is bus
        assert options.signal_constraints is constraints
        assert options.on_signal is _noop
        assert options.on_signal_async is _anoop
        assert options.name == "orders"
    finally:
        bus.close()


def test_options_are_frozen_and_keyword_only():
    """Options cannot be changed after construction and take keywords only."""
    options = CoordinatorOptions(max_concurrency=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_concurrency = 5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.name = "x"  # type: ignore[misc]
    assert options.max_concurrency == 2
    with pytest.raises(TypeError):
        CoordinatorOptions(2)  # type: ignore[misc]
    replaced = dataclasses.replace(options, max_concurrency=7)
    assert (replaced.max_concurrency, options.max_concurrency) == (7, 2)
    with pytest.raises(ValueError, match="max_concurrency"):
        dataclasses.replace(options, max_concurrency=0)


def test_defaults_match_the_spec():
    """Every default is the one SPEC section 3 lists."""
    o = CoordinatorOptions()
    assert o.max_concurrency == os.cpu_count()
    assert o.max_concurrency_per_key == 1
    assert o.enable_dynamic_concurrency is False
    assert o.max_tracked_operations == 200
    assert o.max_operation_lifetime == 300.0
    assert o.enable_fair_scheduling is False
    assert o.fair_scheduling_threshold == 10
    assert o.cancel_on_signals is None
    assert o.defer_on_signals is None
    assert o.resume_on_signals is None
    assert o.max_defer_attempts == 10
    assert o.defer_check_interval == 0.1
    assert o.signals is None
    assert o.signal_constraints is None
    assert o.on_signal is None
    assert o.on_signal_async is None
    assert o.max_concurrent_signal_handlers == 4
    assert o.max_queued_signals == 1000
    assert o.on_sample is None
    assert o.key_idle_timeout == 60.0
    assert o.name is None


# -- bad call arguments ---------------------------------------------------------------------


@pytest.fixture
def coordinator() -> Iterator[WorkCoordinator[Any]]:
    c = WorkCoordinator(_noop, CoordinatorOptions(enable_dynamic_concurrency=True))
    yield c
    c.close()


BAD_CALLS: list[Any] = [
    ("enqueue(timeout=-1)", lambda c: c.enqueue(1, timeout=-1), ValueError, ("timeout", "-1")),
    ("enqueue(timeout=nan)", lambda c: c.enqueue(1, timeout=NAN), ValueError, ("timeout", "nan")),
    ("enqueue(timeout='1')", lambda c: c.enqueue(1, timeout="1"), TypeError, ("timeout", "'1'")),
    ("drain(timeout='x')", lambda c: c.drain(timeout="x"), TypeError, ("timeout", "'x'")),
    ("drain(timeout=-2)", lambda c: c.drain(timeout=-2), ValueError, ("timeout", "-2")),
    ("close(timeout=True)", lambda c: c.close(timeout=True), TypeError, ("timeout", "True")),
    ("close(timeout=inf)", lambda c: c.close(timeout=INF), ValueError, ("timeout", "inf")),
    (
        "set_max_concurrency('2')",
        lambda c: c.set_max_concurrency("2"),
        TypeError,
        ("max_concurrency", "'2'"),
    ),
    (
        "set_max_concurrency(True)",
        lambda c: c.set_max_concurrency(True),
        TypeError,
        ("max_concurrency", "True"),
    ),
    (
        "set_max_concurrency(2.0)",
        lambda c: c.set_max_concurrency(2.0),
        TypeError,
        ("max_concurrency", "2.0"),
    ),
    (
        "set_max_concurrency(0)",
        lambda c: c.set_max_concurrency(0),
        ValueError,
        ("max_concurrency", "0"),
    ),
]


@pytest.mark.parametrize(
    ("call", "error", "shown"),
    [pytest.param(call, error, shown, id=label) for (label, call, error, shown) in BAD_CALLS],
)
def test_bad_call_arguments_are_rejected(coordinator, call, error, shown):
    """Bad timeouts and limits are TypeError/ValueError naming the argument and value; nothing changes."""
    with pytest.raises(error) as info:
        call(coordinator)
    for text in shown:
        assert text in str(info.value)
    assert coordinator.max_concurrency == CoordinatorOptions().max_concurrency
    assert not coordinator.is_completed
    assert coordinator.submit(1).get(timeout=10) is None


@pytest.mark.parametrize(
    "build",
    [
        lambda o: WorkCoordinator(_noop, options=o),
        lambda o: ResultCoordinator(_noop, options=o),
        lambda o: KeyedWorkCoordinator(_noop, _noop, options=o),
        lambda o: WorkCoordinator.from_iterable([], _noop, options=o),
    ],
    ids=["work", "result", "keyed", "from_iterable"],
)
@pytest.mark.parametrize("options", [{}, {"max_concurrency": 2}, "defaults", 4])
def test_options_must_be_coordinator_options(build: Callable[[Any], Any], options):
    """Passing anything but CoordinatorOptions or None as options is a TypeError naming it."""
    with pytest.raises(TypeError, match="options"):
        build(options)


def test_options_behave_as_a_value_whatever_builds_them():
    """The constructor is generated (it checks only values that are not defaults): equal
    records compare and hash alike, pickle and copy round-trip, nothing can be deleted,
    an unknown keyword is refused, the first bad field in field order is reported, and
    only a default object itself goes unchecked."""
    import copy  # noqa: PLC0415 - only this test needs them
    import pickle  # noqa: PLC0415

    options = CoordinatorOptions(
        max_concurrency=3, max_operation_lifetime=dt.timedelta(seconds=5), name="n"
    )
    same = CoordinatorOptions(name="n", max_operation_lifetime=5.0, max_concurrency=3)
    assert options == same
    assert hash(options) == hash(same)
    assert options != CoordinatorOptions(max_concurrency=3)
    assert pickle.loads(pickle.dumps(options)) == options
    assert copy.copy(options) == options
    assert copy.deepcopy(options) == options
    assert dataclasses.asdict(options)["max_operation_lifetime"] == 5.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        del options.name  # type: ignore[misc]
    with pytest.raises(TypeError, match="max_concurency"):
        CoordinatorOptions(max_concurency=3)  # type: ignore[call-arg]
    # Two bad fields: the one declared first is named, whatever the keyword order.
    with pytest.raises(ValueError, match="max_tracked_operations"):
        CoordinatorOptions(restart_window=-1.0, max_tracked_operations=0)
    # Only the default object itself skips its check: a value equal to the default
    # but not it (0 == False) is checked, and refused.
    with pytest.raises(TypeError, match="enable_dynamic_concurrency"):
        CoordinatorOptions(enable_dynamic_concurrency=0)  # type: ignore[arg-type]
