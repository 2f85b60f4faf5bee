"""`Admission`: the reasons `offer()` can give, truthy only for ACCEPTED (SPEC 15)."""

from __future__ import annotations

import enum

import pytest

import ephemeral_actors
from ephemeral_actors import Admission


def test_admission_is_an_exported_enum_with_the_spec_members():
    """Admission is an enum.Enum exported at the top level with exactly the five reasons."""
    assert ephemeral_actors.Admission is Admission
    assert "Admission" in ephemeral_actors.__all__
    assert issubclass(Admission, enum.Enum)
    assert [m.name for m in Admission] == ["ACCEPTED", "FULL", "UNFAIR", "CLOSED", "KEY_ERROR"]


def test_only_accepted_is_truthy():
    """`if coordinator.offer(item):` reads like the bool try_enqueue returns."""
    assert Admission.ACCEPTED
    for member in (Admission.FULL, Admission.UNFAIR, Admission.CLOSED, Admission.KEY_ERROR):
        assert not member


@pytest.mark.parametrize("member", list(Admission))
def test_members_round_trip_by_value(member):
    """Each member is found again by its value (e.g. from a log field)."""
    assert Admission(member.value) is member
