"""Signals: events, patterns, constraints on caused emissions, and the shared bus."""

from __future__ import annotations

from ephemeral_actors._signals._bus import SignalBus, Subscription
from ephemeral_actors._signals._constraints import SignalBlockReason, SignalConstraints
from ephemeral_actors._signals._event import SignalEvent, SignalPropagation
from ephemeral_actors._signals._pattern import compile_patterns, matches, matches_any

__all__ = [
    "SignalBlockReason",
    "SignalBus",
    "SignalConstraints",
    "SignalEvent",
    "SignalPropagation",
    "Subscription",
    "compile_patterns",
    "matches",
    "matches_any",
]
