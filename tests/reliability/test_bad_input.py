"""Bad-input sweep: every public entry point rejects wrong types and values by name.

One table, one test: each row calls a public function, constructor or method with a wrong
type or value and expects a `TypeError`, `ValueError` or `EphemeralError` whose message
names the argument (any of the listed spellings). Rows for `CoordinatorOptions` also
check that the message shows the bad value (SPEC section 3).

Rows that once exposed a library bug stay as regression rows.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import pytest

from ephemeral_actors import (
    CoordinatorOptions,
    CoordinatorRegistry,
    DynamicConcurrencyDisabledError,
    EphemeralError,
    KeyedWorkCoordinator,
    RegistryClosedError,
    ResultCoordinator,
    SignalBus,
    SignalConstraints,
    SignalEvent,
    SignalPropagation,
    UnknownCoordinatorError,
    WorkCoordinator,
    current_operation,
    for_each,
    for_each_async,
    matches,
    matches_any,
)
from ephemeral_actors import messages as m
from tests.conftest import WAIT

NOW = dt.datetime.now(dt.UTC)


def noop(*_args: Any) -> None:
    """A callable that does nothing."""


class Env:
    """Objects the rows call methods on; built on first use, closed after the test."""

    def __init__(self) -> None:
        self.closers: list[Callable[[], None]] = []

    @cached_property
    def work(self) -> WorkCoordinator[Any]:
        """A work coordinator whose window holds one operation with one signal."""
        c: WorkCoordinator[Any] = WorkCoordinator(
            lambda item: current_operation().signal("seen"),
            CoordinatorOptions(enable_dynamic_concurrency=True),
        )
        self.closers.append(lambda: c.close(WAIT))
        c.submit(0).get(timeout=WAIT)
        return c

    @cached_property
    def fixed(self) -> WorkCoordinator[Any]:
        """A work coordinator without dynamic concurrency."""
        c: WorkCoordinator[Any] = WorkCoordinator(noop)
        self.closers.append(lambda: c.close(WAIT))
        return c

    @cached_property
    def bus(self) -> SignalBus:
        bus = SignalBus()
        self.closers.append(bus.close)
        return bus

    @cached_property
    def registry(self) -> CoordinatorRegistry:
        registry = CoordinatorRegistry()
        registry.register("dup", lambda _r: WorkCoordinator(noop))
        registry.register("not-a-coordinator", lambda _r: 5)
        self.closers.append(registry.close)
        return registry

    @cached_property
    def closed_registry(self) -> CoordinatorRegistry:
        registry = CoordinatorRegistry()
        registry.close()
        return registry

    def in_body(self, call: Callable[[Any], Any]) -> Any:
        """Run `call(current_operation())` inside a body; return what it returned or raised."""

        def body(item: Any) -> Any:
            op = current_operation()
            op.signal("seen")
            return call(op)

        c: ResultCoordinator[Any, Any] = ResultCoordinator(body)
        self.closers.append(lambda: c.close(WAIT))
        return c.submit(0).get(timeout=WAIT)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


@pytest.fixture
def env() -> Iterator[Env]:
    e = Env()
    yield e
    e.close()


@dataclass(frozen=True)
class Row:
    """One bad call: what to call, what it must raise, which words name the argument."""

    call: Callable[[Env], Any]
    error: type[BaseException] | tuple[type[BaseException], ...]
    names: tuple[str, ...]
    shown: str | None = None
    """For option rows: the bad value (or bad entry), whose repr must be in the message."""


def option(field: str, value: object, error: type[BaseException], shown: str | None = None) -> Any:
    text = repr(value) if shown is None else shown
    return pytest.param(
        Row(lambda _e: CoordinatorOptions(**{field: value}), error, (field,), text),
        id=f"options.{field}={value!r}",
    )


def row(
    ident: str,
    call: Callable[[Env], Any],
    error: type[BaseException] | tuple[type[BaseException], ...],
    *names: str,
) -> Any:
    return pytest.param(Row(call, error, names), id=ident)


def bound(ident: str, call: Callable[[Env], Any], name: str, shown: str) -> Any:
    """A value past a documented bound: `ValueError` naming `name` and saying `shown`."""
    return pytest.param(Row(call, ValueError, (name,), shown), id=ident)


HUGE = 1e10
"""Seconds above `threading.TIMEOUT_MAX` (issue 13 #20: these used to overflow later)."""
LONG = "x" * 1025
"""One character past the signal name and pattern bound (issue 13 #22)."""
TOO_LONG = "at most 1024 characters, got 1025 characters"
TOO_MANY_SECONDS = "at most threading.TIMEOUT_MAX"

OPTIONS = [
    *(
        option(field, value, error)
        for field in (
            "max_concurrency",
            "max_concurrency_per_key",
            "max_tracked_operations",
            "fair_scheduling_threshold",
            "max_concurrent_signal_handlers",
            "max_queued_signals",
        )
        for value, error in (
            (0, ValueError),
            (-1, ValueError),
            ("2", TypeError),
            (True, TypeError),
            (2.0, TypeError),
            (None, TypeError),
        )
    ),
    option("max_defer_attempts", -1, ValueError),
    option("max_defer_attempts", "3", TypeError),
    option("max_defer_attempts", 1.5, TypeError),
    option("enable_dynamic_concurrency", 1, TypeError),
    option("enable_dynamic_concurrency", "yes", TypeError),
    option("enable_fair_scheduling", None, TypeError),
    option("max_operation_lifetime", 0, ValueError),
    option("max_operation_lifetime", -5, ValueError),
    option("max_operation_lifetime", math.nan, ValueError),
    option("max_operation_lifetime", math.inf, ValueError),
    option("max_operation_lifetime", "300", TypeError),
    option("max_operation_lifetime", True, TypeError),
    option("max_operation_lifetime", dt.timedelta(seconds=-1), ValueError),
    option("defer_check_interval", 0, ValueError),
    option("defer_check_interval", None, TypeError),
    option("defer_check_interval", "0.1", TypeError),
    option("key_idle_timeout", 0, ValueError),
    option("key_idle_timeout", -1.0, ValueError),
    option("key_idle_timeout", [], TypeError),
    option("max_operation_lifetime", HUGE, ValueError),
    option("defer_check_interval", HUGE, ValueError),
    option("key_idle_timeout", HUGE, ValueError),
    option("key_idle_timeout", dt.timedelta.max, ValueError),
    option("cancel_on_signals", LONG, ValueError, shown=TOO_LONG),
    option("defer_on_signals", ["a", f"b, {LONG}"], ValueError, shown=TOO_LONG),
    option("resume_on_signals", ("*" * 1025,), ValueError, shown=TOO_LONG),
    option("cancel_on_signals", 5, TypeError),
    option("cancel_on_signals", [1], TypeError, shown="int 1"),
    option("defer_on_signals", 3.5, TypeError),
    option("resume_on_signals", [None, "a"], TypeError, shown="NoneType"),
    option("signals", "bus", TypeError),
    option("signal_constraints", {}, TypeError),
    option("on_signal", 5, TypeError),
    option("on_signal_async", "handler", TypeError),
    option("on_sample", 1, TypeError),
    option("name", 5, TypeError),
    option("backend", 5, TypeError),
    row(
        "options.unknown-field",
        lambda _e: CoordinatorOptions(max_concurency=1),
        TypeError,
        "max_concurency",
    ),
]

COORDINATORS = [
    row("Work(body=5)", lambda _e: WorkCoordinator(5), TypeError, "body"),
    row("Work(options=5)", lambda _e: WorkCoordinator(noop, 5), TypeError, "options"),
    row(
        "Work(options=dict)",
        lambda _e: WorkCoordinator(noop, {"max_concurrency": 2}),
        TypeError,
        "options",
    ),
    row(
        "Keyed(key_selector=5)", lambda _e: KeyedWorkCoordinator(5, noop), TypeError, "key_selector"
    ),
    row("Keyed(body=None)", lambda _e: KeyedWorkCoordinator(noop, None), TypeError, "body"),
    row(
        "Keyed(options='x')", lambda _e: KeyedWorkCoordinator(noop, noop, "x"), TypeError, "options"
    ),
    row("Result(body='f')", lambda _e: ResultCoordinator("f"), TypeError, "body"),
    row(
        "Work.from_iterable(source=5)",
        lambda _e: WorkCoordinator.from_iterable(5, noop),
        TypeError,
        "source",
    ),
    row(
        "Work.from_iterable(body=5)",
        lambda _e: WorkCoordinator.from_iterable([1], 5),
        TypeError,
        "body",
    ),
    row(
        "Keyed.from_iterable(source=None)",
        lambda _e: KeyedWorkCoordinator.from_iterable(None, noop, noop),
        TypeError,
        "source",
    ),
    row(
        "Keyed.from_iterable(key_selector=5)",
        lambda _e: KeyedWorkCoordinator.from_iterable([], 5, noop),
        TypeError,
        "key_selector",
    ),
    row(
        "Result.from_iterable(source=3.5)",
        lambda _e: ResultCoordinator.from_iterable(3.5, noop),
        TypeError,
        "source",
    ),
    row("enqueue(timeout='1')", lambda e: e.work.enqueue(1, timeout="1"), TypeError, "timeout"),
    row("enqueue(timeout=-1)", lambda e: e.work.enqueue(1, timeout=-1), ValueError, "timeout"),
    row(
        "enqueue(timeout=nan)", lambda e: e.work.enqueue(1, timeout=math.nan), ValueError, "timeout"
    ),
    row("enqueue(timeout=True)", lambda e: e.work.enqueue(1, timeout=True), TypeError, "timeout"),
    row("drain(timeout='x')", lambda e: e.work.drain(timeout="x"), TypeError, "timeout"),
    row("drain(timeout=-1)", lambda e: e.work.drain(timeout=-1), ValueError, "timeout"),
    row("close(timeout='x')", lambda e: e.work.close(timeout="x"), TypeError, "timeout"),
    row("close(timeout=-0.5)", lambda e: e.work.close(timeout=-0.5), ValueError, "timeout"),
    bound(
        "enqueue(timeout=1e10)", lambda e: e.work.enqueue(1, timeout=HUGE), "timeout", repr(HUGE)
    ),
    bound("drain(timeout=1e10)", lambda e: e.work.drain(timeout=HUGE), "timeout", repr(HUGE)),
    bound("close(timeout=1e10)", lambda e: e.work.close(timeout=HUGE), "timeout", repr(HUGE)),
    row(
        "set_max_concurrency('2')",
        lambda e: e.work.set_max_concurrency("2"),
        TypeError,
        "limit",
        "max_concurrency",
    ),
    row(
        "set_max_concurrency(0)",
        lambda e: e.work.set_max_concurrency(0),
        ValueError,
        "limit",
        "max_concurrency",
    ),
    row(
        "set_max_concurrency(True)",
        lambda e: e.work.set_max_concurrency(True),
        TypeError,
        "limit",
        "max_concurrency",
    ),
    row(
        "set_max_concurrency(2.0)",
        lambda e: e.work.set_max_concurrency(2.0),
        TypeError,
        "limit",
        "max_concurrency",
    ),
    row(
        "set_max_concurrency(disabled)",
        lambda e: e.fixed.set_max_concurrency(2),
        DynamicConcurrencyDisabledError,
        "enable_dynamic_concurrency",
    ),
    row(
        "actor SetMaxConcurrency('x')",
        lambda e: e.work.actor_ref.ask(m.SetMaxConcurrency("x"), timeout=WAIT),
        TypeError,
        "max_concurrency",
        "limit",
    ),
    row(
        "actor ask(object())",
        lambda e: e.work.actor_ref.ask(object(), timeout=WAIT),
        TypeError,
        "ephemeral_actors.messages",
    ),
    row("add_observer(5)", lambda e: e.work.add_observer(5), TypeError, "callback"),
    row(
        "get_signals_by_pattern(5)",
        lambda e: e.work.get_signals_by_pattern(5),
        TypeError,
        "pattern",
    ),
    row("has_signal_matching(5)", lambda e: e.work.has_signal_matching(5), TypeError, "pattern"),
]

_QUERY_BUG = (
    "coordinator signal queries do not check their arguments (_base.py get_signals, "
    "get_signals_by_name, get_signals_since, get_signals_by_time_range, has_signal, "
    "count_signals): a wrong type answers empty/False/0, or fails deep inside with a "
    "TypeError that names no argument. Fix: check predicate is callable, name is a str, "
    "since/start/end are aware datetimes, up front"
)

WINDOW_AND_QUERIES = [
    row("pin('1')", lambda e: e.work.pin("1"), TypeError, "op_id"),
    row("unpin(None)", lambda e: e.work.unpin(None), TypeError, "op_id"),
    row("evict(1.5)", lambda e: e.work.evict(1.5), TypeError, "op_id"),
    row(
        "actor Pin('1')",
        lambda e: e.work.actor_ref.ask(m.Pin("1"), timeout=WAIT),
        TypeError,
        "op_id",
    ),
    row(
        "enqueue_many(5)",
        lambda e: e.work.enqueue_many(5),
        TypeError,
        "items",
    ),
    row("get_signals(5)", lambda e: e.work.get_signals(5), TypeError, "predicate"),
    row(
        "get_signals_since('x')",
        lambda e: e.work.get_signals_since("x"),
        TypeError,
        "since",
    ),
    row(
        "get_signals_by_time_range(1, 2)",
        lambda e: e.work.get_signals_by_time_range(1, 2),
        TypeError,
        "start",
    ),
    row(
        "get_signals_by_name(5)",
        lambda e: e.work.get_signals_by_name(5),
        TypeError,
        "name",
    ),
    row("has_signal(5)", lambda e: e.work.has_signal(5), TypeError, "name"),
    bound("has_signal(long)", lambda e: e.work.has_signal(LONG), "name", TOO_LONG),
    bound(
        "get_signals_by_pattern(long)",
        lambda e: e.work.get_signals_by_pattern(LONG),
        "pattern",
        TOO_LONG,
    ),
    bound(
        "count_signals_matching(long)",
        lambda e: e.work.count_signals_matching("*" * 1025),
        "pattern",
        TOO_LONG,
    ),
    row("count_signals(5)", lambda e: e.work.count_signals(5), TypeError, "name"),
]


BUS = [
    row(
        "SignalBus(max_capacity=0)",
        lambda _e: SignalBus(max_capacity=0),
        ValueError,
        "max_capacity",
    ),
    row(
        "SignalBus(max_capacity='10')",
        lambda _e: SignalBus(max_capacity="10"),
        TypeError,
        "max_capacity",
    ),
    row(
        "SignalBus(max_capacity=True)",
        lambda _e: SignalBus(max_capacity=True),
        TypeError,
        "max_capacity",
    ),
    row("SignalBus(max_age=0)", lambda _e: SignalBus(max_age=0), ValueError, "max_age"),
    row("SignalBus(max_age=-1)", lambda _e: SignalBus(max_age=-1), ValueError, "max_age"),
    row("SignalBus(max_age='60')", lambda _e: SignalBus(max_age="60"), TypeError, "max_age"),
    row("SignalBus(max_age=nan)", lambda _e: SignalBus(max_age=math.nan), ValueError, "max_age"),
    bound(
        "SignalBus(max_age=1e10)", lambda _e: SignalBus(max_age=HUGE), "max_age", TOO_MANY_SECONDS
    ),
    bound("emit(long)", lambda e: e.bus.emit(LONG), "name", TOO_LONG),
    bound("subscribe(long, f)", lambda e: e.bus.subscribe(["a", LONG], noop), "pattern", TOO_LONG),
    bound("clear_pattern(long)", lambda e: e.bus.clear_pattern(LONG), "pattern", TOO_LONG),
    bound("detect(long)", lambda e: e.bus.detect(LONG), "name_or_predicate", TOO_LONG),
    bound("matches(long, 'a')", lambda _e: matches(LONG, "a"), "value", TOO_LONG),
    bound("matches('a', long)", lambda _e: matches("a", LONG), "pattern", TOO_LONG),
    bound("matches_any('a', long)", lambda _e: matches_any("a", [LONG]), "patterns", TOO_LONG),
    row("SignalBus(name=5)", lambda _e: SignalBus(name=5), TypeError, "name"),
    row("emit(5)", lambda e: e.bus.emit(5), TypeError, "name"),
    row("emit('')", lambda e: e.bus.emit(""), ValueError, "name"),
    row("emit(key=5)", lambda e: e.bus.emit("a", key=5), TypeError, "key"),
    row(
        "emit(operation_id='1')",
        lambda e: e.bus.emit("a", operation_id="1"),
        TypeError,
        "operation_id",
    ),
    row(
        "emit(operation_id=True)",
        lambda e: e.bus.emit("a", operation_id=True),
        TypeError,
        "operation_id",
    ),
    row(
        "emit(propagation='a')",
        lambda e: e.bus.emit("a", propagation="a"),
        TypeError,
        "propagation",
    ),
    row("publish('x')", lambda e: e.bus.publish("x"), TypeError, "event"),
    row("subscribe(5, f)", lambda e: e.bus.subscribe(5, noop), TypeError, "pattern"),
    row("subscribe('a', 5)", lambda e: e.bus.subscribe("a", 5), TypeError, "callback"),
    row("subscribe('', f)", lambda e: e.bus.subscribe("", noop), ValueError, "pattern"),
    row("subscribe([], f)", lambda e: e.bus.subscribe([], noop), ValueError, "pattern"),
    row("subscribe(['a', 1], f)", lambda e: e.bus.subscribe(["a", 1], noop), TypeError, "pattern"),
    row("sense(5)", lambda e: e.bus.sense(5), TypeError, "predicate"),
    row("detect(5)", lambda e: e.bus.detect(5), TypeError, "name_or_predicate"),
    row("clear_pattern(5)", lambda e: e.bus.clear_pattern(5), TypeError, "pattern"),
    row("clear_operation('1')", lambda e: e.bus.clear_operation("1"), TypeError, "operation_id"),
    row("clear_operation(True)", lambda e: e.bus.clear_operation(True), TypeError, "operation_id"),
    row("clear_key(5)", lambda e: e.bus.clear_key(5), TypeError, "key"),
    row("matches(5, 'a')", lambda _e: matches(5, "a"), TypeError, "value"),
    row("matches('a', 5)", lambda _e: matches("a", 5), TypeError, "pattern"),
    row("matches('a', None)", lambda _e: matches("a", None), TypeError, "pattern"),
    row("matches_any(5, 'a')", lambda _e: matches_any(5, "a"), TypeError, "value"),
    row("matches_any('a', 5)", lambda _e: matches_any("a", 5), TypeError, "patterns"),
    row("matches_any('a', ['x', 2])", lambda _e: matches_any("a", ["x", 2]), TypeError, "patterns"),
]

SIGNAL_RECORDS = [
    row(
        "Constraints(max_depth=0)",
        lambda _e: SignalConstraints(max_depth=0),
        ValueError,
        "max_depth",
    ),
    row(
        "Constraints(max_depth='5')",
        lambda _e: SignalConstraints(max_depth="5"),
        TypeError,
        "max_depth",
    ),
    row(
        "Constraints(max_depth=True)",
        lambda _e: SignalConstraints(max_depth=True),
        TypeError,
        "max_depth",
    ),
    row(
        "Constraints(block_cycles='yes')",
        lambda _e: SignalConstraints(block_cycles="yes"),
        TypeError,
        "block_cycles",
    ),
    row(
        "Constraints(terminal_signals='a')",
        lambda _e: SignalConstraints(terminal_signals="a"),
        TypeError,
        "terminal_signals",
    ),
    row(
        "Constraints(terminal_signals=[1])",
        lambda _e: SignalConstraints(terminal_signals=[1]),
        TypeError,
        "terminal_signals",
    ),
    row(
        "Constraints(terminal_signals=[''])",
        lambda _e: SignalConstraints(terminal_signals=[""]),
        ValueError,
        "terminal_signals",
    ),
    row(
        "Constraints(leaf_signals=5)",
        lambda _e: SignalConstraints(leaf_signals=5),
        TypeError,
        "leaf_signals",
    ),
    row(
        "Constraints(on_blocked=5)",
        lambda _e: SignalConstraints(on_blocked=5),
        TypeError,
        "on_blocked",
    ),
    row(
        "should_block(5, None)",
        lambda _e: SignalConstraints().should_block(5, None),
        TypeError,
        "signal",
    ),
    row(
        "should_block('a', 'b')",
        lambda _e: SignalConstraints().should_block("a", "b"),
        TypeError,
        "cause",
    ),
    row(
        "propagation_for('', None)",
        lambda _e: SignalConstraints().propagation_for("", None),
        ValueError,
        "signal",
    ),
    row("SignalEvent(signal=5)", lambda _e: SignalEvent(5, None, None, NOW), TypeError, "signal"),
    row(
        "SignalEvent(signal='')", lambda _e: SignalEvent("", None, None, NOW), ValueError, "signal"
    ),
    row(
        "SignalEvent(operation_id='1')",
        lambda _e: SignalEvent("a", "1", None, NOW),
        TypeError,
        "operation_id",
    ),
    row(
        "SignalEvent(operation_id=True)",
        lambda _e: SignalEvent("a", True, None, NOW),
        TypeError,
        "operation_id",
    ),
    row("SignalEvent(key=5)", lambda _e: SignalEvent("a", None, 5, NOW), TypeError, "key"),
    row(
        "SignalEvent(timestamp='now')",
        lambda _e: SignalEvent("a", None, None, "now"),
        TypeError,
        "timestamp",
    ),
    row(
        "SignalEvent(timestamp=naive)",
        lambda _e: SignalEvent("a", None, None, NOW.replace(tzinfo=None)),
        ValueError,
        "timestamp",
    ),
    row(
        "SignalEvent(propagation='a')",
        lambda _e: SignalEvent("a", None, None, NOW, "a"),
        TypeError,
        "propagation",
    ),
    row("SignalPropagation(['a'])", lambda _e: SignalPropagation(["a"]), TypeError, "path"),
    row("SignalPropagation(())", lambda _e: SignalPropagation(()), ValueError, "path"),
    row("SignalPropagation(('a', 1))", lambda _e: SignalPropagation(("a", 1)), TypeError, "path"),
    row("SignalPropagation.root(5)", lambda _e: SignalPropagation.root(5), TypeError, "signal"),
    row("SignalPropagation.root('')", lambda _e: SignalPropagation.root(""), ValueError, "signal"),
    bound(
        "SignalPropagation.root(long)", lambda _e: SignalPropagation.root(LONG), "signal", TOO_LONG
    ),
    bound(
        "SignalEvent(signal=long)",
        lambda _e: SignalEvent(LONG, None, None, NOW),
        "signal",
        TOO_LONG,
    ),
    row("extend(None)", lambda _e: SignalPropagation.root("a").extend(None), TypeError, "signal"),
]

OPERATION = [
    row(
        "Operation.signal(5)",
        lambda e: e.in_body(lambda op: op.signal(5)),
        TypeError,
        "name",
    ),
    row("Operation.signal('')", lambda e: e.in_body(lambda op: op.signal("")), ValueError, "name"),
    bound(
        "Operation.signal(long)", lambda e: e.in_body(lambda op: op.signal(LONG)), "name", TOO_LONG
    ),
    bound(
        "Operation.retract_matching(long)",
        lambda e: e.in_body(lambda op: op.retract_matching(LONG)),
        "pattern",
        TOO_LONG,
    ),
    row(
        "Operation.emit_caused('a', 'b')",
        lambda e: e.in_body(lambda op: op.emit_caused("a", "b")),
        TypeError,
        "cause",
    ),
    row(
        "Operation.retract_matching(5)",
        lambda e: e.in_body(lambda op: op.retract_matching(5)),
        TypeError,
        "pattern",
    ),
    row(
        "Operation.retract(5)",
        lambda e: e.in_body(lambda op: op.retract(5)),
        TypeError,
        "name",
    ),
]

REGISTRY_AND_FOR_EACH = [
    row("register(5, f)", lambda e: e.registry.register(5, noop), TypeError, "name"),
    row("register('a', 5)", lambda e: e.registry.register("a", 5), TypeError, "factory"),
    row("register('dup', f) again", lambda e: e.registry.register("dup", noop), ValueError, "dup"),
    row("register_work(5, f)", lambda e: e.registry.register_work(5, noop), TypeError, "name"),
    row("register_work('a', 5)", lambda e: e.registry.register_work("a", 5), TypeError, "body"),
    row(
        "register_work('a', f, 5)",
        lambda e: e.registry.register_work("a", noop, 5),
        TypeError,
        "options",
    ),
    row(
        "register_keyed('a', 5, f)",
        lambda e: e.registry.register_keyed("a", 5, noop),
        TypeError,
        "key_selector",
    ),
    row(
        "register_keyed('a', f, 5)",
        lambda e: e.registry.register_keyed("a", noop, 5),
        TypeError,
        "body",
    ),
    row(
        "register_result('a', None)",
        lambda e: e.registry.register_result("a", None),
        TypeError,
        "body",
    ),
    row("get(5)", lambda e: e.registry.get(5), TypeError, "name"),
    row("get('missing')", lambda e: e.registry.get("missing"), UnknownCoordinatorError, "missing"),
    row(
        "get(factory returns 5)",
        lambda e: e.registry.get("not-a-coordinator"),
        TypeError,
        "factory",
    ),
    row(
        "registry.close(timeout='x')", lambda e: e.registry.close(timeout="x"), TypeError, "timeout"
    ),
    bound(
        "registry.close(timeout=1e10)",
        lambda e: e.registry.close(timeout=HUGE),
        "timeout",
        TOO_MANY_SECONDS,
    ),
    row("closed registry.get", lambda e: e.closed_registry.get("x"), RegistryClosedError, "closed"),
    row(
        "closed registry.register",
        lambda e: e.closed_registry.register("x", noop),
        RegistryClosedError,
        "closed",
    ),
    row(
        "for_each(items=5)",
        lambda _e: for_each(5, noop),
        TypeError,
        "items",
    ),
    row("for_each(body=5)", lambda _e: for_each([1], 5), TypeError, "body"),
    row("for_each(options=5)", lambda _e: for_each([1], noop, 5), TypeError, "options"),
    row("for_each(key=5)", lambda _e: for_each([1], noop, key=5), TypeError, "key"),
    row(
        "for_each_async(body=5)", lambda _e: asyncio.run(for_each_async([1], 5)), TypeError, "body"
    ),
    row(
        "for_each_async(key=5)",
        lambda _e: asyncio.run(for_each_async([1], noop, key=5)),
        TypeError,
        "key",
    ),
]

ROWS = [
    *OPTIONS,
    *COORDINATORS,
    *WINDOW_AND_QUERIES,
    *BUS,
    *SIGNAL_RECORDS,
    *OPERATION,
    *REGISTRY_AND_FOR_EACH,
]


@pytest.mark.parametrize("case", ROWS)
def test_bad_input_is_rejected_by_name(env: Env, case: Row) -> None:
    """The call raises the expected error and its message names the argument."""
    with pytest.raises(case.error) as info:
        case.call(env)
    message = str(info.value)
    assert any(name in message for name in case.names), message
    if case.shown is not None:
        assert case.shown in message, message


def test_every_error_is_a_builtin_or_ephemeral_error() -> None:
    """The table only expects TypeError, ValueError or EphemeralError subclasses."""
    for param in ROWS:
        (case,) = param.values
        errors = case.error if isinstance(case.error, tuple) else (case.error,)
        for error in errors:
            assert issubclass(error, TypeError | ValueError | EphemeralError), error


def test_the_largest_accepted_duration_never_overflows() -> None:
    """Issue 13 #20: `threading.TIMEOUT_MAX` itself is accepted, and no wait overflows.

    A body is running and the backlog is full while `enqueue`, `drain` and `close`
    wait with the largest timeout the library accepts; options and the bus take it too.
    """
    most = threading.TIMEOUT_MAX
    started, release = threading.Event(), threading.Event()

    def body(item: int) -> None:
        if item == 0:
            started.set()
            release.wait(WAIT)

    with SignalBus(max_age=most) as bus:
        options = CoordinatorOptions(
            max_concurrency=1,
            max_tracked_operations=1,
            max_operation_lifetime=most,
            defer_check_interval=most,
            key_idle_timeout=most,
            signals=bus,
        )
        c: WorkCoordinator[int] = WorkCoordinator(body, options)
        try:
            c.enqueue(0, timeout=most)
            assert started.wait(WAIT)
            c.enqueue(1, timeout=most)  # the backlog is now full: the next one waits
            releaser = threading.Thread(target=release.set)
            releaser.start()
            c.enqueue(2, timeout=most)
            releaser.join(WAIT)
            c.complete()
            c.drain(most)
            assert c.total_completed == 3
        finally:
            release.set()
            c.close(most)
    registry = CoordinatorRegistry()
    registry.register_work("w", body)
    registry.get("w")
    registry.close(most)
