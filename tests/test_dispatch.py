"""PoolActor behaves like pykka.ThreadingActor, and Pykka's internals are as we rely on."""

from __future__ import annotations

import importlib.metadata
import inspect
import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from ephemeral_actors._dispatch import DISPATCHER, PoolActor, SharedDispatcher
from tests.conftest import WAIT


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
    for a in actors:
        assert a.stop_if_idle()
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
    source = inspect.getsource(pykka.Actor._actor_loop_running)
    # inbox.get() must stay outside the per-message try, so _Yield can end a slice.
    assert source.index("self.actor_inbox.get()") < source.index("try:")
    for name in ("_actor_loop_setup", "_actor_loop_teardown", "_handle_receive", "_stop"):
        assert callable(getattr(pykka.Actor, name))
    init = inspect.getsource(pykka.Actor.__init__)
    for field in ("actor_urn", "actor_inbox", "actor_stopped", "_actor_ref"):
        assert f"self.{field} =" in init
