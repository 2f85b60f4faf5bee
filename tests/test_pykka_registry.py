"""Supervisors enter and leave Pykka's registry as Pykka's own calls would have them."""

from __future__ import annotations

import logging

import pykka
import pytest

from ephemeral_actors import WorkCoordinator
from ephemeral_actors import _pykka_registry as registry
from tests.conftest import WAIT


def noop(_: object) -> None:
    return None


def test_the_private_registry_fields_we_read_are_there() -> None:
    # Pinned for the Pykka versions we support: without them the helpers fall back to
    # Pykka's own calls, correct but slower, and this test says so.
    assert registry._DIRECT
    assert isinstance(pykka.ActorRegistry._actor_refs, list)
    with pykka.ActorRegistry._actor_refs_lock:
        pass


@pytest.mark.parametrize("used", [False, True], ids=["unused", "used"])
def test_a_supervisor_is_registered_while_open_and_not_after_close(used: bool) -> None:
    coordinator = WorkCoordinator(noop, max_concurrency=2)
    ref = coordinator.actor_ref
    assert ref in pykka.ActorRegistry.get_all()
    assert pykka.ActorRegistry.get_by_urn(ref.actor_urn) is ref
    if used:
        coordinator.submit(1).result(WAIT)
    coordinator.close(WAIT)
    assert ref not in pykka.ActorRegistry.get_all()
    assert not ref.is_alive()


def test_pykka_debug_messages_are_kept_when_debug_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="pykka"):
        coordinator = WorkCoordinator(noop, max_concurrency=2)
        ref = coordinator.actor_ref
        coordinator.close(WAIT)
    messages = [r.getMessage() for r in caplog.records if r.name == "pykka"]
    assert f"Registered {ref}" in messages
    assert f"Unregistered {ref}" in messages
    assert any(message.startswith("Stopped Supervisor") for message in messages)


def test_debug_messages_are_not_formatted_when_debug_is_off(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The point of the helpers: rendering a ref for a message nobody logs.
    rendered: list[str] = []
    original = pykka.ActorRef.__str__

    def counting(self: pykka.ActorRef[object]) -> str:
        rendered.append("x")
        return original(self)

    monkeypatch.setattr(pykka.ActorRef, "__str__", counting)
    with caplog.at_level(logging.INFO, logger="pykka"):
        WorkCoordinator(noop, max_concurrency=2).close(WAIT)
    assert rendered == []


def test_unregistering_an_unknown_ref_is_logged_not_raised(
    caplog: pytest.LogCaptureFixture,
) -> None:
    coordinator = WorkCoordinator(noop, max_concurrency=2)
    ref = coordinator.actor_ref
    coordinator.close(WAIT)
    with caplog.at_level(logging.DEBUG, logger="pykka"):
        registry.unregister(ref)
    assert f"Unregistered {ref} (not found in registry)" in [r.getMessage() for r in caplog.records]
