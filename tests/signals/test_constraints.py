"""Tests for `SignalConstraints` and `SignalBlockReason`."""

from __future__ import annotations

import datetime as dt
import logging
import sys

import pytest

from ephemeral_actors._signals import (
    SignalBlockReason,
    SignalConstraints,
    SignalEvent,
    SignalPropagation,
)

NOW = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def path(*names):
    return SignalPropagation(names)


@pytest.mark.parametrize(
    ("constraints", "signal", "cause", "expected"),
    [
        # no cause is always allowed, whatever else would apply
        (SignalConstraints(max_depth=1, terminal_signals={"a"}), "a", None, None),
        # depth is checked first: this cause is also a cycle and ends in a terminal
        (
            SignalConstraints(max_depth=2, terminal_signals={"b"}),
            "a",
            path("a", "b"),
            SignalBlockReason.MAX_DEPTH_EXCEEDED,
        ),
        (SignalConstraints(max_depth=2), "c", path("a"), None),
        # a cycle wins over a terminal signal
        (
            SignalConstraints(terminal_signals={"b"}),
            "a",
            path("a", "b"),
            SignalBlockReason.CYCLE_DETECTED,
        ),
        (SignalConstraints(block_cycles=False), "a", path("a", "b"), None),
        # terminal only counts at the end of the path
        (
            SignalConstraints(terminal_signals={"b"}),
            "c",
            path("a", "b"),
            SignalBlockReason.TERMINAL_SIGNAL_REACHED,
        ),
        (SignalConstraints(terminal_signals={"a"}), "c", path("a", "b"), None),
        (SignalConstraints(), "c", path("a", "b"), None),
    ],
)
def test_should_block_applies_checks_in_spec_order(constraints, signal, cause, expected):
    """No cause, then depth, then cycle, then terminal; the first that applies wins."""
    assert constraints.should_block(signal, cause) is expected


def test_event_cause_uses_its_propagation():
    """A SignalEvent cause is judged by its propagation path."""
    event = SignalEvent("b", 1, None, NOW, path("a", "b"))
    assert SignalConstraints(max_depth=2).should_block("c", event) is (
        SignalBlockReason.MAX_DEPTH_EXCEEDED
    )
    assert SignalConstraints().should_block("a", event) is SignalBlockReason.CYCLE_DETECTED


def test_event_cause_without_propagation_counts_as_its_own_root():
    """An event with no propagation acts as the root path of its own signal."""
    event = SignalEvent("a", 1, None, NOW)
    constraints = SignalConstraints(terminal_signals={"a"})
    assert constraints.should_block("a", event) is SignalBlockReason.CYCLE_DETECTED
    assert constraints.should_block("b", event) is SignalBlockReason.TERMINAL_SIGNAL_REACHED
    assert constraints.propagation_for("b", event) == path("a", "b")


def test_root_emission_has_depth_one():
    """With no cause the new event's propagation is a one-signal root."""
    propagation = SignalConstraints().propagation_for("a", None)
    assert propagation == SignalPropagation.root("a")
    assert propagation is not None
    assert propagation.depth == 1


def test_caused_emission_extends_the_cause():
    """A caused emission's path is the cause's path plus the new signal."""
    assert SignalConstraints().propagation_for("c", path("a", "b")) == path("a", "b", "c")


def test_leaf_signal_carries_no_propagation():
    """Leaf signals get no propagation, rooted or caused."""
    constraints = SignalConstraints(leaf_signals=["done"])
    assert constraints.propagation_for("done", None) is None
    assert constraints.propagation_for("done", path("a")) is None
    assert constraints.leaf_signals == frozenset({"done"})


def test_bad_cause_type_raises():
    """A cause that is neither path, event nor None raises TypeError."""
    with pytest.raises(TypeError, match="cause"):
        SignalConstraints().should_block("a", ("a",))


def test_notify_blocked_calls_on_blocked():
    """`on_blocked` receives the event and the reason."""
    calls = []
    constraints = SignalConstraints(on_blocked=lambda event, reason: calls.append((event, reason)))
    event = SignalEvent("a", 1, None, NOW)
    constraints.notify_blocked(event, SignalBlockReason.CYCLE_DETECTED)
    assert calls == [(event, SignalBlockReason.CYCLE_DETECTED)]


@pytest.mark.parametrize("exception", [RuntimeError("boom"), KeyboardInterrupt()])
def test_on_blocked_exceptions_are_logged_not_raised(caplog, exception):
    """Whatever `on_blocked` raises, BaseException included, is logged and swallowed."""

    def on_blocked(event, reason):
        raise exception

    constraints = SignalConstraints(on_blocked=on_blocked)
    with caplog.at_level(logging.ERROR, logger="ephemeral_actors"):
        constraints.notify_blocked(
            SignalEvent("a", 1, None, NOW), SignalBlockReason.MAX_DEPTH_EXCEEDED
        )
    (record,) = caplog.records
    assert record.name == "ephemeral_actors"
    assert record.exc_info is not None
    assert record.exc_info[1] is exception
    assert "'a'" in record.getMessage()


def test_notify_blocked_without_handler_does_nothing():
    """With no `on_blocked`, notifying is a no-op."""
    SignalConstraints().notify_blocked(
        SignalEvent("a", 1, None, NOW), SignalBlockReason.CYCLE_DETECTED
    )


def test_presets():
    """DEFAULT is the defaults, STRICT has depth 5, NONE limits nothing."""
    assert SignalConstraints() == SignalConstraints.DEFAULT
    assert SignalConstraints.DEFAULT.max_depth == 10
    assert SignalConstraints.DEFAULT.block_cycles
    assert SignalConstraints.STRICT.max_depth == 5
    assert SignalConstraints.STRICT.block_cycles
    none = SignalConstraints.NONE
    deep = SignalPropagation(tuple(f"s{i}" for i in range(1000)))
    assert none.should_block("s0", deep) is None
    assert none.max_depth == sys.maxsize


def test_constraints_are_keyword_only():
    """Options are keyword-only, as every options record is."""
    with pytest.raises(TypeError):
        SignalConstraints(5)


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"max_depth": 0}, ValueError, "max_depth"),
        ({"max_depth": True}, TypeError, "max_depth"),
        ({"max_depth": 2.0}, TypeError, "max_depth"),
        ({"block_cycles": 1}, TypeError, "block_cycles"),
        ({"terminal_signals": "abc"}, TypeError, "terminal_signals"),
        ({"terminal_signals": {1}}, TypeError, "terminal_signals"),
        ({"leaf_signals": {""}}, ValueError, "leaf_signals"),
        ({"leaf_signals": None}, TypeError, "leaf_signals"),
        ({"on_blocked": "log"}, TypeError, "on_blocked"),
    ],
)
def test_constraints_validate_their_fields(kwargs, error, argument):
    """A bad option raises, naming the field and the value."""
    with pytest.raises(error, match=argument):
        SignalConstraints(**kwargs)
