"""Entering and leaving Pykka's actor registry without its eager debug messages.

Every coordinator registers its supervisor in `pykka.ActorRegistry`, so that
`get_all()` lists it and `stop_all()` stops it like any Pykka actor. Pykka's own
`register`, `unregister` and `Actor._stop` each format an f-string naming the actor
for a debug message, whether or not debug logging is on: about 6 % of creating and
closing an unused coordinator went into those renderings. These helpers do the same
list updates under the registry's own lock and log the same messages, formatted only
when the `pykka` logger is enabled for debug.

They read the registry's private list and lock, which every Pykka version we support
has (`tests/test_pykka_registry.py` pins them); without them, Pykka's own calls are used.
"""

from __future__ import annotations

import logging
from typing import Any

import pykka

__all__ = ["register", "stopped", "unregister"]

_logger = logging.getLogger("pykka")
_REGISTRY = pykka.ActorRegistry
_DIRECT = hasattr(_REGISTRY, "_actor_refs") and hasattr(_REGISTRY, "_actor_refs_lock")


def register(ref: pykka.ActorRef[Any]) -> None:
    """`pykka.ActorRegistry.register(ref)`, formatting its debug message only if logged."""
    if not _DIRECT:
        _REGISTRY.register(ref)
        return
    # The lock is read at each call: a forked child replaces it (`_dispatch`).
    with _REGISTRY._actor_refs_lock:
        _REGISTRY._actor_refs.append(ref)
    if _logger.isEnabledFor(logging.DEBUG):
        _logger.debug(f"Registered {ref}")


def unregister(ref: pykka.ActorRef[Any]) -> None:
    """`pykka.ActorRegistry.unregister(ref)`, formatting its debug message only if logged."""
    if not _DIRECT:
        _REGISTRY.unregister(ref)
        return
    with _REGISTRY._actor_refs_lock:
        refs = _REGISTRY._actor_refs
        removed = ref in refs
        if removed:
            refs.remove(ref)
    if _logger.isEnabledFor(logging.DEBUG):
        suffix = "" if removed else " (not found in registry)"
        _logger.debug(f"Unregistered {ref}{suffix}")


def stopped(actor: pykka.Actor) -> None:
    """The registry part of `pykka.Actor._stop`: out of the registry, flagged, logged."""
    unregister(actor.actor_ref)
    actor.actor_stopped.set()
    if _logger.isEnabledFor(logging.DEBUG):
        _logger.debug(f"Stopped {actor}")
