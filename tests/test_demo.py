"""`python -m ephemeral_actors demo`: the showcase runs, defers on a rate limit, and sums up."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ephemeral_actors.__main__ import build_parser, main
from ephemeral_actors._demo import run_demo

ROOT = Path(__file__).resolve().parent.parent

SUMMARY = re.compile(
    r"^summary: (\d+) accepted, (\d+) completed, (\d+) failed, 0 cancelled in (\d+\.\d+) s$",
    re.MULTILINE,
)


def unwrap(output: str) -> str:
    """Undo the summary's wrapping: continuation lines are indented 4 columns further."""
    return re.sub(r"\n {4,6}(?=\S)", " ", output)


def check_summary(output: str, items: int) -> None:
    """The summary accounts for every item, per coordinator and in total, within 80 columns."""
    tail = output[output.index("\nsummary: ") + 1 :]
    assert max(len(line) for line in tail.splitlines()) <= 80, tail
    output = unwrap(output)
    match = SUMMARY.search(output)
    assert match is not None, output
    accepted, completed, failed = (int(g) for g in match.groups()[:3])
    assert accepted == items
    assert completed + failed == items
    assert failed >= 1  # a few bodies fail on purpose
    per_coordinator = re.findall(
        r"^(orders|emails): (\d+) accepted, (\d+) completed, (\d+) failed, 0 cancelled, "
        r"0 pending, 0 worker restarts$",
        output,
        re.MULTILINE,
    )
    assert [name for name, *_ in per_coordinator] == ["orders", "emails"]
    assert sum(int(a) for _, a, _, _ in per_coordinator) == items
    # Short ids: the last 6 digits, not all 19.
    assert re.search(
        r"^  failed op \.\.\.\d{6} key=customer-\d+ \w+Error after \d+\.\d{3} s$",
        output,
        re.MULTILINE,
    )
    assert re.search(
        r"^  failed op \.\.\.\d{6} MailboxUnavailableError after \d+\.\d{3} s$",
        output,
        re.MULTILINE,
    )
    failed = {name: int(f) for name, _, _, f in per_coordinator}
    check_failure_lists(output, failed)
    # Each failed order emitted exactly one of these, and every emission is counted.
    orders_failed = failed["orders"]
    signals = re.search(r"^orders: .*\n  signals: (.*)$", output, re.MULTILINE)
    assert signals is not None, output
    counts = {name: int(n) for name, n in re.findall(r"([\w.-]+) x(\d+)", signals.group(1))}
    assert counts.get("payment.declined", 0) + counts.get("rate-limit", 0) == orders_failed
    assert "per-customer order: ok" in output
    assert re.search(
        r"^structured log records: operation\.failed x\d+ \(fields: ", output, re.MULTILINE
    )


def check_failure_lists(output: str, failed: dict[str, int]) -> None:
    """Each coordinator lists up to 3 failures and says how many more there are."""
    for name, total in failed.items():
        block = re.search(rf"^{name}: .*?(?=^\S|\Z)", output, re.MULTILINE | re.DOTALL)
        assert block is not None
        shown = len(re.findall(r"^  failed op ", block.group(0), re.MULTILINE))
        assert shown == min(3, total)
        more = re.search(
            r"^  \.\.\. and (\d+) more failed or cancelled$", block.group(0), re.MULTILINE
        )
        if total > shown:
            assert more is not None, block.group(0)
            assert int(more.group(1)) == total - shown
        else:
            assert more is None


def test_demo_in_process_plain():
    """A small plain run prints live lines for both coordinators, then the summary."""
    out = io.StringIO()
    assert run_demo(items=45, plain=True, seed=3, file=out) == 0
    output = out.getvalue()
    check_summary(output, 45)
    live = [line for line in output.splitlines() if re.match(r"\[ *\d+\.\d\ds\] ", line)]
    assert any(" orders " in line for line in live)
    assert any(" emails " in line for line in live)
    assert any(" bus: " in line for line in live)
    # No exception message reaches the output: only types are shown.
    assert "declined" not in output.replace("payment.declined", "")
    assert "mailbox unavailable" not in output


def test_demo_defers_orders_until_the_rate_limit_clears():
    """The rate limit defers orders for about the API's cooldown, then they all run."""
    out = io.StringIO()
    run_demo(items=60, plain=True, file=out)
    output = out.getvalue()
    check_summary(output, 60)
    match = re.search(r"^rate limit: orders deferred (\d+\.\d+) s", output, re.MULTILINE)
    assert match is not None, output
    # The API's cooldown at 60 items is 0.5 + 60/270 s; the watchdog clears it right after.
    assert 0.6 <= float(match.group(1)) <= 5.0
    assert re.search(r"^  signals: .*rate-limit x\d", unwrap(output), re.MULTILINE)
    assert "rate-limit.cleared" in output


def test_demo_with_too_few_orders_reports_no_rate_limit():
    """With a single event the rate limit is never reached, and the summary says so."""
    out = io.StringIO()
    run_demo(items=1, plain=True, file=out)
    assert "rate limit: not reached" in out.getvalue()
    assert SUMMARY.search(out.getvalue())


def test_demo_through_the_command_line():
    """`python -m ephemeral_actors demo --plain --items 60` runs in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "ephemeral_actors", "demo", "--plain", "--items", "60"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    check_summary(result.stdout, 60)
    assert time.monotonic() - started < 30


def test_main_runs_the_demo_plain_without_a_terminal(capsys):
    """main() picks plain output when stdout is not a terminal."""
    assert main(["demo", "--items", "9", "--seed", "1"]) == 0
    output = capsys.readouterr().out
    check_summary(output, 9)  # even 9 events show a declined card and a bounce
    assert "\x1b[" not in output  # no terminal control sequences


@pytest.mark.parametrize("items", ["0", "-3", "many"])
def test_bad_item_counts_are_usage_errors(items, capsys):
    """--items must be a whole number >= 1; anything else is an argparse usage error."""
    with pytest.raises(SystemExit) as raised:
        main(["demo", "--items", items])
    assert raised.value.code == 2
    assert "--items" in capsys.readouterr().err


def test_a_command_is_required(capsys):
    """Without a command the parser exits with a usage error listing the commands."""
    with pytest.raises(SystemExit):
        build_parser().parse_args([])
    assert "demo" in capsys.readouterr().err


@pytest.mark.parametrize("items", [0, -1, True, 2.5])
def test_run_demo_rejects_bad_items(items):
    """run_demo validates items itself, for callers that skip the command line."""
    with pytest.raises(ValueError, match="items"):
        run_demo(items=items, plain=True, file=io.StringIO())


def test_ctrl_c_exits_quietly_with_130(monkeypatch, capsys):
    """An interrupt during the demo ends the command with exit code 130, no traceback."""

    def interrupted(**_kwargs: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr("ephemeral_actors.__main__.run_demo", interrupted)
    assert main(["demo", "--items", "5"]) == 130
    assert capsys.readouterr().err == "interrupted\n"
