"""The operation window against a model: the records it keeps and their order.

`Window` keeps start order in a deque beside its id index (trimming the front of a
dict would leave dead slots every later scan walks again). The model here is the
rule of SPEC 4 spelled out over a plain list: after each change, drop the oldest
finished, unpinned records while over the bound, and finished, unpinned records
older than the lifetime; running and pinned records stay, whatever their age.
"""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from ephemeral_actors._coordinators._window import SET_ASIDE, Window
from ephemeral_actors._operation import Operation

# (action, index): start a new operation, finish / pin / unpin / evict / retry the
# index-th known one, or trim at a later time.
_ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(
            ["start", "start", "finish", "finish", "pin", "unpin", "evict", "age", "retry"]
        ),
        st.integers(min_value=0, max_value=40),
    ),
    max_size=120,
)


def _model_trim(kept: list[Operation], bound: int, lifetime: float | None, now: float) -> None:
    excess = len(kept) - bound
    cutoff = None if lifetime is None else now - lifetime
    for op in list(kept):
        old = cutoff is not None and op._started < cutoff
        if excess <= 0 and not old:
            break
        if op._outcome != 0 and not op._pinned:
            kept.remove(op)
            excess -= 1


@settings(max_examples=300, deadline=None)
# B, still running when it aged, is set aside; C then starts `order` again and sets
# the age expiry, so C, past its lifetime when it ends, goes at once.
@example(
    bound=2,
    lifetime=1.0,
    actions=[
        ("start", 0),
        ("start", 0),
        ("finish", 0),
        ("age", 0),
        ("start", 0),
        ("finish", 0),
        ("finish", 8),
    ],
    lookups=True,
)
# The window's age expiry after a size trim took its oldest record: the next oldest
# (B, started at 2) ages out at 7, and the finish at 8 must trim it.
@example(
    bound=2,
    lifetime=5.0,
    actions=[
        ("start", 0),
        ("start", 0),
        ("finish", 0),
        ("finish", 1),
        ("start", 0),
        ("unpin", 0),
        ("unpin", 0),
        ("finish", 2),
    ],
    lookups=True,
)
# A start makes room by taking A; B, the oldest then, is past its lifetime at once.
@example(
    bound=2,
    lifetime=3.0,
    actions=[
        ("start", 0),
        ("start", 0),
        ("finish", 0),
        ("finish", 1),
        ("unpin", 0),
        ("start", 0),
    ],
    lookups=True,
)
# A pinned oldest record stays when a start needs room; nothing else may go either.
@example(
    bound=1,
    lifetime=None,
    actions=[("start", 0), ("finish", 0), ("pin", 0), ("start", 0)],
    lookups=True,
)
# Pinned records held the window two over its bound; unpinned, a start trims both.
@example(
    bound=1,
    lifetime=None,
    actions=[
        ("start", 0),
        ("finish", 0),
        ("pin", 0),
        ("start", 0),
        ("pin", 1),
        ("finish", 1),
        ("unpin", 0),
        ("unpin", 1),
        ("start", 0),
    ],
    lookups=True,
)
# Room made behind a running oldest record (B goes); then C, aged by then, goes too.
@example(
    bound=3,
    lifetime=3.0,
    actions=[
        ("start", 0),
        ("start", 0),
        ("start", 0),
        ("finish", 1),
        ("finish", 2),
        ("unpin", 0),
        ("start", 0),
    ],
    lookups=True,
)
# A start drops the oldest finished record (A) by size; B, next and finished, aged
# meanwhile with nothing to trim it (the expiry followed A), so it goes at once too.
@example(
    bound=2,
    lifetime=3.0,
    actions=[
        ("start", 0),
        ("start", 0),
        ("finish", 1),
        ("finish", 0),
        ("finish", 0),
        ("start", 0),
    ],
    lookups=False,
)
# A full window never looked up by id: `add` drops the oldest when it has
# finished and is unpinned, and otherwise keeps it (running, then pinned).
@example(
    bound=2,
    lifetime=None,
    actions=[
        ("start", 0),
        ("start", 0),
        ("start", 0),
        ("finish", 1),
        ("start", 0),
        ("finish", 0),
        ("pin", 0),
        ("start", 0),
        ("finish", 2),
        ("start", 0),
    ],
    lookups=False,
)
@given(
    bound=st.integers(min_value=1, max_value=6),
    lifetime=st.none() | st.floats(min_value=1.0, max_value=10.0),
    actions=_ACTIONS,
    lookups=st.booleans(),
)
def test_window_keeps_what_the_rule_keeps_in_start_order(
    bound: int, lifetime: float | None, actions: list[tuple[str, int]], lookups: bool
) -> None:
    """`lookups`: whether `evict` and `retry` run (a lookup builds the id index, which
    ends `add`'s fast path)."""
    window = Window(bound, lifetime)
    model: list[Operation] = []
    known: list[Operation] = []
    now = 0.0
    for action, index in actions:
        now += 1.0
        if action == "start":
            op = Operation(None, None)  # type: ignore[arg-type]
            op.id = len(known) + 1
            op._started = now
            known.append(op)
            window.add(op)
            model.append(op)
            if len(model) > bound:
                _model_trim(model, bound, lifetime, now)
            _check(window, model, known)
            continue
        if not known or (not lookups and action in ("evict", "retry")):
            continue
        op = known[index % len(known)]
        if action == "finish" and op._outcome == 0:
            op._finish(1, None, now)
            # The supervisor's gate: it trims only from `expiry` on, or when a set-aside
            # record ends. The model trims after every change, so a gate that skipped a
            # trim with work would show.
            if now >= window.expiry or op._in_window == SET_ASIDE:
                window.reconsider(now, op)
            _model_trim(model, bound, lifetime, now)
        elif action == "pin":
            op._pinned = True
        elif action == "unpin":
            op._pinned = False
            if op in model:  # the supervisor's unpin: only a record in the window
                window.reconsider(now, op)
                _model_trim(model, bound, lifetime, now)
        elif action == "retry" and op._outcome == 0 and op in model:
            # A retried attempt: out of the window while it waits, back when it restarts.
            assert window.evict(op.id)
            model.remove(op)
            op._started = now
            window.add(op)
            model.append(op)
            if len(model) > bound:
                _model_trim(model, bound, lifetime, now)
        elif action == "evict":
            assert window.evict(op.id) == (op in model)
            if op in model:
                model.remove(op)
        elif action == "age":
            window.trim(now)
            _model_trim(model, bound, lifetime, now)
        _check(window, model, known)
    assert all(window.get(o.id) is o for o in model)
    assert all(window.get(o.id) is None for o in known if o not in model)


def _check(window: Window, model: list[Operation], known: list[Operation]) -> None:
    assert [o.id for o in window] == [o.id for o in model]
    assert len(window) == len(model)
    assert all(bool(o._in_window) == (o in model) for o in known)
    if window.index is not None:
        # Only once something looked a record up (`evict`, `retry`): the first lookup
        # builds the index and ends `add`'s fast path, which the rest must cover.
        assert all(window.get(o.id) is o for o in model)
