"""Operation ids: positive 63-bit integers, unique within a process.

An id is xxhash64 over (process start time, pid, counter). Hashing rather than
counting keeps ids from two processes (or two runs) from lining up, so ids copied
into logs from different workers do not collide by construction of a counter.
"""

from __future__ import annotations

import itertools
import os
import struct
import time

import xxhash

__all__ = ["next_operation_id"]

_MASK = (1 << 63) - 1
_PROCESS_START = time.time()
_counter = itertools.count(1)
_seed_prefix = struct.pack("<dq", _PROCESS_START, os.getpid())


def _reseed_after_fork() -> None:
    # A forked child inherits the counter; a new pid in the prefix keeps its ids apart.
    global _seed_prefix  # noqa: PLW0603
    _seed_prefix = struct.pack("<dq", _PROCESS_START, os.getpid())


os.register_at_fork(after_in_child=_reseed_after_fork)
_pack = struct.Struct("<Q").pack
_digest = xxhash.xxh64_intdigest


def next_operation_id() -> int:
    """Return a fresh positive 63-bit operation id."""
    # itertools.count is atomic under the GIL, so concurrent callers never share a value.
    return (_digest(_seed_prefix + _pack(next(_counter))) & _MASK) or 1
