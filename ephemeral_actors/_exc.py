"""Exceptions the library keeps: without tracebacks, and copied without losing fields.

A failed operation's exception stays in the window for as long as the operation
does. A traceback pins every frame of the body, and with them the item and whatever
the body had in its locals, so what the window keeps must be traceback-free
(`detach`). When a caller also receives the exception (`submit`), the caller's copy
keeps its traceback and the window gets a twin (`copy_error`).

The twin used to be built with `cls.__new__(cls, *args)`, which skips `__init__`; the
fields that builtin exceptions fill in there were lost: `SystemExit(3).code` became
None, `OSError.filename` None, and `str(UnicodeDecodeError)` raised or showed ''
(issue 13, finding 18).
"""

from __future__ import annotations

import copy
import types
from typing import TypeVar

__all__ = ["copy_error", "detach"]

E = TypeVar("E", bound=BaseException)

_UNSET = object()

# Descriptors every exception has that `copy_error` sets itself (the chain), must not
# copy (the traceback, the object's own `__dict__`) or copies separately (`args`).
_NOT_FIELDS = frozenset(
    {
        "args",
        "__cause__",
        "__context__",
        "__suppress_context__",
        "__traceback__",
        "__dict__",
        "__weakref__",
    }
)


def detach(error: E) -> E:
    """Clear the traceback of `error` and of every exception it links to; return it.

    Follows `__cause__`, `__context__` and the members of exception groups, each
    exception once (chains may share links or form cycles).
    """
    seen: set[int] = set()
    pending: list[BaseException] = [error]
    while pending:
        exc = pending.pop()
        if id(exc) in seen:
            continue
        seen.add(id(exc))
        exc.__traceback__ = None
        pending.extend(_links(exc))
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
    return error


def copy_error(error: BaseException) -> BaseException:
    """Return a traceback-free twin of `error` that keeps every field.

    The twin has the same type, `args`, instance attributes (`__notes__` included)
    and the fields builtin exceptions keep in C slots (`SystemExit.code`,
    `OSError.errno`/`filename`, `UnicodeError.start`/`reason`, ...). Its `__cause__`
    and `__context__` are twins too, so nothing it links to holds a frame; a linked
    exception that cannot be copied is left out of the twin's chain.

    The copy follows `copy.copy` (so a class's `__copy__` or `__reduce__` is
    honoured, and its constructor runs with the reduced arguments). If that raises or
    gives something else, the twin is built without calling `__init__`
    (`cls.__new__(cls, *args)`) and the fields are copied over one by one.

    Args:
        error: The exception to copy; it is not modified.

    Returns:
        The twin, or `error` itself when it cannot be copied at all (then the caller
        decides whether sharing it is acceptable).
    """
    twins: dict[int, BaseException | None] = {}
    twin = _twin_chain(error, twins)
    return error if twin is None else twin


def _links(exc: BaseException) -> tuple[BaseException, ...]:
    return tuple(link for link in (exc.__cause__, exc.__context__) if link is not None)


def _twin_chain(
    error: BaseException, twins: dict[int, BaseException | None]
) -> BaseException | None:
    """Twin `error` and everything its chain reaches; `twins` maps id → twin (or None).

    Iterative rather than recursive: a retry loop can leave a context chain far
    longer than the recursion limit.
    """
    reached: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending:
        exc = pending.pop()
        if id(exc) in twins:
            continue
        # A placeholder first: a group member whose chain leads back to its group
        # must find the group "in progress" rather than start copying it again.
        twins[id(exc)] = None
        twins[id(exc)] = _twin_one(exc, twins)
        reached.append(exc)
        pending.extend(_links(exc))
    # Link only after every twin exists, so a cycle links twin to twin.
    for exc in reached:
        twin = twins[id(exc)]
        if twin is None:
            continue
        cause, context = exc.__cause__, exc.__context__
        twin.__cause__ = None if cause is None else twins[id(cause)]
        twin.__context__ = None if context is None else twins[id(context)]
        twin.__suppress_context__ = exc.__suppress_context__
        twin.__traceback__ = None
    return twins[id(error)]


def _twin_one(error: BaseException, twins: dict[int, BaseException | None]) -> BaseException | None:
    """A twin of `error` alone (its chain is linked by the caller), or None."""
    if isinstance(error, BaseExceptionGroup):
        return _twin_group(error, twins)
    twin: BaseException | None
    try:
        twin = copy.copy(error)
    except Exception:
        # A custom __init__ that cannot take back its own args, a __reduce__ or
        # __copy__ that raises: build it without running the constructor instead.
        twin = None
    if twin is error or type(twin) is not type(error):
        twin = None
    if twin is None:
        try:
            twin = type(error).__new__(type(error), *error.args)
        except Exception:
            return None
    # Even a successful copy.copy may have changed a field: a constructor that turns
    # its argument into a message (`super().__init__(f"n={n}")`) gets its own message
    # back and wraps it again. The original's values are the truth.
    return twin if _restore(twin, error, with_args=True) else None


def _twin_group(
    group: BaseExceptionGroup[BaseException], twins: dict[int, BaseException | None]
) -> BaseException | None:
    # copy.copy would share the members, and with them their tracebacks; the group is
    # rebuilt around twins of its members instead. Its `args` hold the member list,
    # so they are the rebuilt ones, not the original's.
    members: list[BaseException] = []
    for member in group.exceptions:
        twin = _twin_chain(member, twins)
        if twin is None:
            return None
        members.append(twin)
    try:
        rebuilt = type(group)(group.message, members)
    except Exception:
        return None
    if type(rebuilt) is not type(group):
        return None
    return rebuilt if _restore(rebuilt, group, with_args=False) else None


def _restore(twin: BaseException, error: BaseException, *, with_args: bool) -> bool:
    """Copy `error`'s fields onto `twin`; False if the twin refuses them."""
    try:
        if with_args:
            twin.args = error.args
        state = getattr(error, "__dict__", None)
        if state:
            twin.__dict__.update(state)
            notes = state.get("__notes__")
            if isinstance(notes, list):
                # add_note() on one must not show up on the other.
                twin.__notes__ = list(notes)
        for name in _slot_fields(type(error)):
            try:
                value = getattr(error, name)
            except AttributeError:
                continue  # an unset slot, or a field that exists only once set
            # Only set what differs: an unset C field reads as None, and writing None
            # back would make it "set" (OSError then prints "-> None" for filename2).
            if getattr(twin, name, _UNSET) is value:
                continue
            try:
                setattr(twin, name, value)
            except AttributeError:
                continue  # read-only (an exception group's `message`, ...)
    except Exception:
        return False
    return True


def _slot_fields(cls: type) -> tuple[str, ...]:
    """Names of the fields `cls` keeps outside `__dict__`: C members and `__slots__`."""
    names: dict[str, None] = {}
    for klass in cls.__mro__[:-1]:  # not `object`: its `__class__` is no field
        for name, value in vars(klass).items():
            if name not in _NOT_FIELDS and isinstance(
                value, types.MemberDescriptorType | types.GetSetDescriptorType
            ):
                names[name] = None
    return tuple(names)
