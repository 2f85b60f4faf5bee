"""Operation ids: positive, 63-bit, unique in a process, and apart across processes."""

from __future__ import annotations

import multiprocessing

from hypothesis import given
from hypothesis import strategies as st

from ephemeral_actors import _ids


def test_ids_are_positive_63_bit_and_unique():
    ids = [_ids.next_operation_id() for _ in range(100_000)]
    assert len(set(ids)) == len(ids)
    assert all(0 < i < 2**63 for i in ids)


def test_consecutive_ids_do_not_look_consecutive():
    a, b, c = (_ids.next_operation_id() for _ in range(3))
    assert abs(b - a) > 2**32
    assert abs(c - b) > 2**32


@given(st.integers(min_value=0, max_value=2**63 - 1), st.integers(min_value=0, max_value=2**63 - 1))
def test_the_progression_is_a_bijection(x, y):
    # Distinct positions never share an id: adding a multiple of an odd step modulo
    # 2**63 is invertible.
    def nth(n: int) -> int:
        return (_ids._SALT + n * _ids._STEP) & _ids._MASK

    assert (nth(x) == nth(y)) == (x == y)


def test_ids_follow_the_progression():
    first = _ids.next_operation_id()
    second = _ids.next_operation_id()
    assert second == (first + _ids._STEP) & _ids._MASK


def _child_ids(conn) -> None:  # type: ignore[no-untyped-def]
    conn.send([_ids.next_operation_id() for _ in range(1000)])
    conn.close()


def test_a_forked_child_draws_ids_apart_from_its_parent():
    if "fork" not in multiprocessing.get_all_start_methods():
        return
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    child = ctx.Process(target=_child_ids, args=(child_end,))
    child.start()
    theirs = parent_end.recv()
    child.join(30)
    ours = [_ids.next_operation_id() for _ in range(1000)]
    assert not set(theirs) & set(ours)
