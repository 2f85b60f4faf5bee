"""Argument checks shared by every public entry point.

Each helper names the argument and the offending value, so a user reading the
traceback knows which call to fix without opening our source.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import inspect
import math
import threading
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable

__all__ = [
    "MAX_SECONDS",
    "check_int",
    "check_seconds",
    "check_seconds_or_none",
    "name_unknown_keywords",
    "unknown_keyword",
]

MAX_SECONDS = threading.TIMEOUT_MAX
"""The longest duration or timeout accepted, in seconds (about 292 years on Linux).

Every duration may end up in a blocking wait (`Event.wait`, `Lock.acquire`,
`Queue.get`), and those raise `OverflowError` above `threading.TIMEOUT_MAX`; by then
a `close()` may have half happened (issue 13, finding 20). So a larger value is
refused up front, where the message can name the argument. `None` is the way to
say "no limit" wherever a timeout allows it.
"""


def check_seconds(name: str, value: object, *, allow_zero: bool = False) -> float:
    """Return `value` as seconds, accepting int, float or `datetime.timedelta`.

    Raises:
        TypeError: `value` is a bool or not a number/timedelta.
        ValueError: `value` is negative, NaN, infinite, zero when zero is not allowed,
            or above `MAX_SECONDS` (`threading.TIMEOUT_MAX`).
    """
    if isinstance(value, _dt.timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(
            f"{name} must be seconds as an int, float or datetime.timedelta, "
            f"got {type(value).__name__} {value!r}"
        )
    else:
        seconds = float(value)
    if math.isnan(seconds) or math.isinf(seconds):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if seconds < 0 or (seconds == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound} seconds, got {value!r}")
    if seconds > MAX_SECONDS:
        raise ValueError(
            f"{name} must be at most threading.TIMEOUT_MAX ({MAX_SECONDS!r}) seconds, "
            f"got {value!r}; use None for no limit where the call allows it"
        )
    return seconds


def check_seconds_or_none(name: str, value: object, *, allow_zero: bool = True) -> float | None:
    """Like `check_seconds`, but `None` passes through (meaning "no limit")."""
    if value is None:
        return None
    return check_seconds(name, value, allow_zero=allow_zero)


def check_int(name: str, value: object, *, minimum: int) -> int:
    """Return `value` if it is an int (not a bool) of at least `minimum`.

    Raises:
        TypeError: `value` is not an int, or is a bool.
        ValueError: `value` is below `minimum`.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return value


def unknown_keyword(where: str, name: str, fields: Iterable[str], kind: str) -> TypeError:
    """The error for keyword `name`, which is none of `fields` (the `kind` fields).

    The message lists the close matches, so a typo (`max_concurency`) or a name from
    another library (`max_attempts`) says what to write instead.
    """
    close = difflib.get_close_matches(name, sorted(fields), n=3)
    hint = (
        f"; did you mean {' or '.join(repr(c) for c in close)}?"
        if close
        else f" (it is not a {kind} field)"
    )
    return TypeError(f"{where}() got an unexpected keyword argument {name!r}{hint}")


def name_unknown_keywords(cls: type, fields: Collection[str]) -> None:
    """Make `cls(...)` with a keyword that is none of `fields` say what was meant.

    A dataclass's constructor answers a typo with a bare "unexpected keyword
    argument"; this gives `cls` a `__new__` that raises `unknown_keyword`'s error
    first, and keeps the constructor's signature for `inspect` and `help()` (a
    `__new__` would otherwise be what they show). Installed after the class is built,
    as `_options._install_init` installs its `__init__`, so the documentation, which
    reads the source, shows the fields.
    """
    signature = inspect.signature(cls)
    where = cls.__name__

    def __new__(klass: type, /, *_args: object, **kwargs: object) -> object:  # noqa: N807
        for name in kwargs:
            if name not in fields:
                raise unknown_keyword(where, name, fields, where)
        return object.__new__(klass)

    __new__.__qualname__ = f"{cls.__qualname__}.__new__"
    cls.__new__ = staticmethod(__new__)  # type: ignore[assignment]  # installing it is the point
    cls.__signature__ = signature  # type: ignore[attr-defined]
