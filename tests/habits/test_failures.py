"""Failure labels (`describe`) and the failure log (`max_tracked_failures`) (SPEC 15)."""

from __future__ import annotations

import logging
import threading

import pytest

from ephemeral_actors import CoordinatorOptions, OperationSnapshot, ResultCoordinator
from ephemeral_actors.testing import use_clock
from tests.conftest import run_all


def fail_on_tens(item: int) -> None:
    if item % 10 == 0:
        raise ValueError("bad item")


def test_every_failure_of_many_is_listed_with_its_label(make):
    """2,000 items, 25 failures, a 200-record window: get_failed() lists all 25, labelled."""

    def body(item: int) -> None:
        if item % 80 == 0:
            raise ValueError("bad item")

    work = make(body, describe=lambda item: f"url-{item}")
    run_all(work, list(range(2000)))
    failed = work.get_failed()
    assert work.total_failed == 25
    assert [s.label for s in failed] == [f"url-{i}" for i in range(0, 2000, 80)]
    assert [s.started for s in failed] == sorted(s.started for s in failed)


def test_the_failure_log_keeps_the_most_recent(make):
    """Past max_tracked_failures, the oldest failures are forgotten."""
    # One at a time: "most recent" is by end, and with two workers item 60 may end after 70.
    work = make(
        fail_on_tens,
        describe=str,
        max_concurrency=1,
        max_tracked_operations=5,
        max_tracked_failures=3,
    )
    run_all(work, list(range(100)))
    assert [s.label for s in work.get_failed()] == ["70", "80", "90"]


def test_cancelled_operations_are_kept_too(make):
    """A body that acknowledged cancellation is kept in the failure log like a failure."""
    from ephemeral_actors import current_operation  # noqa: PLC0415

    gate = threading.Event()

    def body(item: int) -> None:
        if item == 0:
            gate.wait(10)
            current_operation().raise_if_cancelled()

    work = make(body, describe=str, max_concurrency=1, max_tracked_operations=1)
    op_id = work.enqueue(0)
    work.cancel_operation(op_id)
    gate.set()
    run_all(work, list(range(1, 10)))
    assert [s.label for s in work.get_failed()] == ["0"]
    assert work.total_cancelled == 1


def test_the_failure_log_obeys_the_age_bound_and_evict(make):
    """A kept failure leaves with max_operation_lifetime, or with evict()."""
    now = [1000.0]
    with use_clock(lambda: now[0]):
        work = make(
            fail_on_tens, describe=str, max_tracked_operations=2, max_operation_lifetime=60.0
        )
    run_all(work, list(range(30)))
    failed = work.get_failed()
    assert [s.label for s in failed] == ["0", "10", "20"]
    assert work.evict(failed[0].id) is True
    assert [s.label for s in work.get_failed()] == ["10", "20"]
    now[0] += 61.0
    assert work.get_failed() == ()


def test_zero_keeps_only_the_windows_failures(make):
    """max_tracked_failures=0: only failures still in the window are listed."""
    # One at a time: with two workers a record still running when newer ones end is
    # kept over them (running records are never trimmed), so which five remain would
    # depend on timing.
    work = make(fail_on_tens, max_concurrency=1, max_tracked_operations=5, max_tracked_failures=0)
    run_all(work, list(range(91)))  # the window keeps 86..90
    assert [s.error is not None for s in work.get_failed()] == [True]


def test_label_is_truncated_and_none_without_describe(make):
    """Labels keep 200 characters; without describe they are None."""
    labelled = make(fail_on_tens, describe=lambda item: "x" * 500)
    run_all(labelled, [0])
    assert labelled.get_failed()[0].label == "x" * 200
    plain = make(fail_on_tens)
    run_all(plain, [0])
    assert plain.get_failed()[0].label is None


def test_describe_raising_gives_no_label_and_is_logged(make, caplog):
    """A raising describe: label None, a warning naming the coordinator, the item still runs."""

    def describe(item: int) -> str:
        raise RuntimeError(f"secret {item}")

    work = make(lambda _: None, describe=describe, name="labels")
    with caplog.at_level(logging.WARNING, logger="ephemeral_actors"):
        run_all(work, [1])
    assert work.total_completed == 1
    assert work.get_snapshot()[0].label is None
    messages = [r.getMessage() for r in caplog.records]
    assert any("'labels'" in m and "RuntimeError" in m for m in messages)
    assert not any("secret" in m for m in messages)  # the message may quote the item


def test_describe_runs_in_the_callers_thread(make):
    """describe is user code: it runs where the item is offered, not in the supervisor."""
    threads: list[threading.Thread] = []

    def describe(item: int) -> str:
        threads.append(threading.current_thread())
        return str(item)

    work = make(lambda _: None, describe=describe)
    run_all(work, [1, 2, 3])
    assert threads == [threading.current_thread()] * 3


def test_label_on_success_and_results():
    """A successful operation carries its label too; ResultSnapshot has it."""
    with ResultCoordinator(len, CoordinatorOptions(describe=str.upper)) as results:
        results.enqueue("abc")
    snap = results.get_snapshot()[0]
    assert (snap.label, snap.result) == ("ABC", 3)


def test_snapshot_positional_construction_is_unchanged():
    """label is keyword-only with a default: old positional calls still work."""
    from datetime import UTC, datetime  # noqa: PLC0415

    now = datetime.now(UTC)
    snap = OperationSnapshot(1, now, now, None, False, None, 0.0, (), False)
    assert snap.label is None


@pytest.mark.parametrize(
    ("field", "value"),
    [("describe", 3), ("max_tracked_failures", -1), ("max_tracked_failures", 1.5)],
)
def test_new_options_are_validated(field, value):
    """Bad values name the field."""
    with pytest.raises((TypeError, ValueError), match=field):
        CoordinatorOptions(**{field: value})
