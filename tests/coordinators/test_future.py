"""OutcomeFuture keeps Pykka's future contract (what submit() returns)."""

from __future__ import annotations

import queue
import threading

import pykka
import pytest

from ephemeral_actors._coordinators._future import OutcomeFuture
from tests.conftest import WAIT


def test_value_set_before_get():
    """A value set before get() is returned at once, as often as asked."""
    f: OutcomeFuture[int] = OutcomeFuture()
    f.set(3)
    assert f.get() == 3
    assert f.get(timeout=0) == 3


def test_waiters_are_woken_by_set():
    """Several threads blocked in get() all receive the value."""
    f: OutcomeFuture[str] = OutcomeFuture()
    results: list[str] = []
    barrier = threading.Barrier(5)

    def waiter() -> None:
        barrier.wait(WAIT)
        results.append(f.get(timeout=WAIT))

    threads = [threading.Thread(target=waiter) for _ in range(4)]
    for t in threads:
        t.start()
    barrier.wait(WAIT)
    f.set("done")
    for t in threads:
        t.join(WAIT)
    assert results == ["done"] * 4


def test_timeout_raises_pykka_timeout():
    """get(timeout) without an outcome raises pykka.Timeout."""
    with pytest.raises(pykka.Timeout):
        OutcomeFuture().get(timeout=0.01)


def test_exception_is_reraised_with_its_traceback():
    """set_exception() makes get() raise the exception with the original traceback."""
    f: OutcomeFuture[None] = OutcomeFuture()
    try:
        raise KeyError("k")
    except KeyError:
        f.set_exception()
    with pytest.raises(KeyError) as info:
        f.get()
    assert info.value.__traceback__ is not None


def test_second_resolution_raises_queue_full():
    """Only one of set/set_exception/set_get_hook may be called (Pykka 4.3 rule)."""
    f: OutcomeFuture[int] = OutcomeFuture()
    f.set(1)
    with pytest.raises(queue.Full):
        f.set(2)
    with pytest.raises(queue.Full):
        f.set_exception((ValueError, ValueError(), None))
    with pytest.raises(queue.Full):
        f.set_get_hook(lambda _timeout: 3)


def test_composition_helpers_work():
    """map, join, filter and reduce behave as on pykka.ThreadingFuture."""
    a: OutcomeFuture[int] = OutcomeFuture()
    b: OutcomeFuture[int] = OutcomeFuture()
    doubled = a.map(lambda x: x * 2)
    both = a.join(b)
    a.set(4)
    b.set(5)
    assert doubled.get(timeout=WAIT) == 8
    assert both.get(timeout=WAIT) == [4, 5]
    items: OutcomeFuture[list[int]] = OutcomeFuture()
    items.set([1, 2, 3, 4])
    assert items.filter(lambda x: x % 2 == 0).get(timeout=WAIT) == [2, 4]
    assert items.reduce(lambda x, y: x + y).get(timeout=WAIT) == 10
    assert pykka.get_all([a, b], timeout=WAIT) == [4, 5]


def test_get_hook_wakes_a_waiter():
    """A waiter blocked before set_get_hook() gets the hook's value."""
    f: OutcomeFuture[int] = OutcomeFuture()
    result: list[int] = []
    started = threading.Event()

    def waiter() -> None:
        started.set()
        result.append(f.get(timeout=WAIT))

    t = threading.Thread(target=waiter)
    t.start()
    assert started.wait(WAIT)
    f.set_get_hook(lambda _timeout: 7)
    t.join(WAIT)
    assert result == [7]
