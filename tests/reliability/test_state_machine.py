"""A stateful property-based model of every coordinator kind (hypothesis `RuleBasedStateMachine`).

Each machine drives one coordinator (work, keyed or result; sync or coroutine bodies,
and in most examples a `RetryPolicy` of 1 to 3 attempts, chosen per example) and one
shared `SignalBus` through random interleavings of intake
(`enqueue`, `try_enqueue`, `submit`, `enqueue_async`, the actor `Enqueue` message), each
with a random `priority` and sometimes a `delay`, control (`pause`/`resume`,
`set_max_concurrency`, `complete`, `cancel`, `drain`, `cancel_operation` by id),
window edits (`pin`/`unpin`/`evict`), bus signals that cancel, defer and resume, bus
clears during a deferral (the cancel signal withdrawn while dispatch runs), async waits
cancelled by `asyncio.wait_for` (`enqueue_async` on a full backlog, `drain_async`),
`close()` called from inside a body — the operations of issue 13's findings — and moves
of the schedule clock (a fake one the machine owns) that make delayed items due.

Bodies never sleep: each item has a behaviour (succeed, fail, fail only its first
attempt, emit a signal, crash its worker actor, block, block and then check for
cancellation, or block and then fail) and blocking bodies wait on a `threading.Event`
the machine owns and sets in the `release` rule. After every rule
the machine waits until the coordinator is *quiescent* (every running operation is a
blocked body, and nothing pending could start), so every check is exact, not "eventually".

Checked after every step (`@invariant`) and inside the bodies themselves:

- counters add up in ONE `stats()` read, and `total_completed`/`total_failed`/
  `active_count` equal what the bodies did;
- retries (SPEC 16): a failed or crashed attempt runs again exactly when the policy
  has attempts left, the coordinator still processes its backlog and nobody asked
  the attempt to cancel; the body counts the runs of each operation id, which never
  exceed the policy's attempts and always equal `op.attempts` and, once it ended,
  `OperationSnapshot.attempts`; whatever the number of runs, each accepted item ends
  exactly once (completed, failed or cancelled), and every crash of an attempt is a
  worker restart;
- a body that starts sees at most the current limit running (counted by the bodies under
  a lock), also just after a lowering, and at most `max_concurrency_per_key` of its key;
- nothing starts while paused, deferred, after `cancel()` or while a cancel signal is
  present; running operations are asked to cancel exactly when they should be;
- items are taken by priority, then enqueue order (per key: enqueue order whatever the
  priority); an item whose delay has not passed never starts;
- nothing that could start is left pending (no lost wake-up, no head-of-line blocking);
- the window holds every running operation (unless evicted) and every pinned one, and
  no more than `max_tracked_operations` otherwise; `pin`/`unpin`/`evict` answer whether
  the operation is in the window; results evaporate with eviction;
- every ended `submit` future is resolved with the right outcome;
- no cancelled async wait leaves a waiter behind in the supervisor.

Teardown releases every body, then completes and drains, cancels and drains, just
closes, or closes from three threads at once (chosen per example; every concurrent
`close()` returns only once the coordinator is closed), checks that nothing is
pending, active or unresolved, and that `close()` left no library thread and no actor
behind.

Budget: `CI_EXAMPLES` examples of up to `CI_STEPS` steps per machine (a short local
run); `EA_STEPS=N` in the environment runs at least N steps per machine (CI sets
10,000: examples = N / steps); with `--slow` on the pytest command line or `EA_SLOW=1`,
`SLOW_EXAMPLES` of `SLOW_STEPS`. `pytest -s` prints how many examples and steps ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pykka
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from ephemeral_actors import (
    CoordinatorClosedError,
    CoordinatorFullError,
    CoordinatorNotCompletedError,
    CoordinatorOptions,
    KeyedWorkCoordinator,
    Operation,
    OperationCancelledError,
    ResultCoordinator,
    RetryPolicy,
    SignalBus,
    SignalCancelledError,
    WorkCoordinator,
    WorkerCrashError,
    current_operation,
)
from ephemeral_actors import messages as m
from ephemeral_actors._coordinators._supervisor import CoordinatorState
from ephemeral_actors.testing import (
    crash_worker,
    library_threads,
    use_clock,
    use_schedule_clock,
)
from tests.conftest import WAIT

SLOW = os.environ.get("EA_SLOW", "") not in ("", "0") or "--slow" in sys.argv
"""Many more examples: `pytest --slow` or `EA_SLOW=1 pytest`."""

CI_EXAMPLES, CI_STEPS = 150, 40
ATTEMPTS = (None, None, 1, 2, 3)
"""`RetryPolicy(attempts=n)` per example (None: no policy); zero backoff, so a retried
item is back in the backlog, at its head, before the failure's turn ends."""
SLOW_EXAMPLES, SLOW_STEPS = 1000, 60
EXAMPLES, STEPS = (SLOW_EXAMPLES, SLOW_STEPS) if SLOW else (CI_EXAMPLES, CI_STEPS)
if os.environ.get("EA_STEPS", "").isdigit() and not SLOW:
    # At least EA_STEPS steps per machine (max_examples x stateful_step_count).
    EXAMPLES = max(EXAMPLES, -(-int(os.environ["EA_STEPS"]) // STEPS))

SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

RUNS: Counter[str] = Counter()
"""Examples and steps run, per machine (printed at the end of the module)."""

KEYS = (0, 1, 2)
PRIORITIES = (0, 0, -1, 1)
DELAYS = (None, None, None, 50.0)
"""Delays in the machine's fake schedule seconds (the `advance` rule moves that clock)."""
CANCEL, DEFER, RESUME, NOTE = "ea.cancel", "ea.defer", "ea.resume", "ea.note"

OK, FAIL, FLAKY, SIGNAL, CRASH, BLOCK, CANCELLABLE, STUBBORN, CLOSER = (
    "ok",
    "fail",
    "flaky",  # fails its first attempt only
    "signal",
    "crash",
    "block",
    "cancellable",
    "stubborn",  # blocks, then fails (every attempt; later ones are already released)
    "closer",  # calls close() from inside its body (only offered by `close_from_body`)
)
BEHAVIOURS = (OK, FAIL, FLAKY, SIGNAL, CRASH, BLOCK, CANCELLABLE, STUBBORN)
BLOCKING = frozenset({BLOCK, CANCELLABLE, STUBBORN})


class Boom(Exception):
    """What a failing body raises."""


@dataclass(frozen=True)
class Item:
    """A work item: only a token; the machine keeps what the body should do."""

    token: int
    key: int


@dataclass(eq=False)
class Record:
    """The machine's knowledge of one item offered to the coordinator."""

    token: int
    key: int
    behaviour: str
    event: threading.Event = field(default_factory=threading.Event)
    accepted: bool = False
    op_id: int | None = None
    future: pykka.Future[Any] | None = None
    entered: bool = False  # its body runs now, or ran its last attempt
    exited: bool = False  # its operation ended after running (the final attempt returned)
    attempts: int = 0  # runs of its body (the machine's count, checked against op.attempts)
    retried: int = 0  # attempts that failed and were re-queued
    dropped: bool = False  # dropped from the backlog by cancel() or cancel_operation()
    by_id: bool = False  # dropped by cancel_operation(): its future is cancelled
    cancel_requested: bool = False  # asked to cancel while running (signal, id, cancel)
    op: Operation | None = None
    stamp: float = 0.0  # the first attempt's start time (take order)
    outcome: str | None = None  # "completed", "failed", "crashed", "cancelled"
    priority: int = 0
    due: float | None = None  # schedule-clock time a delayed item may start at
    accepted_at: float = 0.0  # a record-clock time after the intake call returned

    @property
    def blocking(self) -> bool:
        return self.behaviour in BLOCKING

    @property
    def stuck(self) -> bool:
        """A blocking body that has not been released."""
        return self.blocking and not self.event.is_set()


class FakeScheduleClock:
    """The schedule clock of delays: it moves only in the machine's `advance` rule."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class StrictClock:
    """`time.time()`, but strictly increasing, so start times give the take order."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.last = 0.0

    def __call__(self) -> float:
        with self.lock:
            now = time.time()
            if now <= self.last:
                now = self.last + 1e-6
            self.last = now
            return now


def future_outcome(future: pykka.Future[Any]) -> tuple[str, Any] | None:
    """("ok", value) or ("error", exception) if resolved, else None."""
    try:
        return ("ok", future.get(timeout=0))
    except pykka.Timeout:
        return None
    except BaseException as exc:
        return ("error", exc)


class CoordinatorMachine(RuleBasedStateMachine):
    """The model shared by every coordinator kind; subclasses build the coordinator."""

    kind: ClassVar[str] = "work"
    keyed: ClassVar[bool] = False
    results: ClassVar[bool] = False

    def __init__(self) -> None:
        super().__init__()
        RUNS[f"{self.kind}.examples"] += 1
        self.coord: Any = None
        self.bus: SignalBus | None = None
        self.lock = threading.Lock()
        self.records: dict[int, Record] = {}
        self.tokens = iter(range(1, 1 << 30))
        self.violations: list[str] = []
        self.log: list[str] = []
        self.inside = 0
        self.key_inside: Counter[int] = Counter()
        self.max_attempts: int | None = None  # the RetryPolicy's attempts (None: no policy)
        self.crashes = 0  # attempts that crashed their worker (each is a worker restart)
        # Model state. Flags that *forbid* starts are set after the call returns; flags
        # that *allow* starts before it, so a body starting in between is never misjudged.
        self.allowed = 1
        self.limit = 1
        self.per_key = 1
        self.bound = 1
        self.paused = False
        self.deferring = False
        self.cancel_signal = False
        self.cancel_seen = False  # a cancel signal was present at some point
        self.closed_early = False  # close() was called from inside a body
        self.state = "running"  # "running", "completing", "cancelled"
        self.dropped = 0
        self.forced = False  # an actor Enqueue may exceed the backlog bound
        self.pinned: set[int] = set()
        self.evicted: set[int] = set()
        self.samples = 0
        self.sample_violations: list[str] = []
        self.fair_threshold = 0
        self.teardown_mode = "drain"
        self.threads_before = set(threading.enumerate())
        self.actors_before = len(pykka.ActorRegistry.get_all())
        self.clock = contextlib.ExitStack()
        self.strict = StrictClock()
        self.clock.enter_context(use_clock(self.strict))
        self.schedule_clock = FakeScheduleClock()
        self.clock.enter_context(use_schedule_clock(self.schedule_clock))

    # -- construction ---------------------------------------------------------------------

    @initialize(
        limit=st.integers(1, 3),
        bound=st.integers(1, 8),
        per_key=st.integers(1, 2),
        fair=st.integers(0, 3),
        use_async=st.booleans(),
        on_sample=st.booleans(),
        reap_fast=st.booleans(),
        teardown_mode=st.sampled_from(["drain", "cancel", "close", "concurrent"]),
        attempts=st.sampled_from(ATTEMPTS),
    )
    def build(
        self,
        limit: int,
        bound: int,
        per_key: int,
        fair: int,
        use_async: bool,
        on_sample: bool,
        reap_fast: bool,
        teardown_mode: str,
        attempts: int | None,
    ) -> None:
        self.count_step()
        self.max_attempts = attempts
        self.allowed = self.limit = limit
        self.bound = bound
        self.per_key = per_key if self.keyed else limit
        self.fair_threshold = fair if self.keyed else 0
        self.teardown_mode = teardown_mode
        # Roomy and long-lived, so a cancel signal stays in the window for the whole example.
        self.bus = SignalBus(max_capacity=10_000, max_age=600.0, name=f"model-{self.kind}")
        options = CoordinatorOptions(
            max_concurrency=limit,
            max_concurrency_per_key=per_key,
            enable_dynamic_concurrency=True,
            max_tracked_operations=bound,
            # The model is the window alone: the failure log would keep trimmed
            # failures findable by evict (it is tested in tests/test_failures.py).
            max_tracked_failures=0,
            enable_fair_scheduling=fair > 0,
            fair_scheduling_threshold=max(fair, 1),
            signals=self.bus,
            cancel_on_signals=CANCEL,
            defer_on_signals=DEFER,
            resume_on_signals=RESUME,
            # Deferral ends only by a resume signal within an example (no timer fires).
            defer_check_interval=600.0,
            on_sample=self.on_sample if on_sample else None,
            # A tiny idle timeout makes keys get reaped and re-created under the model.
            key_idle_timeout=0.001 if reap_fast else 60.0,
            name=f"model-{self.kind}",
            retry=None if attempts is None else RetryPolicy(attempts=attempts, backoff=0, jitter=0),
            # Crashes are modelled as worker restarts, never as escalation: with retries
            # one item may crash its worker three times.
            max_restarts=1_000_000,
        )
        body = self.async_body if use_async else self.sync_body
        self.coord = self.make(body, options)

    def make(self, body: Any, options: CoordinatorOptions) -> Any:
        return WorkCoordinator(body, options)

    def count_step(self) -> None:
        RUNS[f"{self.kind}.steps"] += 1
        frame = sys._getframe(1)
        RUNS[f"{self.kind}.rule.{frame.f_code.co_name}"] += 1
        args = {k: v for k, v in frame.f_locals.items() if k not in ("self", "data")}
        self.log.append(f"{frame.f_code.co_name}{args}")

    # -- bodies ---------------------------------------------------------------------------

    def enter(self, item: Item) -> tuple[Record, Operation]:
        rec = self.records[item.token]
        op = current_operation()
        with self.lock:
            if rec.entered:
                self.violations.append(f"item {item.token} ran twice at once")
            if rec.exited:
                self.violations.append(f"item {item.token} ran again after it ended")
            rec.entered = True
            rec.op = op
            rec.attempts += 1
            if rec.attempts > (self.max_attempts or 1):
                self.violations.append(
                    f"item {item.token} ran {rec.attempts} times, policy {self.max_attempts}"
                )
            if op._attempts != rec.attempts:
                self.violations.append(
                    f"item {item.token}: run {rec.attempts} says attempt {op._attempts}"
                )
            if rec.attempts == 1:
                rec.stamp = op._started
            if rec.due is not None and self.schedule_clock.now < rec.due:
                self.violations.append(f"item {item.token} started before it was due")
            if rec.op_id is not None and rec.op_id != op.id:
                self.violations.append(f"item {item.token}: enqueue said {rec.op_id}, ran {op.id}")
            rec.op_id = op.id
            self.inside += 1
            self.key_inside[item.key] += 1
            RUNS[f"{self.kind}.bodies"] += 1
            if self.inside > self.allowed:
                self.violations.append(
                    f"item {item.token} started with {self.inside} running, limit {self.allowed}"
                )
            if self.keyed and self.key_inside[item.key] > self.per_key:
                self.violations.append(
                    f"item {item.token} started with {self.key_inside[item.key]} of key "
                    f"{item.key} running, per-key limit {self.per_key}"
                )
            for flag, why in (
                (self.paused, "paused"),
                (self.deferred_now, "deferred"),
                (self.cancel_signal, "a cancel signal is present"),
                (self.state == "cancelled", "cancelled"),
            ):
                if flag:
                    self.violations.append(f"item {item.token} started while {why}")
        return rec, op

    def leave(self, rec: Record, outcome: str) -> None:
        with self.lock:
            self.inside -= 1
            self.key_inside[rec.key] -= 1
            if outcome == "crashed":
                self.crashes += 1
            if outcome in ("failed", "crashed") and self.will_retry(rec):
                # The coordinator re-queues it: pending again, the same operation.
                rec.entered = False
                rec.retried += 1
                RUNS[f"{self.kind}.retries"] += 1
                assert rec.op_id is not None
                # Its record left the window; the next attempt (or a cancel at dispatch)
                # brings it back, whatever evict() said about this one.
                self.evicted.discard(rec.op_id)
                return
            rec.outcome = outcome
            rec.exited = True

    def will_retry(self, rec: Record) -> bool:
        """SPEC 16: attempts left, the backlog still processed, no cancel request.

        Called by the failing body; every rule that changes these facts runs while
        no body can fail (they are blocked until released, after the rule).
        """
        return (
            self.max_attempts is not None
            and rec.attempts < self.max_attempts
            and self.state != "cancelled"
            and not rec.cancel_requested
        )

    def sync_body(self, item: Item) -> int:
        rec, op = self.enter(item)
        outcome = "failed"
        try:
            if rec.behaviour == FAIL or (rec.behaviour == FLAKY and rec.attempts == 1):
                raise Boom(item.token)
            if rec.behaviour == CRASH:
                outcome = "crashed"
                crash_worker()
            if rec.behaviour == SIGNAL:
                op.signal(NOTE)
            if rec.behaviour == CLOSER:
                self.coord.close()  # returns at once: it would wait for this very body
                rec.event.set()
            if rec.blocking:
                if not rec.event.wait(WAIT):
                    self.violations.append(f"item {item.token} was never released")
                if rec.behaviour == CANCELLABLE and op.cancelled:
                    outcome = "cancelled"
                    op.raise_if_cancelled()
                if rec.behaviour == STUBBORN:
                    raise Boom(item.token)
            outcome = "completed"
            return item.token * 10
        finally:
            self.leave(rec, outcome)

    async def async_body(self, item: Item) -> int:
        rec, op = self.enter(item)
        outcome = "failed"
        try:
            if rec.behaviour == FAIL or (rec.behaviour == FLAKY and rec.attempts == 1):
                raise Boom(item.token)
            if rec.behaviour == CRASH:
                outcome = "crashed"
                crash_worker()
            if rec.behaviour == SIGNAL:
                op.signal(NOTE)
            if rec.behaviour == CLOSER:
                self.coord.close()
                rec.event.set()
            if rec.blocking:
                deadline = time.monotonic() + WAIT
                while not rec.event.is_set():
                    if time.monotonic() > deadline:
                        self.violations.append(f"item {item.token} was never released")
                        break
                    await asyncio.sleep(0.001)
                if rec.behaviour == CANCELLABLE and op.cancelled:
                    outcome = "cancelled"
                    op.raise_if_cancelled()
                if rec.behaviour == STUBBORN:
                    raise Boom(item.token)
            outcome = "completed"
            return item.token * 10
        finally:
            self.leave(rec, outcome)

    def on_sample(self, window: tuple[Any, ...]) -> None:
        self.samples += 1
        pinned = sum(1 for s in window if s.is_pinned)
        running = sum(1 for s in window if s.completed is None)
        if len(window) > max(self.bound, pinned + running):
            self.sample_violations.append(f"on_sample saw a window of {len(window)}")

    # -- quiescence -----------------------------------------------------------------------

    def new_record(
        self, key: int, behaviour: str, priority: int = 0, delay: float | None = None
    ) -> tuple[Record, Item]:
        token = next(self.tokens)
        rec = Record(token, key, behaviour, priority=priority)
        if delay is not None:
            rec.due = self.schedule_clock.now + delay
        self.records[token] = rec
        self.log.append(f"  item {token}: key {key}, {behaviour}, priority {priority}, {delay=}")
        return rec, Item(token, key)

    def not_due(self) -> list[Record]:
        """Pending items still waiting out their delay."""
        now = self.schedule_clock.now
        return [
            r
            for r in self.records.values()
            if r.accepted and not r.entered and not r.dropped and r.due is not None and r.due > now
        ]

    def key_pending(self, key: int) -> int:
        return self.coord.get_pending_count_for_key(key) if self.keyed else 0

    def could_start(self, s: Any) -> bool:
        """Whether some pending item may start now (then we are not quiescent)."""
        waiting = self.not_due()
        if s.pending_count == len(waiting) or self.paused or self.deferred_now:
            return False
        if s.active_count >= self.limit:
            return False
        if not self.keyed:
            return True
        later = Counter(r.key for r in waiting)
        return any(
            self.key_pending(k) > later[k] and self.key_inside[k] < self.per_key for k in KEYS
        )

    def settle(self) -> Any:
        """Wait until every running operation is a blocked body and nothing can start.

        The per-key reads are separate calls, so the decision is only trusted when
        `stats()` and the bodies' own count read the same before and after it.
        """
        deadline = time.monotonic() + WAIT
        while True:
            with self.lock:
                moving = [
                    r.token
                    for r in self.records.values()
                    if r.entered and not r.exited and not r.stuck
                ]
                inside = self.inside
            s = self.coord.stats()
            if not moving and s.active_count == inside and not self.could_start(s):
                with self.lock:
                    same = self.inside == inside
                if same and self.coord.stats() == s:
                    return s
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"coordinator never settled: {s}, bodies inside={inside}, finishing={moving}, "
                    f"paused={self.paused} deferring={self.deferring} limit={self.limit} "
                    f"per-key pending={[self.key_pending(k) for k in KEYS]} "
                    f"per-key running={dict(self.key_inside)}"
                )
            time.sleep(0.0002)

    @property
    def deferred_now(self) -> bool:
        """A deferral holds new work, unless a cancel signal is present (SPEC 4: the
        cancel check comes before the defer wait, so such items are cancelled at once)."""
        return self.deferring and not self.cancel_signal

    def running_records(self) -> list[Record]:
        return [r for r in self.records.values() if r.entered and not r.exited]

    def check_cancel_requested(self) -> None:
        for rec in self.running_records():
            assert rec.op is not None
            assert rec.op.cancelled, f"running item {rec.token} was not asked to cancel"

    # -- intake rules ---------------------------------------------------------------------

    def offer(
        self, key: int, behaviour: str, how: str, priority: int = 0, delay: float | None = None
    ) -> None:
        self.count_step()
        s = self.settle()
        full = s.pending_count >= self.bound
        rec, item = self.new_record(key, behaviour, priority, delay)
        closed = self.state != "running"
        if how == "try":
            fair = self.fair_threshold > 0 and self.key_pending(key) >= self.fair_threshold
            rec.accepted = accepted = self.coord.try_enqueue(item, priority=priority, delay=delay)
            rec.accepted_at = self.strict()
            assert accepted == (not closed and not full and not fair), (closed, full, fair)
        elif closed:
            # After close() the supervisor actor may have stopped: Pykka says so itself.
            errors = (CoordinatorClosedError, pykka.ActorDeadError)
            with pytest.raises(errors if self.closed_early else CoordinatorClosedError):
                self.call_intake(how, item, priority, delay)
        elif full and how != "actor":
            if how == "submit":
                return  # submit waits for space; nothing here would free it
            with pytest.raises(CoordinatorFullError):
                self.coord.enqueue(item, timeout=0.001, priority=priority, delay=delay)
        else:
            result = self.call_intake(how, item, priority, delay)
            rec.accepted_at = self.strict()
            rec.accepted = True
            if how == "submit":
                rec.future = result
            else:
                assert isinstance(result, int)
                assert 0 < result < 1 << 63
                rec.op_id = result
            self.forced |= how == "actor"
        self.settle()

    def call_intake(self, how: str, item: Item, priority: int, delay: float | None) -> Any:
        if how == "enqueue":
            return self.coord.enqueue(item, timeout=WAIT, priority=priority, delay=delay)
        if how == "submit":
            return self.coord.submit(item, priority=priority, delay=delay)
        if how == "async":
            intake = self.coord.enqueue_async(item, priority=priority, delay=delay)
            return asyncio.run(asyncio.wait_for(intake, WAIT))
        assert how == "actor"
        return self.coord.actor_ref.ask(m.Enqueue(item, priority, delay), timeout=WAIT)

    @rule(
        key=st.sampled_from(KEYS),
        behaviour=st.sampled_from(BEHAVIOURS),
        how=st.sampled_from(["enqueue", "try", "submit", "async", "actor"]),
        priority=st.sampled_from(PRIORITIES),
        delay=st.sampled_from(DELAYS),
    )
    def offer_one(
        self, key: int, behaviour: str, how: str, priority: int, delay: float | None
    ) -> None:
        self.offer(key, behaviour, how, priority, delay)

    @rule(
        items=st.lists(
            st.tuples(
                st.sampled_from(KEYS),
                st.sampled_from(BEHAVIOURS),
                st.sampled_from(PRIORITIES),
                st.sampled_from(DELAYS),
            ),
            max_size=6,
        ),
        how=st.sampled_from(["enqueue", "try", "submit"]),
    )
    def offer_many(self, items: list[tuple[int, str, int, float | None]], how: str) -> None:
        for key, behaviour, priority, delay in items:
            self.offer(key, behaviour, how, priority, delay)

    @rule()
    def advance(self) -> None:
        """Move the schedule clock: delayed items accepted before now become due."""
        self.count_step()
        self.settle()
        self.schedule_clock.now += DELAYS[-1] or 0.0
        if not self.paused:
            self.coord.resume()  # a dispatch at the new time (resume() itself is a no-op)
        self.settle()

    # -- releasing bodies -------------------------------------------------------------------

    @rule(data=st.data(), everything=st.booleans())
    def release(self, data: st.DataObject, everything: bool) -> None:
        self.count_step()
        waiting = [r for r in self.records.values() if r.accepted and r.stuck]
        if not waiting:
            return
        if everything:
            for rec in waiting:
                rec.event.set()
        else:
            # Running ones first: releasing those is what frees slots.
            running = [r for r in waiting if r.entered]
            rec = data.draw(st.sampled_from(running or waiting), label="release")
            rec.event.set()
            self.log.append(f"  released {rec.token}")
        self.settle()

    # -- control rules ----------------------------------------------------------------------

    @rule()
    def pause(self) -> None:
        self.count_step()
        self.coord.pause()
        self.paused = True
        assert self.coord.is_paused
        self.settle()

    @rule()
    def resume(self) -> None:
        self.count_step()
        self.paused = False
        self.coord.resume()
        assert not self.coord.is_paused
        self.settle()

    @rule(limit=st.integers(1, 4))
    def set_max_concurrency(self, limit: int) -> None:
        self.count_step()
        with self.lock:
            if limit > self.allowed:
                self.allowed = limit
            self.limit = limit
        self.coord.set_max_concurrency(limit)
        with self.lock:
            self.allowed = limit
        assert self.coord.max_concurrency == limit
        self.settle()

    @rule(signal=st.sampled_from([DEFER, RESUME, NOTE]))
    def emit(self, signal: str) -> None:
        self.count_step()
        self.emit_signal(signal)

    @precondition(lambda self: self.offered_enough())
    @rule()
    def emit_cancel(self) -> None:
        # A cancel signal stays present for the rest of the example (bus max_age is
        # long), so it is kept for later in an example, like complete() and cancel().
        self.count_step()
        self.emit_signal(CANCEL)

    def emit_signal(self, signal: str) -> None:
        assert self.bus is not None
        if signal == RESUME:
            self.deferring = False
        self.bus.emit(signal)
        if signal == CANCEL:
            self.cancel_signal = self.cancel_seen = True
            self.check_cancel_requested()
            for rec in self.running_records():
                rec.cancel_requested = True
        elif signal == DEFER:
            self.deferring = True
        self.settle()

    @rule(what=st.sampled_from(["cancel", "defer", "all"]))
    def clear_bus(self, what: str) -> None:
        """Withdraw signals from the bus window, during a deferral or not (finding 15).

        A cleared cancel signal stops cancelling; a cleared defer signal still defers
        until the re-check (600 s here) or a resume, so the deferral goes on.
        """
        self.count_step()
        assert self.bus is not None
        if what == "all":
            self.bus.clear()
        else:
            self.bus.clear_pattern(CANCEL if what == "cancel" else DEFER)
        if what != "defer":
            self.cancel_signal = False
        self.settle()

    @rule(data=st.data())
    def cancel_by_id(self, data: st.DataObject) -> None:
        """`cancel_operation(op_id)`: drops a pending item, asks a running one to cancel."""
        self.count_step()
        self.settle()
        candidates = [r for r in self.records.values() if r.accepted and self.id_of(r)]
        if not candidates:
            return
        rec = data.draw(st.sampled_from(candidates), label="cancel_by_id")
        op_id = self.id_of(rec)
        assert op_id is not None
        running = rec.entered and not rec.exited
        pending = not rec.entered and not rec.dropped
        if running:
            rec.cancel_requested = True  # before the call: the body may look at once
        answer = self.coord.cancel_operation(op_id)
        self.log.append(f"  cancel_operation({rec.token}) -> {answer}")
        if running:
            assert answer
        elif rec.exited or rec.dropped:
            assert not answer
        elif pending and not self.cancel_seen:
            assert answer  # surely still pending: nothing else ends an unstarted item
        if answer and not running:
            rec.dropped = rec.by_id = True
            self.dropped += 1
        self.settle()

    def id_of(self, rec: Record) -> int | None:
        if rec.op_id is not None:
            return rec.op_id
        return getattr(rec.future, "operation_id", None)

    @rule(kind=st.sampled_from(["enqueue", "drain"]))
    def cancel_async_wait(self, kind: str) -> None:
        """An async wait cancelled by `asyncio.wait_for` leaves no waiter (finding 12)."""
        self.count_step()
        s = self.settle()
        if kind == "enqueue":
            if self.state != "running" or s.pending_count < self.bound:
                return  # it would not wait
            rec, item = self.new_record(0, OK)
            with pytest.raises(TimeoutError):
                asyncio.run(asyncio.wait_for(self.coord.enqueue_async(item), 0.001))
        elif self.state != "running":
            with contextlib.suppress(TimeoutError):
                asyncio.run(asyncio.wait_for(self.coord.drain_async(), 0.001))
        self.settle()

    @precondition(lambda self: self.offered_enough() and self.state == "running")
    @rule()
    def close_from_body(self) -> None:
        """A body calls close(): it returns at once, whatever else runs (findings 1, 8)."""
        self.count_step()
        s = self.settle()
        if self.paused or self.deferring or self.cancel_signal or s.pending_count:
            return
        if s.active_count >= self.limit:
            return
        free = [k for k in KEYS if self.key_inside[k] < self.per_key]
        if self.keyed and not free:
            return
        rec, item = self.new_record(free[0] if self.keyed else 0, CLOSER)
        rec.op_id = self.coord.enqueue(item, timeout=WAIT)
        rec.accepted = True
        # The order invariant compares acceptance with starts: without this stamp the
        # record would look accepted at time 0, before everything that started.
        rec.accepted_at = self.strict()
        assert rec.event.wait(WAIT), "close() inside a body did not return"
        self.closed_early = True
        self.state = "cancelled"
        for other in self.running_records():
            other.cancel_requested = True
        self.check_cancel_requested()
        self.settle()

    def offered_enough(self) -> bool:
        """Close intake only after some work was accepted, so examples are not wasted."""
        return sum(r.accepted for r in self.records.values()) >= 6

    @precondition(lambda self: self.offered_enough())
    @rule()
    def complete(self) -> None:
        self.count_step()
        self.coord.complete()
        if self.state == "running":
            self.state = "completing"
        assert self.coord.is_completed
        self.settle()

    @precondition(lambda self: self.offered_enough())
    @rule()
    def cancel(self) -> None:
        self.count_step()
        s = self.settle()
        self.coord.cancel()
        if self.state != "cancelled":
            self.dropped += s.pending_count
            for rec in self.records.values():
                if rec.accepted and not rec.entered:
                    rec.dropped = True
        self.state = "cancelled"
        self.check_cancel_requested()
        after = self.settle()
        assert after.pending_count == 0
        assert after.total_cancelled >= s.total_cancelled + s.pending_count

    @rule()
    def drain(self) -> None:
        self.count_step()
        s = self.settle()
        if self.state == "running":
            with pytest.raises(CoordinatorNotCompletedError):
                self.coord.drain(WAIT)
            return
        if self.running_records():
            with pytest.raises(TimeoutError):
                self.coord.drain(0.001)
            return
        if self.surely_drains(s):
            self.coord.drain(WAIT)
            after = self.settle()
            assert after.is_drained
            assert after.pending_count == after.active_count == 0

    def surely_drains(self, s: Any) -> bool:
        if s.pending_count == 0:
            return True
        if self.paused or self.deferred_now or self.not_due():
            return False
        pending = [
            r for r in self.records.values() if r.accepted and not r.entered and not r.dropped
        ]
        return self.cancel_signal or not any(r.stuck for r in pending)

    # -- window rules -----------------------------------------------------------------------

    def pick_id(self, data: st.DataObject) -> int:
        known = sorted({r.op_id for r in self.records.values() if r.op_id is not None})
        return data.draw(st.sampled_from([*known, 12345]), label="op_id")

    @rule(data=st.data(), action=st.sampled_from(["pin", "unpin", "evict"]))
    def edit_window(self, data: st.DataObject, action: str) -> None:
        self.count_step()
        op_id = self.pick_id(data)
        getattr(self, action)(op_id)

    def pin(self, op_id: int) -> None:
        self.settle()
        in_window = op_id in {s.id for s in self.coord.get_snapshot()}
        assert self.coord.pin(op_id) == in_window
        if in_window:
            self.pinned.add(op_id)
            (snap,) = [s for s in self.coord.get_snapshot() if s.id == op_id]
            assert snap.is_pinned

    def unpin(self, op_id: int) -> None:
        self.settle()
        in_window = op_id in {s.id for s in self.coord.get_snapshot()}
        assert self.coord.unpin(op_id) == in_window
        self.pinned.discard(op_id)

    def evict(self, op_id: int) -> None:
        before = self.settle()
        in_window = op_id in {s.id for s in self.coord.get_snapshot()}
        assert self.coord.evict(op_id) == in_window
        assert op_id not in {s.id for s in self.coord.get_snapshot()}
        after = self.coord.stats()
        for name in ("total_enqueued", "total_completed", "total_failed", "total_cancelled"):
            assert getattr(after, name) == getattr(before, name), name
        if in_window:
            self.evicted.add(op_id)
            self.pinned.discard(op_id)

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def bodies_saw_no_violation(self) -> None:
        assert not self.violations, self.violations
        assert not self.sample_violations, self.sample_violations

    @invariant()
    def counters_add_up(self) -> None:
        s = self.coord.stats()
        assert s.total_enqueued == (
            s.pending_count
            + s.active_count
            + s.total_completed
            + s.total_failed
            + s.total_cancelled
        ), s
        recs = [r for r in self.records.values() if r.accepted]
        assert s.total_enqueued == len(recs)
        outcomes = Counter(r.outcome for r in recs if r.exited)
        why = self.explain(s)
        assert s.total_completed == outcomes["completed"], why
        assert s.total_failed == outcomes["failed"] + outcomes["crashed"], why
        assert s.active_count == len(self.running_records()), why
        assert s.worker_restarts == self.crashes, why  # every crashed attempt, retried or not
        never_started = s.total_cancelled - outcomes["cancelled"]
        assert never_started >= self.dropped, s
        if not self.cancel_seen:
            # Only cancel() drops items that never started.
            assert never_started == self.dropped, s
            assert s.pending_count == sum(1 for r in recs if not r.entered and not r.dropped)
        if not self.forced:
            # A retry goes back to the backlog even when it is full: it was accepted
            # already. Fresh items are only admitted below the bound.
            retrying = sum(
                1 for r in recs if r.retried and not r.entered and not r.exited and not r.dropped
            )
            assert s.pending_count <= self.bound + retrying, s
        assert s.max_concurrency == self.limit
        assert s.is_paused == self.paused
        assert s.is_completed == (self.state != "running")
        assert s.is_drained == (
            self.state != "running" and s.pending_count == 0 and s.active_count == 0
        )
        if not self.closed_early:
            # Once closed, the coordinator no longer listens to the bus: signals emitted
            # around the close may or may not still reach it.
            assert s.is_deferred == self.deferring

    def explain(self, s: Any) -> str:
        recs = "\n".join(
            f"  {r.token} key={r.key} {r.behaviour} accepted={r.accepted} entered={r.entered} "
            f"exited={r.exited} attempts={r.attempts} outcome={r.outcome} "
            f"released={r.event.is_set()}"
            for r in self.records.values()
        )
        return f"{s}\nsteps:\n  " + "\n  ".join(self.log) + f"\nitems:\n{recs}"

    @invariant()
    def cancellation_requested_exactly_when_due(self) -> None:
        due = self.cancel_signal or self.state == "cancelled"
        for rec in self.running_records():
            assert rec.op is not None
            assert rec.op.cancelled == (due or rec.cancel_requested), (rec.token, due)

    @invariant()
    def no_waiter_is_left_behind(self) -> None:
        core = self.coord._core
        left = core.call(lambda: (len(core.space_waiters), len(core.waiters)))
        if self.closed_early and not core.closed_event.is_set():
            # The close() a body started waits, on a thread of its own, for the
            # running bodies: that one waiter is legitimate.
            assert left[0] == 0 and left[1] <= 1, left
        else:
            assert left == (0, 0), left

    @invariant()
    def items_start_in_order(self) -> None:
        """Per key: enqueue order. Unkeyed: an item waiting when another started ranks after it.

        Delayed items join the backlog when due, at a moment the model cannot see, so
        they are left out of the order checks (the bodies check they never start early).
        """
        # By first start: a retry goes back to the head of the backlog (it was
        # accepted before everything waiting there), whatever its priority.
        started = sorted(
            (r for r in self.records.values() if r.attempts and r.due is None),
            key=lambda r: r.stamp,
        )
        if self.keyed:
            last: dict[int, int] = {}
            for rec in started:
                assert rec.token > last.get(rec.key, 0), f"item {rec.token} overtook its key"
                last[rec.key] = rec.token
            return
        for i, first in enumerate(started):
            for later in started[i + 1 :]:
                if later.accepted_at < first.stamp:  # it was waiting when `first` started
                    assert (first.priority, first.token) < (later.priority, later.token), (
                        f"item {first.token} (priority {first.priority}) started before "
                        f"item {later.token} (priority {later.priority})"
                    )

    @invariant()
    def window_is_bounded_and_complete(self) -> None:
        snaps = self.coord.get_snapshot()
        ids = [s.id for s in snaps]
        assert len(ids) == len(set(ids))
        pinned = sum(1 for s in snaps if s.is_pinned)
        running = {s.id for s in snaps if s.completed is None}
        assert len(snaps) <= max(self.bound, pinned + len(running)), (len(snaps), pinned)
        expected_running = {r.op_id for r in self.running_records()} - self.evicted
        assert running == expected_running
        by_id = {s.id: s for s in snaps}
        # A retried item is pending between attempts, and pending items have no record
        # in the window: a pinned one comes back (still pinned) with its next attempt.
        between = {
            r.op_id for r in self.records.values() if r.retried and not r.entered and not r.exited
        }
        for op_id in self.pinned - between:
            assert op_id in by_id, f"pinned operation {op_id} left the window"
            assert by_id[op_id].is_pinned
        for op_id in self.evicted:
            assert op_id not in by_id
        assert self.coord.stats().tracked_operations == len(snaps)
        tokens = {r.op_id: r for r in self.records.values() if r.op_id is not None}
        for snap in snaps:
            rec = tokens.get(snap.id)
            if rec is not None and rec.entered:
                # One record spans the attempts; it counts the runs of the body.
                assert snap.attempts == rec.attempts, (rec.token, snap.attempts, rec.attempts)
            if rec is not None and rec.exited:
                assert snap.is_faulted == (rec.outcome != "completed")
                if rec.outcome == "failed":
                    assert isinstance(snap.error, Boom)
                elif rec.outcome == "crashed":
                    assert isinstance(snap.error, WorkerCrashError)
                elif rec.outcome == "cancelled":
                    assert isinstance(snap.error, OperationCancelledError)
            elif (rec is None or not rec.entered) and snap.completed is not None:
                # Ended without running (this attempt): cancelled at dispatch by the signal.
                assert isinstance(snap.error, SignalCancelledError)
                if rec is not None:
                    assert snap.attempts == max(rec.attempts, 1), (rec.token, snap.attempts)
            if self.results and rec is not None and rec.outcome == "completed":
                assert snap.has_result and snap.result == rec.token * 10

    @invariant()
    def ended_submissions_are_resolved(self) -> None:
        for rec in self.records.values():
            if rec.future is None:
                continue
            outcome = future_outcome(rec.future)
            if rec.by_id:
                assert rec.future.cancelled(), f"item {rec.token} cancelled by id"
            elif rec.exited:
                assert outcome is not None, f"submit future of item {rec.token} unresolved"
                self.check_outcome(rec, outcome)
            elif rec.dropped:
                assert outcome is not None
                assert outcome[0] == "error"
                assert isinstance(outcome[1], OperationCancelledError)
            elif not rec.entered and outcome is not None:
                assert outcome[0] == "error"
                assert isinstance(outcome[1], SignalCancelledError)

    def check_outcome(self, rec: Record, outcome: tuple[str, Any]) -> None:
        kind, value = outcome
        if rec.outcome == "completed":
            assert kind == "ok"
            assert value == (rec.token * 10 if self.results else None)
        else:
            assert kind == "error"
            expected = {
                "failed": Boom,
                "crashed": WorkerCrashError,
                "cancelled": OperationCancelledError,
            }[rec.outcome or ""]
            assert isinstance(value, expected), (rec.outcome, value)

    # -- teardown ---------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if self.coord is not None and not self.violations:
                self.finish()
        finally:
            for rec in self.records.values():
                rec.event.set()
            if self.coord is not None and self.teardown_mode not in ("close", "concurrent"):
                self.coord.close(WAIT)
            if self.bus is not None:
                self.bus.close()
            self.clock.close()
        self.tally()
        self.check_nothing_left()

    def finish(self) -> None:
        """End the coordinator the chosen way, release everything, check the final state.

        "drain": release, resume, complete, drain. "cancel": cancel with bodies still
        blocked, then release and drain. "close": close() with bodies still blocked; a
        helper releases them once close() has cancelled (close waits for running bodies).
        """
        if self.teardown_mode in ("close", "concurrent"):
            mode, self.teardown_mode = self.teardown_mode, "closing"  # set again once called
            s = self.settle()
            self.dropped += s.pending_count
            for rec in self.records.values():
                if rec.accepted and not rec.entered:
                    rec.dropped = True
            self.state = "cancelled"
            releaser = threading.Thread(target=self.release_after_cancel)
            releaser.start()
            self.teardown_mode = mode
            if mode == "close":
                self.coord.close(WAIT)
            else:
                self.close_concurrently()
            releaser.join(WAIT)
        else:
            if self.teardown_mode == "cancel":
                self.cancel()
            for rec in self.records.values():
                rec.event.set()
            self.paused = False
            self.schedule_clock.now += 1_000.0  # every delayed item is due
            self.coord.resume()
            if self.deferring:
                self.deferring = False
                assert self.bus is not None
                self.bus.emit(RESUME)
            self.coord.complete()
            if self.state == "running":
                self.state = "completing"
            self.coord.drain(WAIT)
        s = self.coord.stats()
        assert s.pending_count == s.active_count == 0, s
        assert s.is_drained
        self.counters_add_up()
        self.bodies_saw_no_violation()
        self.ended_submissions_are_resolved()
        for rec in self.records.values():
            if rec.future is not None:
                assert future_outcome(rec.future) is not None, f"item {rec.token} unresolved"
        sampled_all = self.teardown_mode not in ("close", "concurrent") and not self.closed_early
        if self.coord.options.on_sample is not None and sampled_all:
            # drain() returns after on_sample has returned for every operation that
            # ended; items dropped by cancel() never started, so they are not sampled.
            ended = s.total_completed + s.total_failed + s.total_cancelled - self.dropped
            assert self.samples == ended, (self.samples, ended)

    def close_concurrently(self) -> None:
        """Three close() calls at once: each returns only once the coordinator is closed."""
        core = self.coord._core
        closed_on_return: list[bool] = []

        def close() -> None:
            self.coord.close(WAIT)
            closed_on_return.append(core.closed_event.is_set())

        others = [threading.Thread(target=close) for _ in range(2)]
        for thread in others:
            thread.start()
        close()
        for thread in others:
            thread.join(WAIT)
        assert closed_on_return == [True, True, True], closed_on_return

    def release_after_cancel(self) -> None:
        deadline = time.monotonic() + WAIT
        # is_completed is already True after complete(); wait for close()'s cancel().
        cancelled = (CoordinatorState.CANCELLED, CoordinatorState.CLOSED)
        while self.coord._core.state not in cancelled and time.monotonic() < deadline:
            time.sleep(0.0005)
        for rec in self.records.values():
            rec.event.set()

    def tally(self) -> None:
        for rec in self.records.values():
            RUNS[f"{self.kind}.offered"] += 1
            RUNS[f"{self.kind}.accepted"] += rec.accepted

    def check_nothing_left(self) -> None:
        leftover = [t for t in library_threads() if t not in self.threads_before]
        for thread in leftover:
            thread.join(WAIT)
        alive = [t.name for t in leftover if t.is_alive()]
        assert not alive, f"threads outlived close(): {alive}"
        assert len(pykka.ActorRegistry.get_all()) == self.actors_before


class KeyedMachine(CoordinatorMachine):
    """The model for `KeyedWorkCoordinator`: per-key order and limits, fairness, reaping."""

    kind = "keyed"
    keyed = True

    def make(self, body: Any, options: CoordinatorOptions) -> Any:
        return KeyedWorkCoordinator(lambda item: item.key, body, options)

    @invariant()
    def per_key_counts_add_up(self) -> None:
        s = self.coord.stats()
        assert sum(self.coord.get_pending_count_for_key(k) for k in KEYS) == s.pending_count
        for key in KEYS:
            for snap in self.coord.get_snapshot_for_key(key):
                assert snap.key == str(key)


class ResultMachine(CoordinatorMachine):
    """The model for `ResultCoordinator`: results kept, and gone with eviction."""

    kind = "result"
    results = True

    def make(self, body: Any, options: CoordinatorOptions) -> Any:
        return ResultCoordinator(body, options)

    @invariant()
    def results_match_the_window(self) -> None:
        expected = sorted(
            r.token * 10
            for r in self.records.values()
            if r.outcome == "completed" and r.op_id not in self.evicted
        )
        results = self.coord.get_results()
        assert set(results) <= set(expected)
        assert len(results) == len(set(results))
        assert all(not hasattr(s, "result") for s in self.coord.get_base_snapshot())


@pytest.fixture(scope="module", autouse=True)
def _report_steps() -> Iterator[None]:
    """Print how much the machines ran (visible with `pytest -s`)."""
    yield
    kinds = sorted({name.split(".")[0] for name in RUNS})
    parts = [
        f"{k}: {RUNS[k + '.examples']} examples, {RUNS[k + '.steps']} steps, "
        f"{RUNS[k + '.accepted']}/{RUNS[k + '.offered']} items accepted, "
        f"{RUNS[k + '.bodies']} bodies run, {RUNS[k + '.retries']} retried"
        for k in kinds
    ]
    total = sum(v for name, v in RUNS.items() if name.endswith(".steps"))
    budget = "slow" if SLOW else "CI"
    print(f"\n[state machines, {budget} budget] " + "; ".join(parts) + f"; total {total} steps")


LONG = pytest.mark.timeout(3600 if SLOW else 120)


@LONG
def test_work_coordinator_model() -> None:
    """WorkCoordinator keeps every invariant under random interleavings of its API."""
    run_state_machine_as_test(CoordinatorMachine, settings=SETTINGS)


@LONG
def test_keyed_coordinator_model() -> None:
    """KeyedWorkCoordinator keeps per-key order, per-key limits and every other invariant."""
    run_state_machine_as_test(KeyedMachine, settings=SETTINGS)


@LONG
def test_result_coordinator_model() -> None:
    """ResultCoordinator keeps results consistent with the window and every other invariant."""
    run_state_machine_as_test(ResultMachine, settings=SETTINGS)
