"""Tests for `SignalEvent` and `SignalPropagation`."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from ephemeral_actors._signals import SignalEvent, SignalPropagation

NOW = dt.datetime(2025, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_root_starts_a_path_of_depth_one():
    """`root(signal)` is a one-signal path."""
    root = SignalPropagation.root("a")
    assert root.path == ("a",)
    assert root.depth == 1


def test_extend_returns_a_new_path_and_leaves_the_old_one():
    """`extend` appends without mutating the original."""
    root = SignalPropagation.root("a")
    chain = root.extend("b").extend("c")
    assert chain.path == ("a", "b", "c")
    assert chain.depth == 3
    assert root.path == ("a",)


def test_str_joins_the_path_with_arrows():
    """`str()` reads `a -> b -> c`."""
    assert str(SignalPropagation(("a", "b", "c"))) == "a -> b -> c"


def test_contains_checks_every_step():
    """`contains` finds any signal on the path, not just the last."""
    chain = SignalPropagation(("a", "b"))
    assert chain.contains("a")
    assert chain.contains("b")
    assert not chain.contains("c")


def test_records_are_frozen_and_slotted():
    """Both records reject assignment and have no per-instance dict."""
    event = SignalEvent("a", None, None, NOW)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.signal = "b"  # type: ignore[misc]
    assert not hasattr(event, "__dict__")
    assert not hasattr(SignalPropagation.root("a"), "__dict__")


@pytest.mark.parametrize(
    ("make", "error", "argument"),
    [
        (lambda: SignalPropagation.root(""), ValueError, "signal"),
        (lambda: SignalPropagation.root(1), TypeError, "signal"),
        (lambda: SignalPropagation.root("a").extend(None), TypeError, "signal"),
        (lambda: SignalPropagation(()), ValueError, "path"),
        (lambda: SignalPropagation(["a"]), TypeError, "path"),
        (lambda: SignalPropagation(("a", "")), ValueError, "path"),
    ],
)
def test_propagation_validates_signal_names(make, error, argument):
    """Empty or non-str names raise, naming the argument."""
    with pytest.raises(error, match=argument):
        make()


def test_event_depth_is_zero_without_propagation():
    """A plain or leaf event has depth 0."""
    assert SignalEvent("a", 1, "k", NOW).depth == 0


def test_event_depth_follows_its_propagation():
    """With propagation, depth is the path length."""
    event = SignalEvent("b", 1, None, NOW, SignalPropagation(("a", "b")))
    assert event.depth == 2


def test_event_name_helpers():
    """`is_` is exact, `starts_with` is a prefix test."""
    event = SignalEvent("rate-limit.hit", None, None, NOW)
    assert event.is_("rate-limit.hit")
    assert not event.is_("rate-limit")
    assert event.starts_with("rate-limit.")
    assert not event.starts_with("hit")


def test_would_cycle_uses_the_propagation_path():
    """`would_cycle` is True only for signals already on the path."""
    event = SignalEvent("b", None, None, NOW, SignalPropagation(("a", "b")))
    assert event.would_cycle("a")
    assert not event.would_cycle("c")
    assert not SignalEvent("a", None, None, NOW).would_cycle("a")


def test_aware_timestamps_are_normalised_to_utc():
    """An aware timestamp in another zone is stored as the same instant in UTC."""
    plus_two = dt.timezone(dt.timedelta(hours=2))
    event = SignalEvent("a", None, None, NOW.astimezone(plus_two))
    assert event.timestamp == NOW
    assert event.timestamp.tzinfo is dt.UTC


@pytest.mark.parametrize(
    ("kwargs", "error", "argument"),
    [
        ({"signal": ""}, ValueError, "signal"),
        ({"signal": 3}, TypeError, "signal"),
        ({"operation_id": True}, TypeError, "operation_id"),
        ({"operation_id": "1"}, TypeError, "operation_id"),
        ({"key": 1}, TypeError, "key"),
        ({"timestamp": NOW.replace(tzinfo=None)}, ValueError, "timestamp"),
        ({"timestamp": 0.0}, TypeError, "timestamp"),
        ({"propagation": ("a",)}, TypeError, "propagation"),
    ],
)
def test_event_validates_its_fields(kwargs, error, argument):
    """A bad field raises, naming the field."""
    fields = {"signal": "a", "operation_id": 1, "key": None, "timestamp": NOW} | kwargs
    with pytest.raises(error, match=argument):
        SignalEvent(**fields)
