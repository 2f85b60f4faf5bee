"""The console: rich tables, the live view (plain and rich) and the text summary."""

from __future__ import annotations

import io
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from rich.console import Console
from rich.table import Table

from ephemeral_actors import (
    ActorStats,
    CoordinatorOptions,
    CoordinatorRegistry,
    SignalBus,
    current_operation,
)
from ephemeral_actors.console import _Throughput, live_view, render_table, summary
from tests.conftest import WAIT, PinnedBus, run_all


class SecretPayloadError(ValueError):
    """A failure whose message quotes the item, as real ones often do."""


@pytest.fixture
def bus() -> Iterator[SignalBus]:
    with SignalBus(name="console-test") as b:
        yield b


def body_with_failures(n: int) -> None:
    op = current_operation()
    if n % 4 == 0:
        op.signal("item.rejected")
        raise SecretPayloadError(f"card number 4111-{n:04d} declined")
    if n % 7 == 0:
        raise KeyError(f"customer-{n}")
    op.signal("item.done")


def rendered(table: Table, width: int = 120) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(table)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def cells(text: str, name: str) -> list[str]:
    """The cells of the table row that starts with `name`."""
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[0] == name:
            return parts
    raise AssertionError(f"no row for {name!r} in:\n{text}")


def live(source: Any, **kwargs: Any) -> tuple[threading.Event, threading.Thread, io.StringIO]:
    out = io.StringIO()
    stop = threading.Event()
    thread = threading.Thread(
        target=live_view, args=(source,), kwargs={"stop": stop, "file": out, **kwargs}
    )
    thread.start()
    return stop, thread, out


def finish(stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    thread.join(WAIT)
    assert not thread.is_alive()


# -- render_table ------------------------------------------------------------------------


def test_render_table_shows_each_coordinator(make, bus):
    """The table has one row per coordinator with its counters, keys and the bus's signals."""
    work = make(body_with_failures, name="work", max_concurrency=3, signals=bus)
    keyed = make(body_with_failures, key=lambda n: n % 3, name="keyed", max_concurrency=2)
    run_all(work, list(range(20)))
    run_all(keyed, list(range(9)))

    text = rendered(render_table([work, keyed], bus=bus, throughput={"work": 12.5}))

    # coordinator state pending active keys done failed cancel items/s
    assert cells(text, "work") == ["work", "drained", "0", "0/3", "-", "13", "7", "0", "12.5"]
    assert cells(text, "keyed") == ["keyed", "drained", "0", "0/2", "3", "5", "4", "0", "-"]
    assert "work: item.rejected, item.done" in text or "work: item.done, item.rejected" in text
    caption = " ".join(text.split())  # the bus line may wrap
    assert re.search(
        r"bus console-test: mailbox 0 · \d+ processed; recent: .*item\.(done|rejected) "
        r"\(\d+\.\ds ago\)",
        caption,
    )


def last_frame(source: Any, *, plain: bool, **kwargs: Any) -> str:
    """What live_view draws when `stop` is already set: its last frame, and only that."""
    out = io.StringIO()
    stop = threading.Event()
    stop.set()
    live_view(source, plain=plain, stop=stop, file=out, refresh=0.01, **kwargs)
    return out.getvalue()


def test_mailbox_depth_shows_per_role_once_messages_wait(make):
    """SPEC 14: the view shows how many messages wait in the coordinator's actors'
    mailboxes, in all and per role, as actor_stats() says; a paused keyed coordinator's
    items wait in its key children."""
    keyed = make(lambda _n: None, key=lambda n: n % 2, name="held")
    keyed.pause()
    for n in range(5):
        keyed.enqueue(n)
    depths = {row.role: row.mailbox_depth for row in keyed.actor_stats()}
    assert depths == {"supervisor": 0, "worker": 0, "key": 5, "callbacks": 0}
    # In actor_stats() order, as the view lists them.
    roles = [(row.role, row.mailbox_depth) for row in keyed.actor_stats()]
    short = {"supervisor": "sup", "worker": "wrk", "key": "key", "callbacks": "cb"}

    text = rendered(render_table([keyed]))
    per_role = " · ".join(f"{short[role]} {depth}" for role, depth in roles)
    assert f"held: mailbox 5 ({per_role})" in text
    assert "held: mailbox 5 (sup 0 · wrk 0 · key 5 · cb 0)" in text
    assert f"held: mailbox 5 ({per_role})" in last_frame(keyed, plain=False)

    line = last_frame(keyed, plain=True)
    per_role = ", ".join(f"{short[role]} {depth}" for role, depth in roles)
    assert line.rstrip().endswith(f" mailbox=5 ({per_role})")
    assert line.rstrip().endswith(" mailbox=5 (sup 0, wrk 0, key 5, cb 0)")
    keyed.resume()
    idle = make(lambda _n: None, name="idle")
    assert "idle: mailbox" not in rendered(render_table([idle]))
    assert last_frame(idle, plain=True).rstrip().endswith(" mailbox=0")


def test_each_bus_in_view_has_a_line_with_its_actor_figures(make, bus):
    """The bus given to the view and the coordinators' buses each get one line (a shared
    bus once), with mailbox depth and messages processed as actor_stats() says, in the
    table's caption and in plain lines."""
    with PinnedBus(ActorStats("bus", 1, 7, 42), name="deep") as deep:
        first = make(lambda _n: None, name="first", signals=deep)
        second = make(lambda _n: None, name="second", signals=deep)
        alone = make(lambda _n: None, name="alone")
        bus.emit("deploy.started")
        # Read before the view's own read of the bus's recent signals (a message).
        processed = bus.actor_stats().messages_processed
        text = rendered(render_table([first, second, alone], bus=bus), width=200)
        lines = text.splitlines()
        own = [line.strip() for line in lines if line.startswith("bus console-test:")]
        assert len(own) == 1
        assert re.fullmatch(
            rf"bus console-test: mailbox 0 · {processed} processed; "
            r"recent: deploy\.started \(\d+\.\ds ago\)",
            own[0],
        )
        assert [line.strip() for line in lines if line.startswith("bus deep")] == [
            "bus deep: mailbox 7 · 42 processed"
        ]
        table = last_frame([first, second, alone], plain=False)
        assert table.count("bus deep: mailbox 7 · 42 processed") == 1

        processed = bus.actor_stats().messages_processed
        plain = last_frame([first, second, alone], plain=True, bus=bus).splitlines()
        bus_lines = [line.split("] ", 1)[1] for line in plain if "] bus " in line]
        assert bus_lines == [
            f"bus console-test running mailbox=0 processed={processed}",
            "bus deep running mailbox=7 processed=42",
        ]
        assert re.search(r"\] bus: deploy\.started \(\d+\.\ds ago\)$", plain[-1])


def test_an_unnamed_or_closed_bus_is_told_apart(make):
    """A bus without a name is shown by its id; a closed one says so, figures kept."""
    unnamed = SignalBus()
    unnamed.emit("once")
    work = make(lambda _n: None, name="user", signals=unnamed)
    unnamed.close()
    stats = unnamed.actor_stats()
    assert stats.actors == 0
    label = f"unnamed-{id(unnamed):x}"
    text = rendered(render_table(work), width=200)
    assert f"bus {label} (closed): mailbox 0 · {stats.messages_processed} processed" in text
    plain = last_frame(work, plain=True)
    assert f"] bus {label} closed mailbox=0 processed={stats.messages_processed}" in plain


def test_render_table_states_follow_the_lifecycle(make):
    """A running, a paused and a completing coordinator each show their state."""
    gate = threading.Event()
    running = make(lambda _n: None, name="running")
    paused = make(lambda _n: None, name="paused")
    paused.pause()
    completing = make(lambda _n: gate.wait(WAIT), name="completing", max_concurrency=1)
    completing.enqueue(1)
    completing.complete()
    try:
        text = rendered(render_table([running, paused, completing]))
        assert cells(text, "running")[1] == "running"
        assert cells(text, "paused")[1] == "paused"
        assert cells(text, "completing")[1] == "completing"
    finally:
        gate.set()


def test_render_table_does_not_interpret_markup_in_names(make):
    """A coordinator name that looks like rich markup is shown as written."""
    odd = make(lambda _n: None, name="[red]odd[/red]")
    assert "[red]odd[/red]" in rendered(render_table(odd))


def test_render_table_reads_a_registry(make):
    """A registry source shows the coordinators it has created."""
    with CoordinatorRegistry() as registry:
        registry.register_work("made", lambda _n: None)
        registry.register_work("never", lambda _n: None)
        registry.get("made")
        text = rendered(render_table(registry))
    assert "made" in text
    assert "never" not in text


# -- summary -------------------------------------------------------------------------------


def test_summary_has_counts_signals_and_failures_without_messages(make, bus):
    """The summary lists counts, signals and failure types — never exception messages."""
    keyed = make(body_with_failures, key=lambda n: f"k{n % 2}", name="keyed", signals=bus)
    run_all(keyed, list(range(15)))

    text = summary([keyed], bus=bus, failures=2)

    lines = text.splitlines()
    assert lines[0] == (
        "keyed: 15 accepted, 9 completed, 6 failed, 0 cancelled, 0 pending, 0 worker restarts"
    )
    assert lines[1] == "  signals in window: item.done x9, item.rejected x4"
    failures = [line for line in lines if line.startswith("  failed op ")]
    assert len(failures) == 2
    # One of each error type is picked before a second of the same type.
    assert {line.split()[4] for line in failures} == {"SecretPayloadError", "KeyError"}
    assert all(
        re.fullmatch(r"  failed op \d+ key=k[01] \w+ after \d+\.\d{3} s", f) for f in failures
    )
    # The message's own text, not its digits alone: a random 19-digit operation id in
    # the summary can contain "4111" (it did, once in a few hundred runs).
    assert "card number" not in text
    assert "4111-" not in text
    assert "customer-" not in text
    assert lines[-1].startswith("bus: ")


def test_summary_rejects_a_bad_failures_count(make):
    """failures must be a non-negative int."""
    work = make(lambda _n: None)
    with pytest.raises(ValueError, match="failures"):
        summary(work, failures=-1)


# -- live_view -------------------------------------------------------------------------------


def test_plain_live_view_prints_a_line_per_coordinator_until_stopped(make):
    """In plain mode each refresh prints one line per coordinator; the last shows the end."""
    release = threading.Event()
    work = make(lambda _n: release.wait(WAIT), name="slow", max_concurrency=2)
    for n in range(6):
        work.enqueue(n)
    stop, thread, out = live(work, plain=True, refresh=0.02)
    deadline = time.monotonic() + WAIT
    while "pending=4" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    work.complete()
    work.drain(WAIT)
    finish(stop, thread)

    lines = out.getvalue().splitlines()
    assert all(line.startswith("[") and " slow " in line for line in lines)
    assert any("running pending=4 active=2/2 completed=0" in line for line in lines)
    assert "drained pending=0 active=0/2 completed=6 failed=0 cancelled=0" in lines[-1]


def test_live_view_without_a_terminal_prints_plain_lines(make):
    """With plain=None and output that is not a terminal, the view prints plain lines."""
    work = make(lambda _n: None, name="piped")
    stop, thread, out = live(work, refresh=0.01)
    finish(stop, thread)
    assert re.match(r"\[ *\d+\.\d\ds\] piped running pending=0", out.getvalue())


def test_live_view_throughput_follows_the_work(make):
    """The items/s column reflects operations ending between refreshes."""
    work = make(lambda _n: time.sleep(0.005), name="steady", max_concurrency=1)
    stop, thread, out = live(work, plain=True, refresh=0.05)
    for n in range(40):
        work.enqueue(n)
    work.complete()
    work.drain(WAIT)
    finish(stop, thread)
    rates = [float(m) for m in re.findall(r"rate=(\d+\.\d)/s", out.getvalue())]
    assert max(rates) > 10


def test_live_view_bus_line_is_printed_when_it_changes(make, bus):
    """In plain mode the bus line appears when the bus saw something new, and at the end."""
    work = make(lambda _n: None, name="quiet")
    stop, thread, out = live(work, plain=True, refresh=0.01, bus=bus)
    deadline = time.monotonic() + WAIT
    while out.getvalue().count("quiet") < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    bus.emit("deploy.started")
    while "deploy.started" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    finish(stop, thread)
    bus_lines = [line for line in out.getvalue().splitlines() if "bus:" in line]
    coordinator_lines = [line for line in out.getvalue().splitlines() if " quiet " in line]
    assert bus_lines[0].endswith("bus: -")
    assert "deploy.started" in bus_lines[-1]
    assert len(bus_lines) < len(coordinator_lines)


def test_rich_live_view_draws_the_table(make):
    """plain=False draws the rich table; the final frame shows the final state."""
    work = make(body_with_failures, name="tabled", max_concurrency=2)
    stop, thread, out = live(work, plain=False, refresh=0.01)
    run_all(work, list(range(8)))
    finish(stop, thread)
    text = out.getvalue()
    assert "coordinator" in text
    assert "items/s" in text
    final = text[text.rindex("coordinator") :]
    assert cells(final, "tabled")[:8] == ["tabled", "drained", "0", "0/2", "-", "5", "3", "0"]


def test_live_view_of_a_registry_follows_creation_and_close(make):
    """Coordinators created during the view appear; after the registry closes they stay."""
    with CoordinatorRegistry() as registry:
        registry.register_work("late", lambda _n: None, CoordinatorOptions(max_concurrency=1))
        stop, thread, out = live(registry, plain=True, refresh=0.01)
        deadline = time.monotonic() + WAIT
        while "[" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        run_all(registry.get("late"), [1, 2, 3])
        while " late " not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    # The registry is closed; the view still shows the coordinator's final state.
    finish(stop, thread)
    assert "late drained pending=0 active=0/1 completed=3" in out.getvalue().splitlines()[-1]


def test_live_view_without_rich_falls_back_to_plain(make, monkeypatch):
    """Without rich installed, plain=False prints plain lines instead of failing."""
    for module in [m for m in sys.modules if m.split(".")[0] == "rich"]:
        monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.setitem(sys.modules, "rich", None)
    work = make(lambda _n: None, name="norich")
    stop, thread, out = live(work, plain=False, refresh=0.01)
    finish(stop, thread)
    assert " norich running " in out.getvalue()


def test_render_table_without_rich_names_the_extra(make, monkeypatch):
    """render_table needs rich, and says which extra provides it."""
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.table", None)
    work = make(lambda _n: None)
    with pytest.raises(ImportError, match=r"ephemeral_actors\[cli\]"):
        render_table(work)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"refresh": 0}, ValueError, "refresh"),
        ({"refresh": True}, TypeError, "refresh"),
        ({"plain": "yes"}, TypeError, "plain"),
        ({"stop": True}, TypeError, "stop"),
    ],
)
def test_live_view_rejects_bad_arguments(make, kwargs, error, match):
    """Bad arguments fail at once, naming the argument."""
    work = make(lambda _n: None)
    with pytest.raises(error, match=match):
        live_view(work, **kwargs)


def test_live_view_rejects_a_bad_source():
    """A source that is not a registry or coordinators is a TypeError."""
    with pytest.raises(TypeError, match="coordinator"):
        live_view(object(), stop=threading.Event())


def test_throughput_is_the_rate_over_recent_readings():
    """Throughput is ended operations per second over the last couple of seconds."""
    rates = _Throughput(window=2.0)
    assert rates.update("c", 0, 100.0) is None
    assert rates.update("c", 10, 101.0) == 10.0
    assert rates.update("c", 30, 102.0) == 15.0
    # The base is the newest reading at least 2 s old: the rate follows the recent pace.
    assert rates.update("c", 31, 104.0) == pytest.approx((31 - 30) / 2)
    assert rates.update("c", 41, 105.0) == pytest.approx((41 - 30) / 3)


def test_summary_says_how_many_more_failures_from_the_counters(make):
    """Failures beyond the listed ones (or trimmed from the window) are counted: "and N more"."""
    # No failure log: only the window's failures can be listed.
    work = make(
        body_with_failures,
        name="small",
        max_tracked_operations=4,
        max_concurrency=1,
        max_tracked_failures=0,
    )
    run_all(work, list(range(30)))
    total = work.total_failed
    assert total > len(work.get_failed())  # the window kept only some of them
    text = summary(work, failures=2)
    listed = [line for line in text.splitlines() if line.startswith("  failed op ")]
    assert len(listed) <= 2
    assert f"  ... and {total - len(listed)} more failed or cancelled" in text.splitlines()


def test_summary_shows_signal_totals_when_given(make):
    """With signal_counts, a coordinator shows those totals rather than its trimmed window."""
    work = make(body_with_failures, name="small", max_tracked_operations=4, max_concurrency=1)
    run_all(work, list(range(30)))
    window = summary(work)
    assert "  signals in window: " in window
    totals = summary(work, signal_counts={"small": {"item.done": 18, "item.rejected": 8}})
    assert "  signals: item.done x18, item.rejected x8" in totals.splitlines()
    assert "in window" not in totals


def test_summary_short_ids_and_width(make):
    """short_ids keeps the last 6 digits; width wraps between words, never inside one."""
    work = make(body_with_failures, name="coordinator-with-a-long-name-for-wrapping")
    run_all(work, list(range(5)))
    failed = work.get_failed()
    text = summary(work, failures=5, short_ids=True, width=40)
    for op in failed:
        assert f"...{op.id % 1_000_000:06d}" in text
        assert str(op.id) not in text or len(str(op.id)) <= 6
    lines = text.splitlines()
    assert all(len(line) <= 40 for line in lines if " " in line.strip())
    words = " ".join(lines).split()
    assert "coordinator-with-a-long-name-for-wrapping:" in words
    assert "restarts" in words
    # Continuation lines are indented further than the line they continue.
    assert any(line.startswith("    ") for line in lines)
    with pytest.raises(ValueError, match="width"):
        summary(work, width=5)
