"""Structured log records: one per failed operation and per supervision event, no payloads."""

from __future__ import annotations

import logging
import threading

import pytest

from ephemeral_actors import CoordinatorOptions, KeyedWorkCoordinator, WorkCoordinator
from ephemeral_actors.testing import crash_worker
from tests.conftest import WAIT

SECRET = "card-4111-1111"


def records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "event", None) == event]


def test_failed_operation_is_logged_with_ids_and_never_the_payload(caplog):
    """A failed operation logs coordinator, op id, key and error type, not the item or message."""

    def body(item: tuple[str, str]) -> None:
        raise ValueError(f"bad card {item[1]}")

    caplog.set_level(logging.WARNING, logger="ephemeral_actors")
    with KeyedWorkCoordinator(lambda i: i[0], body, CoordinatorOptions(name="payments")) as c:
        op_id = c.enqueue(("alice", SECRET))
    (record,) = records(caplog, "operation.failed")
    assert record.coordinator == "payments"
    assert record.operation_id == op_id
    assert record.key == "alice"
    assert record.error_type == "ValueError"
    assert record.levelno == logging.WARNING
    assert SECRET not in caplog.text


def test_worker_restart_is_logged(caplog):
    """A worker actor's death is logged once, as a supervision event, with its operation."""

    def body(item: int) -> None:
        if item == 1:
            crash_worker()

    caplog.set_level(logging.WARNING, logger="ephemeral_actors")
    with WorkCoordinator(body, CoordinatorOptions(name="crashy")) as c:
        c.enqueue(0)
        op_id = c.enqueue(1)
    (record,) = records(caplog, "worker.restarted")
    assert record.coordinator == "crashy"
    assert record.operation_id == op_id
    assert record.error_type == "WorkerCrashError"
    assert record.levelno == logging.ERROR


def test_supervisor_fault_is_logged(caplog):
    """A supervisor that dies is logged as a supervision event."""
    gate = threading.Event()
    c = WorkCoordinator(lambda _: gate.wait(WAIT), CoordinatorOptions(name="fragile"))
    try:
        c.actor_ref.stop()
        (record,) = records(caplog, "supervisor.faulted")
        assert record.coordinator == "fragile"
        assert record.levelno == logging.ERROR
    finally:
        gate.set()
        c.close(WAIT)


def test_the_library_logger_has_a_null_handler():
    """Importing the library adds a NullHandler, so nothing prints unless the app configures it."""
    handlers = logging.getLogger("ephemeral_actors").handlers
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
