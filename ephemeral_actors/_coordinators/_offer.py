"""`offer(item) -> Admission`: intake that says why it refused (SPEC section 15).

The reason comes from the supervisor's turn, where the state, the fairness count
and the backlog size are read together (`Intake.reason`); only a key selector that
raises is found in the caller's thread, where the selector runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ephemeral_actors._admission import Admission
from ephemeral_actors._coordinators._failures import label_of
from ephemeral_actors._coordinators._requests import TRY, Intake

if TYPE_CHECKING:
    from ephemeral_actors._coordinators._supervisor import Core

__all__ = ["offer"]


def offer(core: Core, item: Any) -> Admission:
    """Accept `item` if that needs no waiting, else say why not; never blocks or raises."""
    request = Intake(item, None, TRY)
    if core.describe is not None:
        request.label = label_of(core, item)
    try:
        core.prepare_intake(request)
    except Exception:
        # CLOSED outranks KEY_ERROR: a closed coordinator refuses whatever the key.
        # The published state includes every control call that has returned.
        from ephemeral_actors._coordinators._supervisor import (  # noqa: PLC0415
            CoordinatorState,
        )

        if core.state is not CoordinatorState.RUNNING:
            return Admission.CLOSED
        return Admission.KEY_ERROR
    if core.post_intake(request, None) is not None:
        return Admission.ACCEPTED
    reason = request.reason
    return reason if isinstance(reason, Admission) else Admission.CLOSED
