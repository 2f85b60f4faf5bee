"""PoolActor behaves like pykka.ThreadingActor, and Pykka's internals are as we rely on."""

from __future__ import annotations

import importlib.metadata
import inspect
import threading
import time
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from ephemeral_actors._dispatch import DISPATCHER, PoolActor, SharedDispatcher
from tests.conftest import WAIT
from tests.isolated import run_isolated


@pytest.fixture(autouse=True)
def _dispatcher() -> Iterator[None]:
    DISPATCHER.acquire()
    yield
    for thread in DISPATCHER.release():
        thread.join(WAIT)


class Recorder:
    """Mixin: records messages in order and notes overlapping handlers."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[Any] = []
        self.busy = False
        self.overlaps = 0
        self.stopped = threading.Event()
        self.failed: list[BaseException | None] = []

    def on_receive(self, message: Any) -> Any:
        if self.busy:
            self.overlaps += 1
        self.busy = True
        try:
            if message == "boom":
                raise ValueError("boom")
            if message == "state":
                return (list(self.seen), self.overlaps)
            self.seen.append(message)
            return message
        finally:
            self.busy = False

    def on_stop(self) -> None:
        self.stopped.set()

    def on_failure(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.failed.append(exc)
        self.stopped.set()


class PoolRecorder(Recorder, PoolActor):
    pass


class ThreadRecorder(Recorder, pykka.ThreadingActor):
    use_daemon_thread = True


RUNTIMES = [pytest.param(PoolRecorder, id="pool"), pytest.param(ThreadRecorder, id="threading")]


@pytest.fixture(params=RUNTIMES)
def actor_class(request: pytest.FixtureRequest) -> type[Recorder]:
    return request.param  # type: ignore[no-any-return]


def test_messages_are_handled_in_order_one_at_a_time(actor_class):
    """Per-actor FIFO and no overlapping handlers, with many senders."""
    refs = [actor_class.start() for _ in range(20)]
    barrier = threading.Barrier(4)

    def sender(n: int) -> None:
        barrier.wait(WAIT)
        for i in range(200):
            for ref in refs:
                ref.tell((n, i))

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    for ref in refs:
        seen, overlaps = ref.ask("state", timeout=WAIT)
        assert overlaps == 0
        for n in range(4):
            assert [i for (m, i) in seen if m == n] == list(range(200))
        ref.stop(timeout=WAIT)


def test_ask_failure_goes_to_the_asker_and_actor_lives(actor_class):
    """An exception from an ask handler is raised to the asker; the actor keeps running."""
    ref = actor_class.start()
    with pytest.raises(ValueError, match="boom"):
        ref.ask("boom", timeout=WAIT)
    assert ref.ask("still here", timeout=WAIT) == "still here"
    assert ref.stop(timeout=WAIT) is True


def test_tell_failure_stops_the_actor_and_calls_on_failure(actor_class, caplog):
    """An exception from a tell handler stops the actor and calls on_failure."""
    ref = actor_class.start()
    actor = ref._actor_weakref()
    assert actor is not None
    ref.tell("boom")
    assert actor.stopped.wait(WAIT)
    assert isinstance(actor.failed[0], ValueError)
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("late")
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("late", timeout=WAIT)


def test_stop_is_a_poison_pill(actor_class):
    """stop() lets earlier messages finish, calls on_stop, then refuses mail."""
    ref = actor_class.start()
    actor = ref._actor_weakref()
    assert actor is not None
    for i in range(50):
        ref.tell(i)
    assert ref.stop(timeout=WAIT) is True
    assert actor.seen == list(range(50))
    assert actor.stopped.is_set()
    assert ref.is_alive() is False
    assert ref.stop(timeout=WAIT) is False


def test_proxies_work(actor_class):
    """Pykka proxies call methods on the actor through its mailbox."""

    class WithMethod(actor_class):  # type: ignore[misc, valid-type]
        def double(self, x: int) -> int:
            return 2 * x

    ref = WithMethod.start()
    assert ref.proxy().double(21).get(timeout=WAIT) == 42
    ref.stop(timeout=WAIT)


def test_pool_actors_use_no_thread_each():
    """Thousands of pool actors run on the dispatcher's few threads."""
    before = threading.active_count()
    actors = [PoolRecorder.spawn() for _ in range(2000)]
    futures = [a.actor_ref.ask("hi", block=False) for a in actors]
    assert [f.get(timeout=WAIT) for f in futures] == ["hi"] * 2000
    assert threading.active_count() <= before
    # A reply is set inside the turn that handles the ask, so the dispatcher may still
    # be ending that turn when `get` returns: stop_if_idle then (rightly) says busy.
    deadline = time.monotonic() + WAIT
    for a in actors:
        while not a.stop_if_idle():
            assert time.monotonic() < deadline, f"{a!r} never became idle"
            time.sleep(0)  # yield the GIL to the dispatcher ending the turn
    assert all(a.stopped.is_set() for a in actors)


def test_spawned_pool_actors_are_not_registered():
    """spawn() keeps per-key children out of pykka's global registry."""
    actor = PoolRecorder.spawn()
    assert actor.actor_ref not in pykka.ActorRegistry.get_all()
    ref = PoolRecorder.start()
    assert ref in pykka.ActorRegistry.get_all()
    ref.stop(timeout=WAIT)
    actor.actor_ref.stop(timeout=WAIT)


def test_stop_if_idle_refuses_an_actor_with_mail():
    """A busy pool actor is not stopped behind its own back."""
    gate = threading.Event()

    class Slow(PoolActor):
        def on_receive(self, message: Any) -> Any:
            assert gate.wait(WAIT)

    actor = Slow.spawn()
    actor.actor_ref.tell("work")
    assert actor.stop_if_idle() is False
    gate.set()
    assert actor.actor_ref.stop(timeout=WAIT) is True


def test_timers_run_on_the_dispatcher():
    """call_later runs its callback on a dispatcher thread; a cancelled timer does not run."""
    ran = threading.Event()
    names: list[str] = []
    skipped = threading.Event()

    def callback() -> None:
        names.append(threading.current_thread().name)
        ran.set()

    timer = DISPATCHER.call_later(0.01, skipped.set)
    timer.cancel()
    DISPATCHER.call_later(0.02, callback)
    assert ran.wait(WAIT)
    assert names[0].startswith("ephemeral-actors-shared-dispatch")
    assert not skipped.is_set()


def test_cancelled_timers_do_not_pile_up_until_their_deadline():
    """10,000 hour-long timers cancelled: the heap stays small, and live timers still run."""
    dispatcher = SharedDispatcher(threads=1, name="ephemeral-actors-test-dispatch")
    dispatcher.acquire()
    try:
        ran = threading.Event()
        keep = dispatcher.call_later(3600.0, ran.set)  # a live one among the dead
        for _ in range(10_000):
            dispatcher.call_later(3600.0, ran.set).cancel()
        assert len(dispatcher._timers) < 200
        assert any(entry[2] is keep for entry in dispatcher._timers)
        soon = threading.Event()
        dispatcher.call_later(0.01, soon.set)
        assert soon.wait(WAIT)
        assert not ran.is_set()
    finally:
        for thread in dispatcher.release():
            thread.join(WAIT)


def test_dispatcher_threads_end_when_released():
    """A dispatcher's threads exit once its last reference is released."""
    dispatcher = SharedDispatcher(threads=2, name="ephemeral-actors-test-dispatch")
    dispatcher.acquire()
    leaving = dispatcher.release()
    assert len(leaving) == 2
    for thread in leaving:
        thread.join(WAIT)
        assert not thread.is_alive()


def test_pykka_internals_we_rely_on():
    """Fails loudly if Pykka changes the loop pieces PoolActor reuses."""
    version = tuple(int(p) for p in importlib.metadata.version("pykka").split(".")[:2])
    assert (4, 5) <= version < (5, 0)
    # PoolActor's running loop mirrors Pykka's: if Pykka's loop stops doing one of
    # these things, ours must be revisited (tests/pykka_suite checks the behaviour).
    source = inspect.getsource(pykka.Actor._actor_loop_running)
    for landmark in (
        "self._handle_receive(envelope.message)",
        "envelope.reply_to.set(response)",
        "envelope.reply_to.set_exception()",
        "self._handle_failure(*sys.exc_info())",
        "self.on_failure(*sys.exc_info())",
        "ActorRegistry.stop_all()",
    ):
        assert landmark in source, landmark
    for name in (
        "_actor_loop_setup",
        "_actor_loop_teardown",
        "_handle_receive",
        "_handle_failure",
        "_stop",
    ):
        assert callable(getattr(pykka.Actor, name))
    init = inspect.getsource(pykka.Actor.__init__)
    for field in ("actor_urn", "actor_inbox", "actor_stopped", "_actor_ref"):
        assert f"self.{field} =" in init


def test_actor_stopped_can_be_waited_on(actor_class):
    """Issue 13 #23: `actor_stopped.wait()` works as on ThreadingActor's threading.Event."""
    ref = actor_class.start()
    assert ref.actor_stopped.wait(0) is False
    waiting = threading.Barrier(2)
    woke: list[bool] = []

    def waiter() -> None:
        waiting.wait(WAIT)
        woke.append(ref.actor_stopped.wait(WAIT))

    thread = threading.Thread(target=waiter)
    thread.start()
    waiting.wait(WAIT)
    assert ref.stop(timeout=WAIT) is True
    thread.join(WAIT)
    assert woke == [True]
    assert ref.actor_stopped.wait(0) is True
    assert ref.actor_stopped.wait() is True


def test_stop_flag_wakes_a_waiter_that_raced_with_set():
    """A waiter whose Event is made while set() runs still wakes (no lost wake-up)."""
    for _ in range(200):
        actor = PoolRecorder.spawn()
        flag = actor.actor_stopped
        barrier = threading.Barrier(2)
        woke: list[bool] = []

        def waiter(
            flag: Any = flag, barrier: threading.Barrier = barrier, woke: list[bool] = woke
        ) -> None:
            barrier.wait(WAIT)
            woke.append(flag.wait(WAIT))

        thread = threading.Thread(target=waiter)
        thread.start()
        barrier.wait(WAIT)
        flag.set()
        thread.join(WAIT)
        assert woke == [True]
        actor.actor_ref.stop(timeout=WAIT)


def test_simultaneous_base_exceptions_do_not_deadlock_the_pool():
    """Issue 13 #24: two registered pool actors raising BaseException at once.

    Each failing actor runs Pykka's blocking `ActorRegistry.stop_all()`; on the pool
    threads themselves, both waited for a third registered actor's stop, which only a
    pool thread could handle. Run in a child process, since the failure is a hang.
    """
    out = run_isolated(
        """
        import threading
        from typing import Any

        import pykka
        from ephemeral_actors._dispatch import DISPATCHER, PoolActor

        DISPATCHER.acquire()
        both_running = threading.Barrier(2)
        bystander_stopped = threading.Event()

        class Failing(PoolActor):
            def on_receive(self, message: Any) -> Any:
                both_running.wait(30)  # both pool threads are inside a handler
                raise BaseException("at once")

        class Bystander(PoolActor):
            def on_stop(self) -> None:
                bystander_stopped.set()

        first, second = Failing.start(), Failing.start()
        bystander = Bystander.start()
        first.tell("boom")
        second.tell("boom")
        assert bystander_stopped.wait(30), "the pool deadlocked in stop_all"
        assert first.actor_stopped.wait(30) and second.actor_stopped.wait(30)
        assert not bystander.is_alive()
        # The pool still serves new actors.
        fresh = PoolActor.spawn()
        assert fresh.actor_ref.ask("hello", timeout=30) is None
        print("ok")
        """
    )
    assert out.strip() == "ok"
