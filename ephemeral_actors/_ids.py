"""Operation ids: positive 63-bit integers, unique within a process.

An id is a counter scrambled by a bijection of the 63-bit integers: multiplied by an
odd constant (modulo 2**63), then XORed with a salt, the xxhash64 of (process start
time, pid). A bijection cannot collide, so ids are unique in a process by
construction; the salt keeps ids from two processes (or two runs) from lining up in
shared logs, and the multiplication keeps consecutive items' ids from looking
consecutive. It costs two integer operations per id where hashing every id cost a
hash, a pack and a bytes concatenation (a twentieth of a no-op item's CPU).
"""

from __future__ import annotations

import itertools
import os
import struct
import time

import xxhash

__all__ = ["next_operation_id"]

_MASK = (1 << 63) - 1
_MULTIPLIER = 0x5851F42D4C957F2D & _MASK  # odd: multiplication is a bijection mod 2**63
_PROCESS_START = time.time()
_counter = itertools.count(1)


def _salt() -> int:
    return xxhash.xxh64_intdigest(struct.pack("<dq", _PROCESS_START, os.getpid())) & _MASK


_SALT = _salt()


def _reseed_after_fork() -> None:
    # A forked child inherits the counter; a new pid in the salt keeps its ids apart.
    global _SALT  # noqa: PLW0603
    _SALT = _salt()


os.register_at_fork(after_in_child=_reseed_after_fork)


def next_operation_id() -> int:
    """Return a fresh positive 63-bit operation id."""
    # itertools.count is atomic under the GIL, so concurrent callers never share a value.
    # The one counter value that maps to 0 is skipped (0 is not a valid id).
    return (next(_counter) * _MULTIPLIER & _MASK ^ _SALT) or next_operation_id()
