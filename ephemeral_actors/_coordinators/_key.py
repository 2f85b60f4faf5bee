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

from typing import Any

__all__ = ["STABLE_KEY_TYPES", "CapturedKey", "capture"]

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
