"""A live terminal view of coordinators: `live_view()`, `render_table()`, `summary()`.

An application can watch its own coordinators the way `top` watches processes:

```python
import threading

from ephemeral_actors.console import live_view

stop = threading.Event()
viewer = threading.Thread(target=live_view, args=(registry,), kwargs={"stop": stop})
viewer.start()
...                      # the application runs
stop.set()               # the view draws a last frame and returns
viewer.join()
```

With [rich](https://rich.readthedocs.io) installed (extra `ephemeral_actors[cli]`) and
a terminal to draw on, the view is a table redrawn in place. Without rich, without a
terminal (output piped to a file or a log collector), or with `plain=True`, it prints
one compact line per coordinator per refresh instead, which reads well in logs.

Mailbox depth is the first thing an actor user looks at (SPEC 14): each coordinator's
`actor_stats()` is read at every refresh, and the messages waiting are shown per role
once any wait (`sup` the supervisor, `wrk` the workers, `key` the per-key children,
`cb` the callbacks actor). Each signal bus in view (the `bus` argument and the bus
each coordinator publishes to, its `signals` option; a shared bus once) gets a line
of its own with its mailbox depth and the messages it has processed.

The view only reads (`stats()`, `get_signals()`: state queries answered in the
supervisor's turn), so it never slows a coordinator down by more than a short turn
per refresh, and it keeps working after the coordinators are closed: their queries
answer with the final state. Those reads (`actor_stats()` too) are messages, so they
count in the supervisor's processed messages, as the `bus` argument's recent signals
(one `sense()` per refresh) count in its bus's; a bus's `actor_stats()` sends it no
message.

Added in version 0.1.0.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime as _dt
import sys
import textwrap
import threading
import time
from typing import IO, TYPE_CHECKING

from ephemeral_actors._validate import check_seconds
from ephemeral_actors.metrics import (
    CoordinatorSource,
    ObservableCoordinator,
    _bus_label,
    _buses_in_view,
    _check_source,
    coordinators_of,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from rich.table import Table

    from ephemeral_actors._records import (
        ActorStats,
        CoordinatorStats,
        OperationSnapshot,
        RateLimitStats,
    )
    from ephemeral_actors._signals import SignalBus, SignalEvent

__all__ = ("live_view", "render_table", "summary")

_RATE_WINDOW = 2.0
"""Seconds of history the throughput column averages over."""

_RECENT_SIGNALS = 3
"""Signal names shown per coordinator, newest last."""

_BUS_SIGNALS = 5
"""Signal names of the bus shown under the table."""

_ROLE_NAMES = {"supervisor": "sup", "worker": "wrk", "key": "key", "callbacks": "cb"}
"""Short names of the actor roles (SPEC 14); a role not listed shows in full."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Row:
    """What one line of the view shows about one coordinator."""

    name: str
    state: str
    stats: CoordinatorStats
    throughput: float | None
    signals: tuple[str, ...]
    active_keys: int | None
    mailbox: int | None = None
    """Messages waiting in every actor's mailbox (SPEC 14), if the coordinator says."""
    actors: tuple[ActorStats, ...] = ()
    """The coordinator's `actor_stats()`, one record per role, read with `mailbox`."""


@dataclasses.dataclass(frozen=True, slots=True)
class _BusRow:
    """What the view shows about one signal bus."""

    label: str
    closed: bool
    stats: ActorStats
    events: tuple[SignalEvent, ...] | None = None
    """The bus's most recent events, for the bus given to the view (None for others)."""


def _bus_rows(
    coordinators: Sequence[ObservableCoordinator],
    bus: SignalBus | None,
    events: Callable[[], tuple[SignalEvent, ...]] | None = None,
) -> list[_BusRow]:
    """One row per bus in view: `bus` first, then the coordinators' (each bus once).

    `events`, if given, reads `bus`'s recent events for its row.
    """
    rows = []
    for found in _buses_in_view(coordinators, () if bus is None else (bus,)):
        # Figures first: the recent events are read with `sense()`, a message to the bus
        # that would otherwise count in the figures shown beside it.
        stats = found.actor_stats()
        rows.append(
            _BusRow(
                label=_bus_label(found),
                closed=found.is_closed,
                stats=stats,
                events=events() if found is bus and events is not None else None,
            )
        )
    return rows


def _state_of(stats: CoordinatorStats) -> str:
    if stats.is_drained:
        return "drained"
    if stats.is_paused:
        return "paused"
    if getattr(stats, "is_deferred", False):
        return "deferred"
    if stats.is_completed:
        return "completing"
    return "running"


def _row(coordinator: ObservableCoordinator, throughput: float | None) -> _Row:
    stats = coordinator.stats()
    signals = _recent_names(coordinator.get_signals(), _RECENT_SIGNALS)
    keys = getattr(coordinator, "active_keys", None)
    actor_stats = getattr(coordinator, "actor_stats", None)
    actors: tuple[ActorStats, ...] = tuple(actor_stats()) if callable(actor_stats) else ()
    mailbox = sum(a.mailbox_depth for a in actors) if callable(actor_stats) else None
    return _Row(
        name=coordinator.name,
        state=_state_of(stats),
        stats=stats,
        throughput=throughput,
        signals=signals,
        active_keys=keys if isinstance(keys, int) else None,
        mailbox=mailbox,
        actors=actors,
    )


def _roles_text(actors: Sequence[ActorStats], separator: str) -> str:
    """Mailbox depth per role, in `actor_stats()` order: "sup 0, wrk 3, key 12, cb 0"."""
    return separator.join(f"{_ROLE_NAMES.get(a.role, a.role)} {a.mailbox_depth}" for a in actors)


def _recent_names(events: Sequence[SignalEvent], limit: int) -> tuple[str, ...]:
    """The `limit` most recent distinct signal names, oldest first."""
    names: list[str] = []
    for event in reversed(events):
        if event.signal not in names:
            names.append(event.signal)
            if len(names) == limit:
                break
    return tuple(reversed(names))


class _Throughput:
    """Ended operations per second, from deltas of `total_ended` between refreshes."""

    def __init__(self, window: float = _RATE_WINDOW) -> None:
        self._window = window
        self._history: dict[str, collections.deque[tuple[float, int]]] = {}

    def update(self, name: str, ended: int, now: float) -> float | None:
        history = self._history.setdefault(name, collections.deque())
        history.append((now, ended))
        while len(history) > 2 and now - history[1][0] >= self._window:
            history.popleft()
        first_time, first_ended = history[0]
        elapsed = now - first_time
        if elapsed <= 0:
            return None
        return (ended - first_ended) / elapsed


class _View:
    """The state of one running view: the coordinators seen and their rates."""

    def __init__(self, source: CoordinatorSource, bus: SignalBus | None) -> None:
        self.source = source
        self.bus = bus
        self.rates = _Throughput()
        self.started = time.monotonic()
        # Coordinators seen so far, by identity, in first-seen order: a registry
        # forgets its coordinators when it closes, but their final state is still
        # worth showing (the last frame is drawn after the application shut down).
        self.seen: dict[int, ObservableCoordinator] = {}

    def rows(self) -> list[_Row]:
        for coordinator in coordinators_of(self.source):
            self.seen.setdefault(id(coordinator), coordinator)
        now = time.monotonic()
        rows = []
        for coordinator in self.seen.values():
            row = _row(coordinator, None)
            rate = self.rates.update(row.name, row.stats.total_ended, now)
            rows.append(dataclasses.replace(row, throughput=rate))
        return rows

    def bus_signals(self) -> tuple[SignalEvent, ...]:
        if self.bus is None:
            return ()
        return self.bus.sense()[-_BUS_SIGNALS:]

    def buses(self) -> list[_BusRow]:
        """The buses of the coordinators seen so far, and the view's own, read now."""
        return _bus_rows(tuple(self.seen.values()), self.bus, self.bus_signals)


# -- rendering ------------------------------------------------------------------------


def _rate_text(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1f}"


def _ago(event: SignalEvent, now: _dt.datetime) -> str:
    seconds = max(0.0, (now - event.timestamp).total_seconds())
    return f"{event.signal} ({seconds:.1f}s ago)"


def _bus_text(events: Sequence[SignalEvent]) -> str:
    now = _dt.datetime.now(_dt.UTC)
    return ", ".join(_ago(e, now) for e in events) if events else "-"


def _plain_line(row: _Row, elapsed: float) -> str:
    s = row.stats
    keys = f" keys={row.active_keys}" if row.active_keys is not None else ""
    mailbox = f" mailbox={row.mailbox}" if row.mailbox is not None else ""
    if row.mailbox:
        # Per role only when something waits: "mailbox=0" already says every role is 0.
        mailbox += f" ({_roles_text(row.actors, ', ')})"
    signals = ",".join(row.signals) or "-"
    abandoned = getattr(s, "abandoned_threads", 0)
    throttled = _throttled(s)
    return (
        f"[{elapsed:7.2f}s] {row.name} {row.state} pending={s.pending_count} "
        f"active={s.active_count}/{s.max_concurrency}{keys} completed={s.total_completed} "
        f"failed={s.total_failed} cancelled={s.total_cancelled} "
        f"{f'abandoned={abandoned} ' if abandoned else ''}"
        f"{f'throttled={throttled} ' if throttled else ''}"
        f"rate={_rate_text(row.throughput)}/s signals={signals}{mailbox}"
    )


def _plain_bus_line(row: _BusRow, elapsed: float) -> str:
    state = "closed" if row.closed else "running"
    return (
        f"[{elapsed:7.2f}s] bus {row.label} {state} mailbox={row.stats.mailbox_depth} "
        f"processed={row.stats.messages_processed}"
    )


def _bus_caption(row: _BusRow) -> tuple[str, str]:
    """A bus's line under the table: (its name, its figures then its recent events)."""
    name = f"bus {row.label}{' (closed)' if row.closed else ''}: "
    text = f"mailbox {row.stats.mailbox_depth} · {row.stats.messages_processed} processed"
    if row.events is not None:
        text += f"; recent: {_bus_text(row.events)}"
    return name, text


def _throttled(stats: CoordinatorStats) -> int:
    """Items a rate limit holds back now (global and per key), 0 without limits."""
    limits = getattr(stats, "rate_limit", None)
    return 0 if limits is None else limits.waiting + limits.key_waiting


def _limits_text(limits: RateLimitStats) -> str:
    """The rate limits of one coordinator and what they hold back, in one line."""
    parts = []
    if limits.rate_limit is not None:
        parts.append(
            f"{limits.rate_limit:g}/s: {limits.waiting} waiting, {limits.holds} holds, "
            f"{limits.tokens} tokens"
        )
    if limits.rate_limit_per_key is not None:
        parts.append(
            f"{limits.rate_limit_per_key:g}/s per key: {limits.throttled_keys} keys "
            f"({limits.key_waiting} items) waiting, {limits.key_holds} holds"
        )
    burst = f" (burst {limits.rate_burst})" if limits.rate_burst > 1 else ""
    return f"rate limit{burst} " + "; ".join(parts)


_STATE_STYLES = {
    "running": "green",
    "completing": "cyan",
    "drained": "dim",
    "paused": "yellow",
    "deferred": "yellow",
}


def _table(rows: Sequence[_Row], buses: Sequence[_BusRow]) -> Table:
    from rich import box  # noqa: PLC0415 - rich is optional
    from rich.table import Table  # noqa: PLC0415
    from rich.text import Text  # noqa: PLC0415

    # Signals go in the caption, one line per coordinator, so that the counters fit
    # an 80-column terminal. User text (names, signals) goes in as Text, never as
    # markup: a coordinator called "[red]" must show as written.
    caption = Text()
    for row in rows:
        # Mailbox depth is the first thing an actor user looks at: shown, per role,
        # once it is non-zero, so an idle screen stays quiet.
        busy = f"mailbox {row.mailbox} ({_roles_text(row.actors, ' · ')})" if row.mailbox else ""
        if row.signals or busy:
            parts = [", ".join(row.signals)] if row.signals else []
            caption.append(f"{row.name}: ", style="bold").append(
                "; ".join([*parts, *([busy] if busy else [])]) + "\n"
            )
        limits = getattr(row.stats, "rate_limit", None)
        if limits is not None and (limits.waiting or limits.throttled_keys):
            # Only while a limit holds items back: an idle screen stays quiet.
            caption.append(f"{row.name}: ", style="bold").append(
                _limits_text(limits) + "\n", style="yellow"
            )
        abandoned = getattr(row.stats, "abandoned_threads", 0)
        if abandoned:
            # Rare and worth a look (bodies that outlived item_timeout twice): a line of
            # its own rather than a column every coordinator would pay for.
            caption.append(f"{row.name}: ", style="bold").append(
                f"{abandoned} abandoned thread{'s' if abandoned > 1 else ''}\n", style="red"
            )
    for bus in buses:
        name, text = _bus_caption(bus)
        caption.append(name, style="bold").append(text + "\n")
    caption.rstrip()
    table = Table(
        box=box.SIMPLE_HEAD,
        caption=caption if caption.plain else None,
        caption_justify="left",
        pad_edge=False,
        collapse_padding=True,
    )
    # The counters keep their width; a long coordinator name is what gets shortened.
    table.add_column("coordinator", no_wrap=True, overflow="ellipsis", max_width=32)
    table.add_column("state", no_wrap=True, min_width=10)
    for heading in ("pending", "active", "keys", "done", "failed", "cancel", "items/s"):
        table.add_column(heading, justify="right", no_wrap=True, min_width=len(heading))
    for row in rows:
        s = row.stats
        table.add_row(
            Text(row.name, style="bold"),
            Text(row.state, style=_STATE_STYLES.get(row.state, "")),
            str(s.pending_count),
            f"{s.active_count}/{s.max_concurrency}",
            "-" if row.active_keys is None else str(row.active_keys),
            str(s.total_completed),
            Text(str(s.total_failed), style="red" if s.total_failed else ""),
            Text(str(s.total_cancelled), style="yellow" if s.total_cancelled else ""),
            _rate_text(row.throughput),
        )
    return table


def render_table(
    source: CoordinatorSource,
    *,
    bus: SignalBus | None = None,
    throughput: Mapping[str, float] | None = None,
) -> Table:
    """Return a rich `Table` of the coordinators' state right now.

    One row per coordinator: name, state (running, completing, paused, drained),
    pending, active/limit, active keys (keyed coordinators), completed, failed,
    cancelled and throughput. The caption lists, per coordinator, the most recent
    distinct signal names in its window, the messages waiting in its actors'
    mailboxes while any wait (in all, then per role: "mailbox 15 (sup 0 · wrk 3 · key
    12 · cb 0)"), its rate limits while they hold items back (items waiting for a
    token, holds so far, tokens left, throttled keys) and how many bodies it abandoned
    past their deadline (if any). Then comes a line per signal bus in view (`bus`, and
    each coordinator's `signals` option; a shared bus once) with its mailbox depth and
    the messages it has processed ("bus events: mailbox 0 · 57 processed") and, for
    `bus`, its most recent events with their age. A bus is named by its `name`, or
    `unnamed-<hex id>` without one.
    Names and signals are shown as text, never as markup.

    Args:
        source: A `CoordinatorRegistry`, one coordinator, or coordinators.
        bus: A `SignalBus` whose figures and recent signals go in the caption.
        throughput: Items per second by coordinator name, if you track it (a
            single reading has no rate; `live_view` computes it from deltas).

    Returns:
        A `rich.table.Table`; print it with `rich.print()` or a `rich.console.Console`.

    Raises:
        ImportError: rich is not installed (extra `ephemeral_actors[cli]`).
        TypeError: `source` is not a registry or coordinators.
    """
    try:
        import rich.table  # noqa: F401, PLC0415 - only to report a missing extra clearly
    except ImportError as exc:
        raise ImportError(
            "render_table() needs rich; install it with: pip install 'ephemeral_actors[cli]'"
        ) from exc
    rates = throughput or {}
    coordinators = coordinators_of(_check_source(source))
    rows = [_row(c, rates.get(c.name)) for c in coordinators]
    recent = None if bus is None else (lambda: bus.sense()[-_BUS_SIGNALS:])
    return _table(rows, _bus_rows(coordinators, bus, recent))


def summary(
    source: CoordinatorSource,
    *,
    bus: SignalBus | None = None,
    failures: int = 3,
    signal_counts: Mapping[str, Mapping[str, int]] | None = None,
    short_ids: bool = False,
    width: int | None = None,
) -> str:
    """Return a plain-text summary: counts, signals and failures per coordinator.

    Only metadata is shown: a failure is its operation id, key, exception *type* and
    duration — never the exception message, which may quote the item. Counts come
    from the coordinators' counters, so a failure list cut to `failures` lines (or
    to what the window still holds) ends with "... and N more".

    Args:
        source: A `CoordinatorRegistry`, one coordinator, or coordinators.
        bus: A `SignalBus` whose recent signals are listed at the end.
        failures: How many of each coordinator's most recent failures to list.
        signal_counts: Coordinator name -> signal name -> how many times it was
            emitted (e.g. counted with an `on_signal` callback). Coordinators found
            here show these totals ("signals: ..."); the others show the signals
            still in their window ("signals in window: ..."), which the window's
            size and age bounds may have trimmed.
        short_ids: Show the last 6 digits of each operation id (enough to find the
            operation in logs) instead of all 19.
        width: Wrap lines longer than this many columns between words, indenting
            the continuation; `None` never wraps.

    Returns:
        Several lines of text, without a trailing newline.

    Raises:
        TypeError: `source` is not a registry or coordinators.
        ValueError: `failures` is negative, or `width` is below 20.

    Example:
        ```text
        orders: 270 accepted, 251 completed, 19 failed, 0 cancelled, 0 pending, 0 worker restarts
          signals in window: order.paid x251, rate-limit x4
          failed op 1234 key=customer-07 PaymentDeclinedError after 0.041 s
          failed op 1240 key=customer-02 OperationTimeoutError after 5.002 s (attempt 3)
          ... and 17 more failed or cancelled
        ```

    A failure that had retries shows its last attempt's number; a coordinator that
    abandoned bodies past their deadline ends its first line with ", N abandoned
    threads"; a coordinator with a rate limit has a line saying how many items wait
    for a token now and how many times the limit held items back ("rate limit 5/s: 12
    waiting, 40 holds, 0 tokens").
    """
    if isinstance(failures, bool) or not isinstance(failures, int) or failures < 0:
        raise ValueError(f"failures must be an int >= 0, got {failures!r}")
    if width is not None and (isinstance(width, bool) or not isinstance(width, int) or width < 20):
        raise ValueError(f"width must be an int >= 20 or None, got {width!r}")
    totals = signal_counts or {}
    lines: list[str] = []
    for coordinator in coordinators_of(_check_source(source)):
        s = coordinator.stats()
        lines.append(
            f"{coordinator.name}: {s.total_enqueued} accepted, {s.total_completed} completed, "
            f"{s.total_failed} failed, {s.total_cancelled} cancelled, {s.pending_count} pending, "
            f"{s.worker_restarts} worker restarts"
            + (f", {n} abandoned threads" if (n := getattr(s, "abandoned_threads", 0)) else "")
        )
        limits = getattr(s, "rate_limit", None)
        if limits is not None:
            lines.append(f"  {_limits_text(limits)}")
        counted = totals.get(coordinator.name)
        label = "signals"
        if counted is None:
            counted = collections.Counter(e.signal for e in coordinator.get_signals())
            label = "signals in window"
        if any(counted.values()):
            ordered = sorted(counted.items(), key=lambda item: (-item[1], item[0]))
            listed = ", ".join(f"{name} x{count}" for name, count in ordered if count)
            lines.append(f"  {label}: {listed}")
        shown = _pick_failures(coordinator.get_failed(), failures)
        lines.extend(
            f"  failed op {_op_id(op.id, short=short_ids)}"
            f"{'' if op.key is None else f' key={op.key}'} "
            f"{type(op.error).__name__} after {op.duration or 0.0:.3f} s"
            f"{f' (attempt {n})' if (n := getattr(op, 'attempts', 1)) > 1 else ''}"
            for op in shown
        )
        # From the counters, not the window: the window may have trimmed failures.
        more = s.total_failed + s.total_cancelled - len(shown)
        if more > 0:
            lines.append(f"  ... and {more} more failed or cancelled")
    if bus is not None:
        lines.append(f"bus: {_bus_text(bus.sense()[-_BUS_SIGNALS:])}")
    if width is not None:
        lines = [wrapped for line in lines for wrapped in _wrap_line(line, width)]
    return "\n".join(lines)


def _wrap_line(line: str, width: int) -> list[str]:
    """Wrap `line` to `width` columns between words, continuing 4 columns further in.

    Words are never split (not at hyphens either: `rate-limit` stays whole); a
    single word longer than `width` gets a line of its own.
    """
    indent = " " * (len(line) - len(line.lstrip(" ")) + 4)
    return textwrap.wrap(
        line,
        width,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    ) or [line]


def _op_id(op_id: int, *, short: bool) -> str:
    # Ids are 63-bit hashes, up to 19 digits; the tail is as good as the whole for a
    # reader matching a summary line to a log line, and a sixth of the width.
    return f"...{op_id % 1_000_000:06d}" if short else str(op_id)


def _pick_failures(
    failed: Sequence[OperationSnapshot], limit: int
) -> tuple[OperationSnapshot, ...]:
    """Up to `limit` recent failures, one of each error type first, in window order.

    Ten declined cards should not hide the one rate-limit failure: the most recent
    failure of each error type is chosen first, then the most recent others.
    """
    chosen: list[OperationSnapshot] = []
    kinds: set[type] = set()
    for op in reversed(failed):
        if len(chosen) == limit:
            break
        kind = type(op.error)
        if kind not in kinds:
            kinds.add(kind)
            chosen.append(op)
    for op in reversed(failed):
        if len(chosen) >= limit:
            break
        if op not in chosen:
            chosen.append(op)
    order = {op.id: index for index, op in enumerate(failed)}
    return tuple(sorted(chosen, key=lambda op: order[op.id]))


# -- the live view ----------------------------------------------------------------------


def _rich_available() -> bool:
    try:
        import rich.live  # noqa: F401, PLC0415
    except ImportError:
        return False
    return True


def _is_tty(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty()) if isatty is not None else False
    except (OSError, ValueError):  # a closed or detached stream
        return False


def live_view(
    source: CoordinatorSource,
    *,
    refresh: float = 0.25,
    plain: bool | None = None,
    stop: threading.Event | None = None,
    file: IO[str] | None = None,
    bus: SignalBus | None = None,
) -> None:
    """Show the coordinators live until `stop` is set, then draw a last frame and return.

    Each refresh reads every coordinator's `stats()`, `actor_stats()` and recent
    signals, and the `actor_stats()` of every signal bus in view (`bus`, and each
    coordinator's `signals` option). For a `CoordinatorRegistry`, coordinators
    created while the view runs appear as they are created, and coordinators stay on
    screen (with their final state) after the registry closes them.

    The table is `render_table()`'s. Plain lines end with the messages waiting in the
    coordinator's actors' mailboxes, per role while any wait (`mailbox=15 (sup 0, wrk
    3, key 12, cb 0)`); each refresh also prints a line per bus (`bus events running
    mailbox=0 processed=57`), and a `bus:` line with `bus`'s recent signals when they
    changed (and in the last frame).

    Args:
        source: A `CoordinatorRegistry`, one coordinator, or coordinators.
        refresh: Seconds between refreshes; > 0.
        plain: True prints one line per coordinator per refresh; False draws a live
            rich table; None (the default) chooses the table when rich is installed
            and `file` is a terminal.
        stop: Set it to end the view. Without one the view runs until the thread
            is interrupted (Ctrl-C raises `KeyboardInterrupt` from here, after the
            terminal is restored).
        file: Where to write; `sys.stdout` by default.
        bus: A `SignalBus` whose figures and most recent signals are shown too.

    Raises:
        TypeError: `source` is not a registry or coordinators, or an argument has the
            wrong type.
        ValueError: `refresh` is not positive.

    Without rich, `plain=False` falls back to plain lines rather than failing: a
    status view must never take an application down.
    """
    source = _check_source(source)
    interval = check_seconds("refresh", refresh)
    if plain is not None and not isinstance(plain, bool):
        raise TypeError(f"plain must be a bool or None, got {type(plain).__name__} {plain!r}")
    if stop is not None and not isinstance(stop, threading.Event):
        raise TypeError(f"stop must be a threading.Event or None, got {type(stop).__name__}")
    out: IO[str] = sys.stdout if file is None else file
    done = threading.Event() if stop is None else stop
    view = _View(source, bus)
    use_rich = _rich_available() and (not plain if plain is not None else _is_tty(out))
    if use_rich:
        _run_rich(view, interval, done, out)
    else:
        _run_plain(view, interval, done, out)


def _run_plain(view: _View, interval: float, done: threading.Event, out: IO[str]) -> None:
    shown_bus: tuple[SignalEvent, ...] | None = None
    while True:
        # Read the flag before drawing: the frame drawn after `stop` was seen shows the
        # final state, and it is the last one.
        finished = done.is_set()
        elapsed = time.monotonic() - view.started
        rows = view.rows()
        lines = [_plain_line(row, elapsed) for row in rows]
        if not lines:
            lines.append(f"[{elapsed:7.2f}s] no coordinators")
        # Every refresh, as the coordinators' lines: a bus's figures are its load.
        lines.extend(
            _plain_bus_line(bus, elapsed) for bus in _bus_rows(tuple(view.seen.values()), view.bus)
        )
        if view.bus is not None:
            # Logs read better without a repeated line: the bus line appears when the
            # bus saw something new, and in the last frame.
            events = view.bus_signals()
            if finished or events != shown_bus:
                shown_bus = events
                lines.append(f"[{elapsed:7.2f}s] bus: {_bus_text(events)}")
        out.write("\n".join(lines) + "\n")
        out.flush()
        if finished:
            return
        done.wait(interval)


def _run_rich(view: _View, interval: float, done: threading.Event, out: IO[str]) -> None:
    from rich.console import Console  # noqa: PLC0415 - rich is optional
    from rich.live import Live  # noqa: PLC0415

    console = Console(file=out)

    def frame() -> Table:
        return _table(view.rows(), view.buses())

    # auto_refresh=False: we redraw on our own schedule, so rich starts no thread.
    with Live(frame(), console=console, auto_refresh=False, transient=False) as live:
        while not done.wait(interval):
            live.update(frame(), refresh=True)
        live.update(frame(), refresh=True)
