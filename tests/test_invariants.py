"""Property tests: generated programs keep the coordinator invariants at every step (SPEC 4, 5)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pykka
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ephemeral_actors import (
    CoordinatorOptions,
    KeyedWorkCoordinator,
    OperationCancelledError,
    WorkCoordinator,
    current_operation,
)
from ephemeral_actors.testing import use_clock
from tests.conftest import WAIT

KINDS = st.sampled_from(["ok", "fail", "gate", "gate"])
STEP_KINDS = {
    "intake": st.tuples(
        st.sampled_from(["enqueue", "try_enqueue", "submit", "submit"]), KINDS, st.integers(0, 2)
    ),
    "release": st.tuples(st.just("release"), st.integers(0, 63)),
    "set_limit": st.tuples(st.just("set_limit"), st.integers(1, 4)),
    "pause": st.tuples(st.sampled_from(["pause", "resume", "resume"])),
    "window": st.tuples(st.sampled_from(["pin", "unpin", "evict"]), st.integers(0, 63)),
    # Issue 13: cancel_operation by id, and async intake cancelled by wait_for.
    "cancel_id": st.tuples(st.just("cancel_id"), st.integers(0, 63)),
    "async_timeout": st.tuples(st.just("async_timeout")),
}
# Weighted towards intake and releases, so limits are hit and backlogs build up.
STEPS = st.sampled_from(
    ["intake"] * 6
    + ["release"] * 3
    + ["set_limit"] * 2
    + ["pause"]
    + ["window"] * 2
    + ["cancel_id", "async_timeout"]
).flatmap(STEP_KINDS.__getitem__)
CONFIGS = st.fixed_dictionaries(
    {
        "max_concurrency": st.integers(1, 4),
        "max_tracked_operations": st.integers(1, 6),
        "max_concurrency_per_key": st.integers(1, 2),
    }
)


@dataclass(frozen=True)
class Item:
    kind: str
    key: int
    gate: threading.Event | None = None


class PlannedFailure(Exception):
    """What a 'fail' body raises."""


class LogicalClock:
    """Replaces the core's wall clock: strictly increasing, so dispatch stamps order events.

    The core stamps `started` under its lock when it dispatches an item; the test
    reads the same clock around `set_max_concurrency`, so a body can tell whether it
    was dispatched before or after a limit change.
    """

    def __init__(self) -> None:
        self._ticks = itertools.count(1)

    def __call__(self) -> float:
        return 1_000_000.0 + next(self._ticks) * 0.001


@dataclass
class Run:
    """One generated program against one coordinator, with the model the invariants use."""

    keyed: bool
    config: dict[str, int]
    lock: threading.Lock = field(default_factory=threading.Lock)
    violations: list[str] = field(default_factory=list)
    running: int = 0
    per_key: Counter[int] = field(default_factory=Counter)
    entered: Counter[str] = field(default_factory=Counter)
    ceiling: int = 0
    clock: LogicalClock = field(default_factory=LogicalClock)
    limits: list[tuple[float, int]] = field(default_factory=list)
    accepted: int = 0
    gates: list[threading.Event] = field(default_factory=list)
    gate_futures: dict[int, pykka.Future[Any]] = field(default_factory=dict)
    inside: set[int] = field(default_factory=set)
    futures: list[tuple[str, pykka.Future[Any]]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    dropped_by_id: int = 0
    coordinator: Any = None

    def __post_init__(self) -> None:
        self.ceiling = self.config["max_concurrency"]
        self.limits.append((0.0, self.config["max_concurrency"]))
        options = CoordinatorOptions(enable_dynamic_concurrency=True, **self.config)
        if self.keyed:
            self.coordinator = KeyedWorkCoordinator(lambda i: i.key, self.body, options)
        else:
            self.coordinator = WorkCoordinator(self.body, options)

    # -- the body records every start against the model ----------------------------------

    def allowed_for(self, dispatched: float) -> int:
        """The most bodies that may run once an item dispatched at `dispatched` started.

        That is the limit in effect at dispatch, or a higher one set since. A body
        dispatched after a lowering must find no more than the new limit running.
        """
        in_effect, later = self.limits[0][1], []
        for stamp, limit in self.limits:
            if stamp <= dispatched:
                in_effect = limit
            else:
                later.append(limit)
        return max([in_effect, *later])

    def body(self, item: Item) -> None:
        dispatched = current_operation()._started
        with self.lock:
            self.running += 1
            self.entered[item.kind] += 1
            if item.gate is not None:
                self.inside.add(id(item.gate))
            allowed = self.allowed_for(dispatched)
            if self.running > allowed:
                self.violations.append(f"start with {self.running} running, {allowed} allowed")
            if self.keyed:
                self.per_key[item.key] += 1
                if self.per_key[item.key] > self.config["max_concurrency_per_key"]:
                    self.violations.append(f"key {item.key}: {self.per_key[item.key]} running")
        try:
            if item.kind == "fail":
                raise PlannedFailure
            if item.gate is not None and not item.gate.wait(WAIT):
                self.violations.append("a gated body was never released")
        finally:
            with self.lock:
                self.running -= 1
                if item.gate is not None:
                    self.inside.discard(id(item.gate))
                if self.keyed:
                    self.per_key[item.key] -= 1

    # -- steps ----------------------------------------------------------------------------

    def new_item(self, kind: str, key: int) -> Item:
        gate = threading.Event() if kind == "gate" else None
        if gate is not None:
            self.gates.append(gate)
        return Item(kind, key, gate)

    def apply(self, step: tuple[Any, ...]) -> None:
        c = self.coordinator
        name = step[0]
        if name in {"enqueue", "submit", "try_enqueue"}:
            item = self.new_item(step[1], step[2])
            # Only this thread adds items, so below the bound enqueue cannot block.
            if name == "try_enqueue" or c.pending_count >= self.config["max_tracked_operations"]:
                self.accepted += c.try_enqueue(item)
            elif name == "enqueue":
                op_id = c.enqueue(item)
                assert op_id > 0
                self.ids.append(op_id)
                self.accepted += 1
            else:
                future = c.submit(item)
                self.futures.append((item.kind, future))
                self.ids.append(future.operation_id)
                self.accepted += 1
                if item.gate is not None:
                    self.gate_futures[id(item.gate)] = future
        elif name == "pause":
            c.pause()
            assert c.is_paused
        elif name == "resume":
            c.resume()
            assert not c.is_paused
        elif name == "set_limit":
            limit = step[1]
            raising = limit >= c.max_concurrency
            with self.lock:
                if raising:  # takes effect at once: allow it from before the call
                    self.ceiling = max(self.ceiling, limit)
                    self.limits.append((self.clock(), limit))
            c.set_max_concurrency(limit)
            if not raising:  # binds every dispatch after the call returned
                with self.lock:
                    self.limits.append((self.clock(), limit))
            assert c.max_concurrency == limit
        elif name == "release":
            closed = [g for g in self.gates if not g.is_set()]
            if closed:
                gate = closed[step[1] % len(closed)]
                with self.lock:
                    was_running = id(gate) in self.inside
                gate.set()
                future = self.gate_futures.get(id(gate))
                if was_running and future is not None:
                    # The outcome is set in the same lock hold that dispatches the next item,
                    # so once it is in, the next stats() read sees that dispatch.
                    future.get(timeout=WAIT)
        elif name == "cancel_id":
            if self.ids:
                before = c.stats().total_cancelled
                answer = c.cancel_operation(self.ids[step[1] % len(self.ids)])
                dropped = c.stats().total_cancelled - before
                assert dropped <= answer  # only a pending item is dropped, once
                self.dropped_by_id += dropped
        elif name == "async_timeout":
            if c.pending_count >= self.config["max_tracked_operations"]:
                # A full backlog: the wait is cancelled and withdrawn (finding 12).
                item = self.new_item("ok", 0)
                with contextlib.suppress(TimeoutError):
                    asyncio.run(asyncio.wait_for(c.enqueue_async(item), 0.001))
                    self.accepted += 1  # space was freed just in time
            core = c._core
            assert core.call(lambda: len(core.space_waiters)) == 0, "a waiter was left"
        else:
            self.apply_window_step(name, step[1])

    def apply_window_step(self, name: str, index: int) -> None:
        c = self.coordinator
        snap = c.get_snapshot()
        if not snap:
            return
        op_id = snap[index % len(snap)].id
        if name == "pin":
            if c.pin(op_id):  # False only if a trim raced us to it
                pinned = [s for s in c.get_snapshot() if s.id == op_id]
                assert pinned and pinned[0].is_pinned, "a pinned operation left the window"
        elif name == "unpin":
            c.unpin(op_id)
        else:
            c.evict(op_id)
            assert op_id not in {s.id for s in c.get_snapshot()}, "evict did not take effect"

    # -- invariants -------------------------------------------------------------------------

    def check(self) -> None:
        c = self.coordinator
        s = c.stats()
        assert s.total_enqueued == (
            s.pending_count
            + s.active_count
            + s.total_completed
            + s.total_failed
            + s.total_cancelled
        ), s
        assert s.total_enqueued == self.accepted
        with self.lock:
            assert s.active_count <= self.ceiling, (s.active_count, self.ceiling)
            # Once active drops, nothing may start above max(limit, active) any more.
            self.ceiling = max(s.max_concurrency, s.active_count)
            assert not self.violations, self.violations
        snap = c.get_snapshot()
        pinned = sum(x.is_pinned for x in snap)
        running = sum(x.completed is None for x in snap)
        assert len(snap) <= self.config["max_tracked_operations"] + pinned + running, snap

    def finish(self, ending: str) -> None:
        c = self.coordinator
        if ending == "complete":
            c.resume()
            c.complete()
        else:
            c.cancel()
        assert c.is_completed
        self.release_all()
        c.drain(WAIT)
        s = c.stats()
        assert (s.pending_count, s.active_count) == (0, 0)
        assert s.is_drained
        assert not self.violations, self.violations
        assert s.total_enqueued == self.accepted
        assert s.total_enqueued == s.total_completed + s.total_failed + s.total_cancelled
        assert s.total_failed == self.entered["fail"]
        assert s.total_completed == self.entered["ok"] + self.entered["gate"]
        assert s.total_cancelled == self.accepted - sum(self.entered.values())
        if ending == "complete":
            assert s.total_cancelled == self.dropped_by_id
        for kind, future in self.futures:
            try:
                future.get(timeout=0)  # already resolved: drain returned
            except (OperationCancelledError, concurrent.futures.CancelledError):
                continue
            except PlannedFailure:
                assert kind == "fail"
            else:
                assert kind != "fail"

    def release_all(self) -> None:
        for gate in self.gates:
            gate.set()


@pytest.mark.parametrize("keyed", [False, True], ids=["work", "keyed"])
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    config=CONFIGS,
    program=st.lists(STEPS, min_size=10, max_size=40),
    ending=st.sampled_from(["complete", "cancel"]),
)
def test_generated_programs_keep_the_invariants(keyed, config, program, ending):
    """Counters add up, limits hold, the window stays bounded and every submit resolves, at every step."""
    clock = LogicalClock()
    with use_clock(clock):
        run = Run(keyed, config, clock=clock)
        try:
            run.check()
            for step in program:
                run.apply(step)
                run.check()
            run.finish(ending)
        finally:
            run.release_all()
            run.coordinator.close(WAIT)
