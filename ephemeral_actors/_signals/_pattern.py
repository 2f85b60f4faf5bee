"""Signal-name patterns: exact names, or anchored globs where `*` and `?` are special.

`fnmatch` would also treat `[...]` as a character class, so a signal such as
`queue[0].full` could never be matched literally; here `*` and `?` are the only
special characters and everything else is escaped before it reaches `re`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable

__all__ = ["compile_patterns", "matches", "matches_any"]

_WILDCARDS = frozenset("*?")


def matches(value: str, pattern: str) -> bool:
    """Return whether the signal name `value` matches one `pattern`.

    A pattern without `*` or `?` must equal `value`. Otherwise it is an anchored,
    case-sensitive glob: `?` matches exactly one character and `*` any run of
    characters, dots included. No other character is special, and a comma is a
    literal comma (use `matches_any` for comma lists).

    Args:
        value: The signal name to test.
        pattern: An exact name or a glob.

    Returns:
        True if `value` matches `pattern`.

    Raises:
        TypeError: `value` or `pattern` is not a str.
    """
    _check_str("value", value)
    _check_str("pattern", pattern)
    regex = _glob(pattern)
    return value == pattern if regex is None else regex.fullmatch(value) is not None


def matches_any(value: str, patterns: str | Iterable[str] | None) -> bool:
    """Return whether the signal name `value` matches any of `patterns`.

    Each entry of `patterns` may be a comma-separated list; tokens are trimmed and
    empty tokens ignored. Each token is matched as by `matches`.

    Args:
        value: The signal name to test.
        patterns: None, one str, or an iterable of str.

    Returns:
        True if a token matches; False for None or when there are no tokens.

    Raises:
        TypeError: `value` is not a str, or `patterns` is not None, a str or an
            iterable of str.
    """
    _check_str("value", value)
    matcher = compile_patterns(patterns)
    return matcher is not None and matcher(value)


def compile_patterns(patterns: str | Iterable[str] | None) -> Callable[[str], bool] | None:
    """Build a matcher for an option set once, so each signal check is cheap.

    The returned callable skips argument checks; pass it only signal names.

    Args:
        patterns: As for `matches_any`.

    Returns:
        A callable answering `matches_any(value, patterns)`, or None when
        `patterns` holds no tokens (nothing can match).

    Raises:
        TypeError: `patterns` is not None, a str or an iterable of str.
    """
    return _compile_tokens(_tokens(patterns))


def _tokens(patterns: object) -> frozenset[str]:
    if patterns is None:
        return frozenset()
    if isinstance(patterns, str):
        entries: tuple[str, ...] = (patterns,)
    elif isinstance(patterns, Iterable):
        entries = tuple(patterns)
        for entry in entries:
            if not isinstance(entry, str):
                raise TypeError(
                    f"patterns must hold only str, got {type(entry).__name__} {entry!r} "
                    f"in {patterns!r}"
                )
    else:
        raise TypeError(
            "patterns must be None, a str or an iterable of str, "
            f"got {type(patterns).__name__} {patterns!r}"
        )
    stripped = (token.strip() for entry in entries for token in entry.split(","))
    return frozenset(token for token in stripped if token)


@functools.lru_cache(maxsize=1024)
def _compile_tokens(tokens: frozenset[str]) -> Callable[[str], bool] | None:
    if not tokens:
        return None
    exact = frozenset(token for token in tokens if not _WILDCARDS.intersection(token))
    globs = sorted(tokens - exact)
    regex = (
        re.compile("|".join(f"(?:{_translate(glob)})" for glob in globs), re.DOTALL)
        if globs
        else None
    )

    def match(value: str) -> bool:
        return value in exact or (regex is not None and regex.fullmatch(value) is not None)

    return match


@functools.lru_cache(maxsize=1024)
def _glob(pattern: str) -> re.Pattern[str] | None:
    if not _WILDCARDS.intersection(pattern):
        return None
    return re.compile(_translate(pattern), re.DOTALL)


def _translate(glob: str) -> str:
    parts: list[str] = []
    for char in glob:
        if char == "*":
            # A run of stars means the same as one; collapsing it keeps the regex
            # from backtracking polynomially on names that almost match.
            if not parts or parts[-1] != ".*":
                parts.append(".*")
        elif char == "?":
            parts.append(".")
        else:
            parts.append(re.escape(char))
    return "".join(parts)


def _check_str(argument: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str, got {type(value).__name__} {value!r}")
