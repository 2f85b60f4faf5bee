"""cancel_operation(op_id) (SPEC 16) and OperationFuture.cancel() on every coordinator kind."""

from __future__ import annotations

import threading

import pytest

from ephemeral_actors import (
    KeyedWorkCoordinator,
    OperationCancelledError,
    WorkCoordinator,
    current_operation,
)
from tests.conftest import WAIT


def build(kind: str, body, **options):
    if kind == "keyed":
        return KeyedWorkCoordinator(lambda item: item % 2, body, **options)
    return WorkCoordinator(body, **options)


@pytest.mark.parametrize("kind", ["work", "keyed"])
def test_a_cancelled_pending_item_never_starts_and_counts_as_cancelled(kind):
    """A pending item cancelled by id is dropped: it never starts and total_cancelled counts it."""
    started: list[int] = []
    gate = threading.Event()

    def body(item: int) -> None:
        started.append(item)
        if item == 0:
            assert gate.wait(WAIT)

    c = build(kind, body, max_concurrency=1)
    try:
        c.enqueue(0)
        victim = c.submit(2)
        c.enqueue(4)
        assert c.cancel_operation(victim.operation_id) is True
        assert victim.cancelled()
        assert c.pending_count == 1
        assert c.total_cancelled == 1
        gate.set()
        c.complete()
        c.drain(WAIT)
        assert started == [0, 4]
        s = c.stats()
        assert (s.total_enqueued, s.total_completed, s.total_cancelled) == (3, 2, 1)
        assert c.cancel_operation(victim.operation_id) is False  # already ended
    finally:
        gate.set()
        c.close(WAIT)


def test_cancelling_a_running_item_asks_it_to_cancel():
    """A running item is asked to cancel; a body that honours it counts as cancelled."""
    running = threading.Event()

    def body(_item: int) -> None:
        running.set()
        op = current_operation()
        while not op.cancelled:
            threading.Event().wait(0.001)
        op.raise_if_cancelled()

    c = WorkCoordinator(body, max_concurrency=1)
    try:
        future = c.submit(1)
        assert running.wait(WAIT)
        assert c.cancel_operation(future.operation_id) is True
        with pytest.raises(OperationCancelledError):
            future.result(timeout=WAIT)
        assert c.total_cancelled == 1
    finally:
        c.close(WAIT)


def test_unknown_ids_and_bad_ids():
    """Unknown ids answer False; a non-positive or non-int id is a clear error."""
    c = WorkCoordinator(lambda _item: None)
    try:
        assert c.cancel_operation(12345) is False
        with pytest.raises(ValueError, match="op_id"):
            c.cancel_operation(0)
        with pytest.raises(TypeError, match="op_id"):
            c.cancel_operation("7")  # type: ignore[arg-type]
    finally:
        c.close(WAIT)
