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
def test_the_scrambling_is_a_bijection(x, y):
    # Distinct counters never share an id: multiplication by an odd constant modulo
    # 2**63 and an XOR are both invertible.
    def scramble(n: int) -> int:
        return n * _ids._MULTIPLIER & _ids._MASK ^ _ids._SALT

    assert (scramble(x) == scramble(y)) == (x == y)


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
