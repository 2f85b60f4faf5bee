"""Tests for signal patterns: `matches`, `matches_any` and `compile_patterns`."""

from __future__ import annotations

import pytest

from ephemeral_actors._signals import compile_patterns, matches, matches_any

# (function, value, pattern(s), expected)
CASES = [
    # exact names
    (matches, "a.b", "a.b", True),
    (matches, "a.b", "a.c", False),
    (matches, "a.b", "a.b.c", False),
    # `*`: any run, empty and dots included
    (matches, "a.b.c", "a.*", True),
    (matches, "a.", "a.*", True),
    (matches, "a", "a*", True),
    (matches, "x.y.z", "*", True),
    (matches, "a.b.c", "a*c", True),
    (matches, "a.b.c", "a**c", True),
    # `?`: exactly one character
    (matches, "ab", "a?", True),
    (matches, "a.", "a?", True),
    (matches, "a", "a?", False),
    (matches, "abc", "a?", False),
    # `[` and regex characters are literal
    (matches, "q[0]", "q[0]", True),
    (matches, "q0", "q[0]", False),
    (matches, "q[0].full", "q[0].*", True),
    (matches, "q1", "q[0-9]", False),
    (matches, "a+b", "a+b", True),
    (matches, "aab", "a+b", False),
    (matches, "axb", "a.b*", False),
    (matches, "a\\b", "a\\?", True),
    (matches, "a(b)|c", "a(b)|*", True),
    # anchored at both ends
    (matches, "xa.b", "a.*", False),
    (matches, "a.bx", "*.b", False),
    (matches, "a.b", "b", False),
    # case-sensitive
    (matches, "A.b", "a.*", False),
    (matches, "Rate", "rate", False),
    # empty strings
    (matches, "", "", True),
    (matches, "", "*", True),
    (matches, "", "?", False),
    (matches, "a", "", False),
    # a query pattern is one pattern: commas are literal
    (matches, "a,b", "a,b", True),
    (matches, "a", "a,b", False),
    (matches, "a, b", "a,*", True),
    # matches_any: comma lists, trimming, empty tokens
    (matches_any, "b", "a,b", True),
    (matches_any, "b", " a , b ", True),
    (matches_any, "c", "a,,b,", False),
    (matches_any, "a b", " a b ", True),
    (matches_any, "x.y", ["a", "x.*"], True),
    (matches_any, "x.y", ("a", "b, x.?"), True),
    (matches_any, "x.y", frozenset({"x.y"}), True),
    (matches_any, "q[0]", "q[0],other", True),
    (matches_any, "", "*", True),
    # None and empty sets match nothing
    (matches_any, "a", None, False),
    (matches_any, "a", "", False),
    (matches_any, "", "", False),
    (matches_any, "a", [], False),
    (matches_any, "a", " , ,", False),
    (matches_any, "a", ["", " "], False),
]


@pytest.mark.parametrize(
    ("function", "value", "pattern", "expected"),
    CASES,
    ids=[f"{f.__name__}({v!r},{p!r})" for f, v, p, _ in CASES],
)
def test_pattern_table(function, value, pattern, expected):
    """Each row of the table matches (or not) exactly as SPEC 10.2 says."""
    assert function(value, pattern) is expected
    if function is matches_any:
        matcher = compile_patterns(pattern)
        assert (matcher is not None and matcher(value)) is expected


def test_compile_patterns_returns_none_for_empty_sets():
    """An option set with no tokens compiles to None, so callers can skip checks."""
    assert compile_patterns(None) is None
    assert compile_patterns(" , ") is None
    assert compile_patterns([]) is None


def test_compile_patterns_is_cached_across_spellings():
    """The same token set, however written, compiles once."""
    assert compile_patterns("a, b*") is compile_patterns(["b*", "a"])


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: matches(1, "a"), "value"),
        (lambda: matches("a", None), "pattern"),
        (lambda: matches_any(b"a", "a"), "value"),
        (lambda: matches_any("a", 5), "patterns"),
        (lambda: matches_any("a", ["a", 1]), "patterns"),
        (lambda: compile_patterns(b"a"), "patterns"),
    ],
)
def test_bad_argument_types_raise_type_error_naming_the_argument(call, argument):
    """A non-str value or pattern raises TypeError naming the argument."""
    with pytest.raises(TypeError, match=argument):
        call()
