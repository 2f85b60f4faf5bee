"""ephemeral_actors: bounded, observable, self-cleaning background work on Pykka actors.

Every coordinator is a supervisor actor that owns worker actors, keeps a small
window of operation metadata (never payloads) and answers state queries.
"""

from __future__ import annotations

import logging as _logging

from ephemeral_actors._admission import Admission
from ephemeral_actors._coordinators._future import OperationFuture
from ephemeral_actors._coordinators._keyed import KeyedWorkCoordinator
from ephemeral_actors._coordinators._work import ResultCoordinator, WorkCoordinator
from ephemeral_actors._errors import (
    CoordinatorClosedError,
    CoordinatorFaultedError,
    CoordinatorFullError,
    CoordinatorNotCompletedError,
    DynamicConcurrencyDisabledError,
    EphemeralError,
    NoCurrentOperationError,
    OperationCancelledError,
    OperationTimeoutError,
    RegistryClosedError,
    SignalCancelledError,
    UnknownCoordinatorError,
    WorkerCrashError,
)
from ephemeral_actors._for_each import for_each, for_each_async
from ephemeral_actors._operation import Operation, current_operation
from ephemeral_actors._options import CoordinatorOptions
from ephemeral_actors._public import publish
from ephemeral_actors._records import (
    ActorStats,
    CoordinatorStats,
    OperationSnapshot,
    RateLimitStats,
    ResultSnapshot,
)
from ephemeral_actors._registry import CoordinatorKey, CoordinatorRegistry
from ephemeral_actors._retry import RetryPolicy
from ephemeral_actors._signals import (
    SignalBlockReason,
    SignalBus,
    SignalConstraints,
    SignalEvent,
    SignalPropagation,
    matches,
    matches_any,
)

__all__ = (
    "ActorStats",
    "Admission",
    "CoordinatorClosedError",
    "CoordinatorFaultedError",
    "CoordinatorFullError",
    "CoordinatorKey",
    "CoordinatorNotCompletedError",
    "CoordinatorOptions",
    "CoordinatorRegistry",
    "CoordinatorStats",
    "DynamicConcurrencyDisabledError",
    "EphemeralError",
    "KeyedWorkCoordinator",
    "NoCurrentOperationError",
    "Operation",
    "OperationCancelledError",
    "OperationFuture",
    "OperationSnapshot",
    "OperationTimeoutError",
    "RateLimitStats",
    "RegistryClosedError",
    "ResultCoordinator",
    "ResultSnapshot",
    "RetryPolicy",
    "SignalBlockReason",
    "SignalBus",
    "SignalCancelledError",
    "SignalConstraints",
    "SignalEvent",
    "SignalPropagation",
    "UnknownCoordinatorError",
    "WorkCoordinator",
    "WorkerCrashError",
    "current_operation",
    "for_each",
    "for_each_async",
    "matches",
    "matches_any",
)

# Tracebacks and pickles name `ephemeral_actors.X`, the path users import from.
publish(__name__, globals(), __all__)
del publish

_logging.getLogger("ephemeral_actors").addHandler(_logging.NullHandler())
# `from ephemeral_actors import *` reads `__all__`, but completion and `dir()` read the
# namespace: only public names (and the package's own modules) are left in it.
del annotations
