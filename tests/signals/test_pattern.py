"""Tests for signal patterns: `matches`, `matches_any` and `compile_patterns`."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ephemeral_actors._signals import compile_patterns, matches, matches_any
from ephemeral_actors._signals._event import MAX_NAME_LENGTH
from tests.isolated import run_isolated

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


# -- finding 22: matching is bounded (no ReDoS) --------------------------------------


def reference(value: str, pattern: str) -> bool:
    """SPEC 10.2 spelled as directly as possible: each `*` is `.*`, each `?` is `.`.

    Correct but exponential on hostile input; used only on small inputs.
    """
    if "*" not in pattern and "?" not in pattern:
        return value == pattern
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.DOTALL) is not None


@settings(max_examples=500, deadline=None)
@given(
    value=st.text(alphabet="ab.", max_size=10),
    pattern=st.text(alphabet="ab.*?", max_size=8),
)
def test_matches_agrees_with_the_reference_regex(value, pattern):
    """The bounded matcher answers exactly what the naive `.*` translation answers."""
    assert matches(value, pattern) is reference(value, pattern)


@settings(max_examples=300, deadline=None)
@given(
    value=st.text(alphabet="ab.", max_size=10),
    patterns=st.lists(st.text(alphabet="ab.*?", min_size=1, max_size=6), max_size=4),
)
def test_compiled_sets_agree_with_the_reference_regex(value, patterns):
    """A compiled option set matches when any of its globs does, by the reference."""
    matcher = compile_patterns(patterns)
    expected = any(reference(value, p.strip()) for p in patterns if p.strip())
    assert (matcher is not None and matcher(value)) is expected
    assert matches_any(value, patterns) is expected


def test_hostile_patterns_match_in_bounded_time():
    """Issue 13 #22: star-heavy globs against near-miss names finish (in a child process).

    With one `.*` per star, the 10-star case took about a second and the 20-star
    case did not finish within a minute; every entry point that matches is covered:
    `matches`, `matches_any`, a compiled option set, a bus subscription, `detect`,
    `clear_pattern`, and a coordinator's window query.
    """
    out = run_isolated(
        """
        from ephemeral_actors import (
            CoordinatorOptions, ResultCoordinator, SignalBus, current_operation, matches,
            matches_any,
        )
        from ephemeral_actors._signals import compile_patterns

        ten, twenty = "*a" * 10 + "b", "*a" * 20 + "b"
        assert not matches("a" * 30, ten)
        assert not matches("a" * 60, twenty)
        assert matches("a" * 60 + "b", twenty)
        longest = "*a" * 511 + "b"
        assert not matches("a" * 1024, longest)
        assert not matches_any("a" * 60, [twenty, "x"])
        assert not compile_patterns([twenty, ten])("a" * 200)

        seen = []
        with SignalBus() as bus:
            bus.subscribe(twenty, seen.append)
            bus.emit("a" * 60)
            assert not bus.detect(twenty)
            assert bus.clear_pattern(twenty) == 0
        assert seen == []

        options = CoordinatorOptions(cancel_on_signals=twenty, defer_on_signals=ten)
        with ResultCoordinator(lambda _: current_operation().signal("a" * 60), options) as c:
            c.submit(0).get(timeout=30)
            assert c.get_signals_by_pattern(twenty) == ()
            assert not c.has_signal_matching(twenty)
        print("ok")
        """
    )
    assert out.strip() == "ok"


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda: matches("a" * 1025, "a"), "value"),
        (lambda: matches("a", "*" * 1025), "pattern"),
        (lambda: matches_any("a" * 1025, "a"), "value"),
        (lambda: matches_any("a", ["b", "a" * 1025]), "patterns"),
        (lambda: compile_patterns("b, " + "?" * 1025), "patterns"),
    ],
)
def test_overlong_names_and_patterns_raise_value_error_naming_the_bound(call, argument):
    """Names and patterns longer than 1,024 characters are refused, saying so."""
    with pytest.raises(ValueError, match=rf"{argument}.*at most 1024 characters"):
        call()


def test_names_and_patterns_of_exactly_the_bound_are_accepted():
    """The bound is inclusive: 1,024 characters still match."""
    assert MAX_NAME_LENGTH == 1024
    name = "a" * MAX_NAME_LENGTH
    assert matches(name, name)
    assert matches(name, "*" * MAX_NAME_LENGTH)
    assert matches_any(name, ["a" * (MAX_NAME_LENGTH - 1) + "?"])
