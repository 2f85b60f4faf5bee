"""`CapturedKey`: an item's key as the key selector returned it at intake.

The supervisor files per-key children, idle keys and pending counts under keys. A
user's key object may change its hash after intake (a mutable key: a bug, but one
a coordinator must survive). Looked up again with its new hash, it would not be
found: its child would never hear that the running item ended, the key's later
items would never start, and passivating it would raise inside the supervisor's
turn (issue 13, finding 7). So the key is captured once, with the hash it had
when the item was offered, and every lookup uses that: an item always belongs to
the key it had at intake. Hashing the capture also runs no user code in the
supervisor's turn; only equality between two different key objects with the same
hash does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["STABLE_KEY_TYPES", "CapturedKey", "capture", "file_key", "keys_of"]

STABLE_KEY_TYPES = frozenset({int, str, bytes, float, bool, complex, type(None)})
"""Key types whose hash cannot change: filed as they are, with no capture around them.

Most keys are ints and strings; a capture would cost an object per item and a Python
`__hash__`/`__eq__` call in every dict lookup of the key.
"""


class CapturedKey:
    """A key and the hash it had when captured; compares by that hash, then by the key.

    Its hash is the captured one, so a capture always finds its own dict entry.
    """

    __slots__ = ("hash", "raw")

    def __init__(self, raw: Any, key_hash: int) -> None:
        self.raw = raw
        self.hash = key_hash

    def __hash__(self) -> int:
        return self.hash

    def __eq__(self, other: object) -> bool:
        if type(other) is CapturedKey:
            if self.hash != other.hash:
                return False
            other = other.raw
        # A plain key equal to the captured one matches it too (a dict lookup by the
        # raw key finds the capture while its hash has not changed).
        if self.raw is other:
            return True
        try:
            return bool(self.raw == other)
        except Exception:
            return False  # a key whose __eq__ raises is simply another key

    def __str__(self) -> str:
        return str(self.raw)

    def __repr__(self) -> str:
        return f"CapturedKey({self.raw!r})"


def capture(raw: Any) -> Any:
    """Capture `raw` with its current hash (a key of a stable type is its own capture).

    Raises:
        TypeError: `raw` is unhashable.
    """
    if type(raw) in STABLE_KEY_TYPES or type(raw) is CapturedKey:
        return raw
    return CapturedKey(raw, hash(raw))


def file_key(raw: Any) -> tuple[Any, str]:
    """`raw` (what the key selector returned) as filed, and as shown in records.

    Raises:
        TypeError: `raw` is unhashable, said in the key selector's terms.
    """
    try:
        # The key is filed under the hash it has now, whatever happens to it later.
        captured = capture(raw)
    except TypeError as exc:
        raise TypeError(
            f"key_selector returned an unhashable key of type {type(raw).__name__}: "
            "keys must be hashable"
        ) from exc
    return captured, str(raw)


def keys_of(
    key_of: Callable[[Any], Any], items: Iterable[Any]
) -> tuple[list[tuple[Any, str, Any]], Exception | None]:
    """Each item with its key, up to the first whose key fails; and that failure.

    Runs in the sender's thread: the selector is user code, which never runs in the
    supervisor's turn. The items come as `(item, shown key, filed key)`; the failure is
    the selector's exception, or the `TypeError` of an unhashable key.
    """
    keyed: list[tuple[Any, str, Any]] = []
    append = keyed.append
    try:
        for item in items:
            raw = key_of(item)
            # `file_key` written out for a key of a stable type (its own capture).
            if type(raw) in STABLE_KEY_TYPES:
                append((item, str(raw), raw))
            else:
                filed, shown = file_key(raw)
                append((item, shown, filed))
    except Exception as exc:
        return keyed, exc
    return keyed, None
