"""Signal-name patterns: exact names, or anchored globs where `*` and `?` are special.

`fnmatch` would also treat `[...]` as a character class, so a signal such as
`queue[0].full` could never be matched literally; here `*` and `?` are the only
special characters and everything else is escaped before it reaches `re`.

Matching costs at most O(len(value) * len(pattern)) steps, whatever the input.
Translating each `*` to a plain `.*` does not: on a name that almost matches, the
regex engine retries every way of splitting the name between the stars, so
`matches("a" * 30, "*a" * 10 + "b")` took a second and twenty stars never finished.
Signal names are often built from request data, so that was a denial of service on
the bus actor (issue 13, finding 22). See `_translate` for how the bound is kept.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable

from ephemeral_actors._signals._event import check_length

__all__ = ["compile_patterns", "matches", "matches_any", "pattern_tokens"]

_WILDCARDS = frozenset("*?")


def matches(value: str, pattern: str) -> bool:
    """Return whether the signal name `value` matches one `pattern`.

    A pattern without `*` or `?` must equal `value`. Otherwise it is an anchored,
    case-sensitive glob: `?` matches exactly one character and `*` any run of
    characters, dots included. No other character is special, and a comma is a
    literal comma (use `matches_any` for comma lists). The cost is at most
    proportional to `len(value) * len(pattern)`.

    Args:
        value: The signal name to test.
        pattern: An exact name or a glob.

    Returns:
        True if `value` matches `pattern`.

    Raises:
        TypeError: `value` or `pattern` is not a str.
        ValueError: `value` or `pattern` is longer than 1,024 characters.
    """
    _check_str("value", value)
    _check_str("pattern", pattern)
    check_length("value", value)
    check_length("pattern", pattern)
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
        ValueError: `value` or a pattern token is longer than 1,024 characters.
    """
    _check_str("value", value)
    check_length("value", value)
    matcher = compile_patterns(patterns)
    return matcher is not None and matcher(value)


def compile_patterns(
    patterns: str | Iterable[str] | None, *, argument: str = "patterns"
) -> Callable[[str], bool] | None:
    """Build a matcher for an option set once, so each signal check is cheap.

    The returned callable skips argument checks; pass it only signal names.

    Args:
        patterns: As for `matches_any`.
        argument: The name error messages give `patterns` (the caller's own
            argument name, such as `pattern` for `SignalBus.subscribe`).

    Returns:
        A callable answering `matches_any(value, patterns)`, or None when
        `patterns` holds no tokens (nothing can match).

    Raises:
        TypeError: `patterns` is not None, a str or an iterable of str.
        ValueError: A token is longer than 1,024 characters.
    """
    return _compile_tokens(pattern_tokens(argument, patterns))


def pattern_tokens(argument: str, patterns: object) -> frozenset[str]:
    """Return the trimmed, non-empty tokens of a pattern set, checked.

    Option validation calls this with the field name, so a bad set is refused when
    the options are built rather than when the first signal arrives.

    Args:
        argument: The argument or field name to put in error messages.
        patterns: As for `matches_any`.

    Returns:
        The tokens (possibly none).

    Raises:
        TypeError: `patterns` is not None, a str or an iterable of str.
        ValueError: A token is longer than 1,024 characters.
    """
    if patterns is None:
        return frozenset()
    if isinstance(patterns, str):
        entries: tuple[str, ...] = (patterns,)
    elif isinstance(patterns, Iterable):
        entries = tuple(patterns)
        for entry in entries:
            if not isinstance(entry, str):
                raise TypeError(
                    f"{argument} must hold only str, got {type(entry).__name__} {entry!r} "
                    f"in {patterns!r}"
                )
    else:
        raise TypeError(
            f"{argument} must be None, a str or an iterable of str, "
            f"got {type(patterns).__name__} {patterns!r}"
        )
    stripped = (token.strip() for entry in entries for token in entry.split(","))
    tokens = frozenset(token for token in stripped if token)
    for token in tokens:
        check_length(f"each pattern in {argument}", token)
    return tokens


@functools.lru_cache(maxsize=1024)
def _compile_tokens(tokens: frozenset[str]) -> Callable[[str], bool] | None:
    if not tokens:
        return None
    exact = frozenset(token for token in tokens if not _WILDCARDS.intersection(token))
    globs = sorted(tokens - exact)
    # One alternation of bounded globs stays bounded: `fullmatch` tries each
    # alternative once from position 0, so the cost is the sum of theirs.
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
    """Translate `glob` to a regex that `fullmatch` runs in O(len(value) * len(glob)).

    Split at the stars, the glob is `head * s1 * s2 * ... * tail`, where every
    segment has a fixed width (`?` is one character). `head` must sit at the start
    and `tail` at the end. Each middle segment can be placed at its *leftmost*
    occurrence after the previous one: any later placement leaves less room for the
    segments after it and gains nothing, because a fixed-width segment consumes the
    same amount wherever it lands. So `(?>.*?s)` finds that leftmost occurrence and
    the atomic group `(?>...)` forbids the engine from ever coming back to try a later
    one. That retrying, nested across every star, is what made `.*a.*a.*b`
    exponential. Each segment is now searched once, forward, costing
    O(len(value) * len(segment)); the final `.*tail` backs off at most len(value)
    times. (This is the technique `fnmatch.translate` uses since Python 3.11.)
    """
    head, *rest = glob.split("*")
    parts = [_fixed(head)]
    if rest:
        *middle, tail = rest
        # Empty segments come from runs of stars, which mean the same as one star.
        parts.extend(f"(?>.*?{_fixed(segment)})" for segment in middle if segment)
        parts.append(f".*{_fixed(tail)}")
    return "".join(parts)


def _fixed(segment: str) -> str:
    return "".join("." if char == "?" else re.escape(char) for char in segment)


def _check_str(argument: str, value: object) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be a str, got {type(value).__name__} {value!r}")
