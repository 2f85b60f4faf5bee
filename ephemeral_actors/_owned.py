"""Ownership check mode for what an actor's fields hold (SPEC 14).

An actor's own fields are checked where they are assigned (`Core.__setattr__`,
`KeyChild`'s and the bus's). Most of its state, though, is written through what those
fields hold: the window, the backlogs and their registry of key children, the waiters,
the token buckets, the schedule of delayed items. In ownership check mode this module
checks those writes too:

- `checked_writes(owner_of, *mutators)` decorates a structure an actor owns: each
  named mutating method, and every field assignment, checks that it runs in the turn of
  the actor `owner_of(structure)` names;
- `owned_list`, `owned_deque` and `owned_dict` make an actor's containers: lists,
  deques and dicts whose mutating methods check the same (reads are not checked: a
  state query is an ask, answered in the owner's turn, and the counters are plain
  reads of one field each, see docs/design.md).

A structure or container whose owner is not built yet (a core in its `__init__`),
or not named yet (`claim` has not run), or already freed, is not checked: nothing else
can reach it then. C code that writes a list in place (`heapq`) is not seen.

Outside the mode the decorator returns the class unchanged and the factories a plain
container; construction on the create + close and new-key paths tests
`CHECK_OWNERSHIP` before calling them (a call per container cost 9 % of an unused
coordinator's create + close), so outside the mode nothing here runs per item.
"""

from __future__ import annotations

import collections
import functools
import weakref
from typing import TYPE_CHECKING, Any, TypeVar

from ephemeral_actors._mailbox import CHECK_OWNERSHIP, check_owner

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["checked_writes", "claim", "owned_deque", "owned_dict", "owned_list", "owner_slot"]

_T = TypeVar("_T")
_K = TypeVar("_K")
_V = TypeVar("_V")
_C = TypeVar("_C", bound=type)


def _check(owner: object, what: str) -> None:
    """Check that this thread runs `owner`'s turn, once `owner` is built and alive."""
    if owner is None:
        return
    if type(owner) is weakref.ReferenceType:
        owner = owner()
        if owner is None:
            return
    try:
        built = getattr(owner, "_built", True)
    except ReferenceError:  # a weak proxy to an owner already freed
        return
    if built:
        check_owner(owner, what)


def owner_slot(structure: Any) -> object:
    """The owner `claim` gave `structure` (None until then)."""
    return getattr(structure, "owner", None)


def claim(structure: Any, owner: object) -> None:
    """Ownership check mode: `owner`'s turn is the only one that may write `structure`.

    For structures built before their owner can be named (a core's window, made in
    the core's `__init__`) or built by another structure (a key's token bucket). The
    owner is held weakly, so a checked structure never keeps its actor alive.
    """
    if CHECK_OWNERSHIP:
        structure.owner = weakref.ref(owner)


def checked_writes(owner_of: Callable[[Any], object], *mutators: str) -> Callable[[_C], _C]:
    """Ownership check mode: the decorated class's writes check their owner's turn.

    Args:
        owner_of: Given an instance, its owning actor (or a weak reference to it, or
            None while it has none).
        *mutators: The methods that write the instance's state.
    """

    def decorate(cls: _C) -> _C:
        if not CHECK_OWNERSHIP:
            return cls
        name = cls.__name__
        for method_name in mutators:
            method = cls.__dict__[method_name]  # a KeyError names a mutator that moved

            @functools.wraps(method)
            def checked(
                self: Any, *args: Any, __method: Any = method, __name: str = method_name, **kw: Any
            ) -> Any:
                _check(_owner_or_none(owner_of, self), f"{name}.{__name}()")
                return __method(self, *args, **kw)

            setattr(cls, method_name, checked)
        assign: Any = cls.__setattr__

        def __setattr__(self: Any, field: str, value: Any) -> None:  # noqa: N807
            if field != "owner":
                _check(_owner_or_none(owner_of, self), f"{name}.{field}")
            assign(self, field, value)

        cls.__setattr__ = __setattr__  # type: ignore[assignment]
        return cls

    return decorate


def _owner_or_none(owner_of: Callable[[Any], object], structure: Any) -> object:
    try:
        return owner_of(structure)
    except AttributeError:  # in its `__init__`, before the field naming its owner
        return None


def _owner_ref(owner: object, via: Callable[[Any], object] | None) -> tuple[Any, Any]:
    # Weak, so that a checked container never keeps its actor, or the structure
    # holding it, alive (a closed coordinator is freed by reference counting).
    return weakref.ref(owner), via


def _write(owner: tuple[Any, Any], what: str) -> None:
    ref, via = owner
    holder = ref()
    if holder is not None:
        _check(_owner_or_none(via, holder) if via is not None else holder, what)


class _OwnedList(list[_T]):
    def __init__(self, owner: tuple[Any, Any]) -> None:
        super().__init__()
        self._owner = owner


class _OwnedDeque(collections.deque[_T]):
    def __init__(self, owner: tuple[Any, Any], maxlen: int | None = None) -> None:
        super().__init__(maxlen=maxlen)
        self._owner = owner


class _OwnedDict(dict[_K, _V]):
    def __init__(self, owner: tuple[Any, Any]) -> None:
        super().__init__()
        self._owner = owner


def _checking(cls: type, *names: str) -> None:
    """Give `cls` (an `_Owned*` container) mutators that check before they write."""
    base = cls.__mro__[1]
    kind = base.__name__
    for method_name in names:
        method = getattr(base, method_name)

        def checked(
            self: Any, *args: Any, __method: Any = method, __name: str = method_name, **kw: Any
        ) -> Any:
            _write(self._owner, f"{kind}.{__name}()")
            return __method(self, *args, **kw)

        setattr(cls, method_name, checked)


_checking(
    _OwnedList,
    "append", "extend", "insert", "remove", "pop", "clear", "sort", "reverse",
    "__setitem__", "__delitem__", "__iadd__",
)  # fmt: skip
_checking(
    _OwnedDeque,
    "append", "appendleft", "extend", "extendleft", "pop", "popleft", "remove", "clear",
    "rotate", "__setitem__", "__delitem__", "__iadd__",
)  # fmt: skip
_checking(
    _OwnedDict,
    "__setitem__", "__delitem__", "pop", "popitem", "clear", "update", "setdefault",
)  # fmt: skip


def owned_list(owner: object, via: Callable[[Any], object] | None = None) -> list[Any]:
    """A new list that only its owner's turn may write (checked in ownership check mode).

    Args:
        owner: The owning actor; or, with `via`, the structure holding the list.
        via: Given `owner`, the actor that owns it (as for `checked_writes`).
    """
    return _OwnedList(_owner_ref(owner, via)) if CHECK_OWNERSHIP else []


def owned_deque(
    owner: object, via: Callable[[Any], object] | None = None, maxlen: int | None = None
) -> collections.deque[Any]:
    """A new deque that only its owner's turn may write (see `owned_list`)."""
    if CHECK_OWNERSHIP:
        return _OwnedDeque(_owner_ref(owner, via), maxlen)
    return collections.deque(maxlen=maxlen)


def owned_dict(owner: object, via: Callable[[Any], object] | None = None) -> dict[Any, Any]:
    """A new dict that only its owner's turn may write (see `owned_list`)."""
    return _OwnedDict(_owner_ref(owner, via)) if CHECK_OWNERSHIP else {}
