"""`KeyedWorkCoordinator`: per-key ordered work on per-key child actors (SPEC section 5).

Each key with pending or running work has a child actor (`KeyChild`). The child owns
its key's items: they are the messages in its mailbox, in arrival order, and it
alone takes them out. When it may start one more (fewer than
`max_concurrency_per_key` running and an item waiting) it stands in the supervisor's
*ready queue*, which is how it asks for a global slot; the supervisor gives slots to
ready keys in turn. A busy key is not in the ready queue, so it never holds a global
slot while waiting and never blocks other keys — no head-of-line blocking.

Children run on a calling-thread dispatcher (Akka's `CallingThreadDispatcher`): the
supervisor delivers a message to a child, and the child handles it, inside the
supervisor's own turn. A child therefore costs no thread and no wake-up, and a
control call that returns has seen every consequence in the children too.

A child whose key has been idle for `key_idle_timeout` is passivated (Akka's
`ReceiveTimeout`, Orleans deactivation): stopped and forgotten, so memory follows
active keys. A key seen again gets a new child. A child stopped from outside is
restarted by its supervisor with its mailbox intact, as Akka restarts an actor.

Scheduling (SPEC 16). Priorities never reorder a key's own items: its mailbox stays in
arrival order. Across keys, ready keys compete by the priority of the item at the head
of their mailbox (equal priorities take turns, as without priorities); the ready
queue turns from a deque into a heap the first time an item has a non-zero priority.
With `rate_limit_per_key`, each child holds its key's token bucket: a key whose
bucket is empty does not join the ready queue but waits in `throttled` (a heap by the
time its next token is due) until the supervisor's schedule timer wakes it, so it
never holds a global slot or blocks another key.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar, Unpack, cast, overload

import pykka

from ephemeral_actors._coordinators._arguments import split_keyed_arguments
from ephemeral_actors._coordinators._base import CoordinatorBase
from ephemeral_actors._coordinators._key import capture
from ephemeral_actors._coordinators._limits import SCHEDULE_CLOCK, TokenBucket
from ephemeral_actors._coordinators._supervisor import Core
from ephemeral_actors._dispatch import Timer, _StopFlag, call_later, give_back
from ephemeral_actors._mailbox import CHECK_OWNERSHIP, check_owner, post_unless_gone
from ephemeral_actors._options import merge_options
from ephemeral_actors._owned import checked_writes, claim, owned_deque, owned_dict

if TYPE_CHECKING:
    import threading
    from collections.abc import AsyncIterable, Awaitable, Callable, Iterable

    from ephemeral_actors._operation import Operation
    from ephemeral_actors._options import CoordinatorOptions, OptionsKwargs
    from ephemeral_actors._records import OperationSnapshot

__all__ = ["KeyChild", "KeyedBacklog", "KeyedWorkCoordinator"]

logger = logging.getLogger("ephemeral_actors")

T = TypeVar("T")
K = TypeVar("K")

Entry = tuple["Operation", Any]


@dataclass(frozen=True, slots=True)
class GetKeyState:
    """Ask a `KeyChild` for `(pending, running)` of its key."""


class _ChildInbox:
    """Pykka's view of a child's mailbox: envelopes go through its supervisor's turn."""

    __slots__ = ("child",)

    def __init__(self, child: KeyChild) -> None:
        self.child = child

    def put(self, envelope: Any, /) -> None:
        child = self.child
        backlog = child.backlog
        try:
            mailbox = backlog.core.mailbox
        except ReferenceError:  # closed, and the coordinator is gone (a weak link)
            raise pykka.ActorDeadError(f"{child.actor_ref} stopped") from None
        mailbox.post((backlog._on_child_envelope, (child, envelope)))

    def empty(self) -> bool:
        return True


_CHILD_STATE = frozenset({"mailbox", "running", "in_ready", "idle_since", "processed"})


class _NoMail(collections.deque[Any]):
    """The mailbox of every idle child: empty, and refusing mail.

    A deque holds a block of 64 slots (over half a kilobyte) from birth, and an idle
    key's child lives on for `key_idle_timeout` (a minute by default): a child gives
    its deque back when its key goes idle and takes a new one with its next item
    (`KeyedBacklog.went_idle`, `KeyedBacklog.append`). One shared instance stands in
    meanwhile, read as empty like any deque. Only those two give and take mailboxes (a
    restart hands the child's on to its heir, whichever it is); anything that wrote to
    this one would be a bug, so it raises.
    """

    __slots__ = ()

    def _refuse(self, *_: object) -> None:
        raise RuntimeError("an idle key's child was given mail without a mailbox")

    append = appendleft = extend = extendleft = insert = _refuse


_NO_MAIL: Final[collections.deque[Any]] = _NoMail()


_STOPPED = _StopFlag()
_STOPPED.set()


class KeyChild(pykka.Actor):
    """The child actor of one key: its mailbox holds the key's items, in order.

    Its handlers (`take`, `requeue`, `drop_all`, `remove`) and the per-item paths of
    its backlog (`KeyedBacklog.append`, `pop` and `ended`) run in its supervisor's turn;
    nothing else touches `mailbox` or `running`. Other actors may `ask` it
    `GetKeyState()` or `stop()` it through its `actor_ref`.
    """

    _urns = itertools.count(1)

    # Every child starts with these: class-level until first set, so building one of
    # (possibly) a hundred thousand children stores only what differs.
    running = 0
    in_ready = False
    idle_since = 0.0
    processed = 0
    bucket: TokenBucket | None = None
    throttled = False  # waiting in backlog.throttled for its next token
    # Read as an attribute, never through `__dict__`: CPython 3.11 keeps an instance's
    # attributes without a dict until `__dict__` is asked for, and then builds one
    # (closing a coordinator with 100,000 idle keys spent 0.15 s building dicts).
    _stopped: threading.Event | _StopFlag | None = None

    def __init__(self, backlog: KeyedBacklog, key: Any) -> None:
        # pykka.Actor.__init__ minus the uuid4 and the threading.Event, which cost
        # microseconds and a kilobyte per actor; a key's child is made per key. Its
        # stop flag, urn, inbox and ActorRef are made the first time anything asks
        # (`__getattr__`): most children live and passivate without another actor ever
        # addressing them, and an object fewer per child is less for the collector.
        self.backlog = backlog
        self.key = key
        self.mailbox: collections.deque[Entry] = (
            owned_deque(backlog, _core_of) if CHECK_OWNERSHIP else collections.deque()
        )
        rate = backlog.key_rate
        if rate is not None:
            self.bucket = TokenBucket(rate, backlog.key_burst)
            if CHECK_OWNERSHIP:  # tested here: a call per new key otherwise
                claim(self.bucket, backlog.core)

    def __repr__(self) -> str:
        return f"<KeyChild key={self.key!r} pending={len(self.mailbox)} running={self.running}>"

    # Pykka's parts, made the first time anything asks. Properties rather than a
    # `__getattr__`: a class with `__getattr__` gets a Python-level attribute hook, and
    # CPython then specializes no attribute read on its instances; the supervisor reads
    # a child's fields a dozen times per item.

    @property
    def actor_stopped(self) -> threading.Event:
        flag = self._stopped
        if flag is None:
            # After close, a child nobody had addressed is stopped like the rest (close
            # sets only the flags that exist: see KeyedBacklog.close).
            flag = _STOPPED if self.backlog.closed else _StopFlag()
            self._stopped = flag
        return cast("threading.Event", flag)

    @actor_stopped.setter
    def actor_stopped(self, flag: threading.Event) -> None:
        self._stopped = flag

    @property
    def actor_urn(self) -> str:
        return cast("str", self._pykka_part("_urn"))

    @actor_urn.setter
    def actor_urn(self, urn: str) -> None:
        self.__dict__["_urn"] = urn

    @property
    def actor_inbox(self) -> Any:
        return self._pykka_part("_inbox")

    @actor_inbox.setter
    def actor_inbox(self, inbox: Any) -> None:
        self.__dict__["_inbox"] = inbox

    @property
    def _actor_ref(self) -> pykka.ActorRef[Any]:
        return cast("pykka.ActorRef[Any]", self._pykka_part("_ref"))

    @_actor_ref.setter
    def _actor_ref(self, ref: pykka.ActorRef[Any]) -> None:
        self.__dict__["_ref"] = ref

    def _pykka_part(self, name: str) -> Any:
        parts = self.__dict__
        if name not in parts:
            parts["_urn"] = f"urn:ephemeral-actors:KeyChild:{next(self._urns)}"
            parts["_inbox"] = _ChildInbox(self)
            parts["_ref"] = pykka.ActorRef(self)
        return parts[name]

    if CHECK_OWNERSHIP:

        def __setattr__(self, name: str, value: Any) -> None:
            # A child's turns run inside its supervisor's (calling-thread dispatcher).
            if name in _CHILD_STATE:
                backlog = self.__dict__.get("backlog")
                if backlog is not None:
                    check_owner(backlog.core, f"KeyChild.{name}")
            object.__setattr__(self, name, value)

    # Pykka's runtime extension points: the inbox is built in __init__, asks are
    # answered with Pykka's own future, and there is no loop to start.

    @staticmethod
    def _create_actor_inbox() -> Any:
        msg = "KeyChild builds its inbox in __init__"  # pragma: no cover
        raise NotImplementedError(msg)  # pragma: no cover

    @staticmethod
    def _create_future() -> pykka.Future[Any]:
        return pykka.ThreadingFuture()

    def _start_actor_loop(self) -> None:
        return

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing running."""
        return not self.mailbox and self.running == 0

    # Handlers (in the supervisor's turn). An item's arrival and its operation's end
    # are handled by `KeyedBacklog.append` and `KeyedBacklog.ended` themselves, and a
    # plain key's item is taken by `KeyedBacklog.pop`: once per keyed item, a frame
    # each was a tenth of the item's instructions. They write the child's fields in
    # the same turn a handler here would.

    def take(self) -> Entry | None:
        """A global slot was granted: hand over the oldest item (None if none may start)."""
        self.processed += 1
        self.in_ready = False
        mailbox = self.mailbox
        backlog = self.backlog
        if not mailbox or self.running >= backlog.per_key:
            return None
        bucket = self.bucket
        if bucket is not None:
            now = backlog.clock()
            if bucket.wait(now) > 0:
                self._ask_for_slot()  # throttles it until the token is due
                return None
            bucket.take(now)
        entry = mailbox.popleft()
        if backlog.priorities:
            backlog.priorities.pop(entry[0].id, None)
        self.running += 1
        if mailbox and self.running < backlog.per_key:
            # `_ask_for_slot` (in_ready is False here), written out: to the back of the
            # ready queue, so keys take turns.
            if backlog.plain:
                self.in_ready = True
                backlog.ready.append(self)
            else:
                backlog.make_ready(self)
        return entry

    def requeue(self, op: Operation, item: Any) -> None:
        """A started item of this key is to run again (a retry): back to the head.

        It held one of the key's running slots while it waited, so no later item of
        the key started in between (SPEC 5: equal keys start in enqueue order).
        """
        self.processed += 1
        self.running -= 1
        self.mailbox.appendleft((op, item))
        self._ask_for_slot()

    def drop_all(self) -> list[Entry]:
        """Give up every waiting item (cancel, fault)."""
        self.processed += 1
        dropped = list(self.mailbox)
        self.mailbox.clear()
        self.in_ready = False
        self.throttled = False
        return dropped

    def remove(self, op_id: int) -> Operation | None:
        """Take back one waiting item (cancelled by id); its operation, or None."""
        mailbox = self.mailbox
        for index, entry in enumerate(mailbox):
            if entry[0].id == op_id:
                self.processed += 1
                del mailbox[index]
                if self.idle:
                    self.backlog.went_idle(self)
                return entry[0]
        return None

    def _ask_for_slot(self) -> None:
        if not self.in_ready and self.mailbox and self.running < self.backlog.per_key:
            backlog = self.backlog
            if backlog.plain:
                self.in_ready = True
                backlog.ready.append(self)
            else:
                backlog.make_ready(self)

    def stop_now(self) -> None:
        """Stop this actor (passivation or close): later asks get `ActorDeadError`."""
        flag = self._stopped
        if flag is None:
            # Nobody has asked for the flag: share one already set (a stopped child is
            # never started again) rather than make one per child. Closing a coordinator
            # with 100,000 idle keys spent 0.25 s making flags only to set them.
            self._stopped = _STOPPED
        else:
            flag.set()


def _core_of(backlog: KeyedBacklog) -> object:
    return backlog.core


@checked_writes(
    _core_of,
    "push",
    "append",
    "pop",
    "make_ready",
    "wake",
    "take_all",
    "remove",
    "ended",
    "requeue",
    "went_idle",
    "on_reap",
    "_restart",
    "close",
)
class KeyedBacklog:
    """The supervisor's view of its children: the registry, the ready queue, passivation.

    Owned by the supervisor: every method runs in its turn.
    """

    tracks_ended = True  # a key's running count and passivation

    def __init__(self, options: CoordinatorOptions) -> None:
        self.per_key = options.max_concurrency_per_key
        self.fair_threshold = (
            options.fair_scheduling_threshold if options.enable_fair_scheduling else 0
        )
        self.idle_timeout = options.key_idle_timeout
        self.children: dict[Any, KeyChild] = owned_dict(self, _core_of)
        self.ready: collections.deque[KeyChild] = owned_deque(self, _core_of)
        # Scheduling (SPEC 16); `plain` while neither priorities nor per-key limits apply.
        self.key_rate = options.rate_limit_per_key
        self.key_burst = options.rate_burst
        # Times key tokens and passivation (`use_schedule_clock` moves it in tests).
        self.clock = SCHEDULE_CLOCK.get()
        self.ranked: list[tuple[int, int, KeyChild]] | None = None
        """Ready keys as a heap of (head priority, sequence, child), once priorities are used."""
        self.priorities: dict[int, int] = {}
        """Non-zero priorities of waiting items, by operation id."""
        self.throttled: list[tuple[float, int, KeyChild]] = []
        """Keys waiting for their next token: a heap of (due, sequence, child)."""
        self.key_holds = 0
        """Times a key's next item was held back for its key's token."""
        self.sequence = itertools.count()
        self.plain = self.key_rate is None
        self.idle_keys: dict[Any, KeyChild] = owned_dict(self, _core_of)
        self.reap_timer: Timer | None = None
        self.uses_dispatcher = False
        self.closed = False
        self.retired_processed = 0
        self.core: Core

    def push(self, op: Operation, item: Any, priority: int = 0) -> None:
        if priority:
            self.priorities[op.id] = priority
            if self.ranked is None:
                self._rank()
        self.append((op, item))

    def append(self, entry: Entry, /) -> None:
        key = entry[0]._raw_key
        child = self.children.get(key)
        if child is None:
            child = self.children[key] = KeyChild(self, key)
        elif child.idle:
            self.idle_keys.pop(key, None)
            if child.mailbox is _NO_MAIL:
                child.mailbox = (
                    owned_deque(self, _core_of) if CHECK_OWNERSHIP else collections.deque()
                )
        # The child's arrival handler: the item waits in its mailbox, and the key asks
        # for a global slot unless it has one pending or its running limit is reached.
        child.processed += 1
        child.mailbox.append(entry)
        if not child.in_ready and child.running < self.per_key:
            if self.plain:
                child.in_ready = True
                self.ready.append(child)
            else:
                self.make_ready(child)

    def pop(self) -> Entry | None:
        ranked = self.ranked
        if ranked is not None:
            while ranked:
                entry = heapq.heappop(ranked)[2].take()
                if entry is not None:
                    return entry
            return None
        ready = self.ready
        per_key = self.per_key
        # `KeyChild.take`, written out below for keys with no rate while no item has a
        # priority: this runs once per keyed item.
        plain = self.plain and not self.priorities
        while ready:
            child = ready.popleft()
            if not plain:
                entry = child.take()
                if entry is not None:
                    return entry
                continue
            child.processed += 1
            child.in_ready = False
            mailbox = child.mailbox
            if not mailbox or child.running >= per_key:
                continue
            entry = mailbox.popleft()
            child.running += 1
            if mailbox and child.running < per_key:
                child.in_ready = True  # to the back of the ready queue: keys take turns
                ready.append(child)
            return entry
        return None

    # -- scheduling (SPEC 16) ----------------------------------------------------------

    def _rank(self) -> None:
        """The first non-zero priority: ready keys move into a heap, in their order."""
        sequence = self.sequence
        self.ranked = [(self.head_priority(c), next(sequence), c) for c in self.ready]
        self.ready.clear()
        self.plain = False

    def head_priority(self, child: KeyChild) -> int:
        """The priority of the item at the head of `child`'s mailbox (0 if none)."""
        mailbox = child.mailbox
        return self.priorities.get(mailbox[0][0].id, 0) if mailbox else 0

    def make_ready(self, child: KeyChild) -> None:
        """`child` may start one more item: queue it, unless its key has no token yet."""
        bucket = child.bucket
        if bucket is not None:
            if child.throttled:
                return
            now = self.clock()
            wait = bucket.wait(now)
            if wait > 0:
                child.throttled = True
                self.key_holds += 1
                due = now + wait
                heapq.heappush(self.throttled, (due, next(self.sequence), child))
                schedule = self.core.schedule
                assert schedule is not None  # built with the coordinator when limits apply
                schedule.wake_at(due)
                return
        child.in_ready = True
        ranked = self.ranked
        if ranked is None:
            self.ready.append(child)
        else:
            heapq.heappush(ranked, (self.head_priority(child), next(self.sequence), child))

    def wake(self, now: float) -> None:
        """Keys whose next token is due by `now` ask for a slot again."""
        throttled = self.throttled
        while throttled and throttled[0][0] <= now:
            child = heapq.heappop(throttled)[2]
            child = self.children.get(child.key, child)  # restarted meanwhile: its heir
            child.throttled = False
            child._ask_for_slot()
        if throttled:
            schedule = self.core.schedule
            assert schedule is not None
            schedule.wake_at(throttled[0][0])

    def refund(self, op: Operation) -> None:
        child = self.children.get(op._raw_key)
        if child is not None and child.bucket is not None:
            child.bucket.refund()

    def take_all(self) -> list[Entry]:
        dropped: list[Entry] = []
        now = self.clock()
        for child in self.children.values():
            if child.mailbox:
                dropped.extend(child.drop_all())
                if child.running == 0:
                    self.went_idle(child, now)
        self.ready.clear()
        if self.ranked is not None:
            self.ranked.clear()
        self.priorities.clear()
        for _due, _seq, child in self.throttled:
            child.throttled = False  # emptied by a remove(): it must be able to come back
        self.throttled.clear()
        return dropped

    def remove(self, op_id: int) -> Operation | None:
        for child in self.children.values():
            op = child.remove(op_id)
            if op is not None:
                self.priorities.pop(op_id, None)
                return op
        return None

    def ended(self, op: Operation) -> None:
        child = self.children.get(op._raw_key)
        if child is not None:  # a running key is never passivated
            # The child's end handler: the key asks for its next slot, or goes idle.
            child.processed += 1
            child.running -= 1
            if child.mailbox:
                child._ask_for_slot()
            elif not child.running:
                self.went_idle(child)

    def requeue(self, op: Operation, item: Any) -> None:
        # A key holding a retrying item counts it as running, so it is never passivated.
        self.children[op._raw_key].requeue(op, item)

    def key_pending(self, raw_key: Any) -> int:
        child = self.children.get(capture(raw_key))
        return len(child.mailbox) if child is not None else 0

    def has_ready(self) -> bool:
        return bool(self.ready or self.ranked)

    def rate_stats(self) -> tuple[int, int, int]:
        keys = items = 0
        for _due, _seq, child in self.throttled:
            waiting = len(self.children.get(child.key, child).mailbox)  # its heir, if restarted
            if waiting:
                keys += 1
                items += waiting
        return keys, items, self.key_holds

    def went_idle(self, child: KeyChild, now: float | None = None) -> None:
        """`child` has nothing waiting or running: it may be passivated from `now`."""
        if now is None:
            now = self.clock()
        bucket = child.bucket
        if bucket is not None:
            # Its bucket goes with the child: keep the child until the bucket is full
            # again, so a passivated key never grants a fresh burst too early.
            now += max(0.0, bucket.full_in(now))
        child.idle_since = now
        child.mailbox = _NO_MAIL  # its deque goes back to the allocator (`_NoMail`)
        self.idle_keys[child.key] = child
        if self.reap_timer is None and not self.closed:
            self._arm(self.idle_timeout)

    def _arm(self, delay: float) -> None:
        self.reap_timer = call_later(self, delay, self._reap_due)

    def _reap_due(self) -> None:
        """Timer callback (a dispatcher thread): timers are messages to the owner."""
        post_unless_gone(self.core, (self.on_reap, None))

    def on_reap(self, _: object) -> int:
        """Passivate the children of keys idle for `key_idle_timeout`; return how many."""
        self.reap_timer = None
        cutoff = self.clock() - self.idle_timeout
        idle = self.idle_keys
        reaped = 0
        while idle:
            key, child = next(iter(idle.items()))
            if child.idle_since > cutoff:
                if not self.closed:
                    self._arm(child.idle_since - cutoff)
                break
            del idle[key]
            if self.children.get(key) is child:
                del self.children[key]
            self.retired_processed += child.processed
            child.stop_now()
            reaped += 1
        return reaped

    def _on_child_envelope(self, message: tuple[KeyChild, Any]) -> None:
        """A Pykka `tell`/`ask` to a child, handled in the supervisor's turn."""
        child, envelope = message
        reply_to = envelope.reply_to
        if child.actor_stopped.is_set():
            if reply_to is not None:
                error = pykka.ActorDeadError(f"{child.actor_ref} stopped")
                reply_to.set_exception((pykka.ActorDeadError, error, None))
            return
        body = envelope.message
        answer: Any = None
        if type(body) is GetKeyState:
            answer = (len(child.mailbox), child.running)
        elif isinstance(body, pykka.messages._ActorStop):
            self._restart(child)
            answer = None
        else:
            logger.warning(f"{child!r} ignored an unexpected message {type(body).__name__}")
        if reply_to is not None:
            reply_to.set(answer)

    def _restart(self, child: KeyChild) -> None:
        """A child was stopped from outside: a new one takes over its mailbox."""
        child.stop_now()
        if self.children.get(child.key) is not child or self.closed:
            return
        heir = KeyChild(self, child.key)
        heir.mailbox, child.mailbox = child.mailbox, collections.deque()
        heir.running = child.running
        heir.in_ready = child.in_ready
        heir.idle_since = child.idle_since
        heir.bucket = child.bucket
        heir.throttled = child.throttled
        self.children[child.key] = heir
        if child.in_ready:
            self.ready = collections.deque(heir if c is child else c for c in self.ready)
            if self.ranked is not None:
                self.ranked = [(p, n, heir if c is child else c) for p, n, c in self.ranked]
        if self.idle_keys.get(child.key) is child:
            self.idle_keys[child.key] = heir
        self.retired_processed += child.processed
        logger.warning(
            f"coordinator {self.core.name!r}: the child actor of a key was stopped; "
            "restarted it with its mailbox",
            extra={
                "coordinator": self.core.name,
                "operation_id": None,
                "key": str(child.key),
                "error_type": None,
                "event": "key.restarted",
            },
        )
        # A restart like a crashed worker's: past `max_restarts` within the window the
        # coordinator faults (SPEC 14), whichever of its actors kept dying.
        self.core._restarted_too_often()

    def actor_stats(self) -> tuple[str, int, int, int]:
        children = self.children.values()
        return (
            "key",
            len(self.children),
            sum(len(c.mailbox) for c in children),
            sum(c.processed for c in children) + self.retired_processed,
        )

    def active_keys(self, _: object = None) -> int:
        return len(self.children)

    def close(self) -> list[threading.Thread]:
        self.closed = True
        if self.reap_timer is not None:
            self.reap_timer.cancel()
            self.reap_timer = None
        # Only the children someone addressed have a flag to set; the others read as
        # stopped from now on (KeyChild.actor_stopped). A stop_now() per child took
        # 0.25 s for 100,000 idle keys, making flags only to set them.
        for child in self.children.values():
            flag = child._stopped
            if flag is not None:
                flag.set()
        self.children.clear()
        self.idle_keys.clear()
        self.ready.clear()
        self.ranked = None
        self.throttled.clear()
        return give_back(self)

    def refer_back_weakly(self, core: Core) -> None:
        # The core holds this backlog: with a strong link back, a closed keyed
        # coordinator would wait for the garbage collector (`Core._refer_back_weakly`).
        self.core = core


class KeyedWorkCoordinator(CoordinatorBase[T], Generic[T, K]):
    """A coordinator that keeps the items of each key in order.

    Items with equal keys start in enqueue order, at most
    `max_concurrency_per_key` at a time; different keys run in parallel up to
    `max_concurrency`. A busy key never blocks the others.

    Build it as `KeyedWorkCoordinator(key_selector, body, options=None, **option_fields)`
    or, in the order `for_each` uses, `KeyedWorkCoordinator(body, options=None,
    key=key_selector, **option_fields)`. Passing both forms, or a key selector that
    is a coroutine function, raises `TypeError`.

    Example:
        ```python
        def apply(event):
            ...

        with KeyedWorkCoordinator(lambda e: e.account_id, apply) as ledger:
            for event in events:
                ledger.enqueue(event)  # each account's events apply in order
        ```
    """

    _kind = "keyed"

    @overload
    def __init__(
        self,
        key_selector: Callable[[T], K],
        body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
        options: CoordinatorOptions | None = None,
        **option_fields: Unpack[OptionsKwargs],
    ) -> None: ...
    @overload
    def __init__(
        self,
        body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
        options: CoordinatorOptions | None = None,
        *,
        key: Callable[[T], K],
        **option_fields: Unpack[OptionsKwargs],
    ) -> None: ...
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Build from `(key_selector, body, options=None, **option_fields)` or `(body, key=...)`.

        Raises:
            TypeError: Both forms at once, a coroutine-function key selector, or an
                unknown option keyword.
        """
        key_selector, body, options, option_fields = split_keyed_arguments(
            args, kwargs, where="KeyedWorkCoordinator"
        )
        self._key_selector = key_selector
        super().__init__(body, merge_options(options, option_fields, where="KeyedWorkCoordinator"))

    def _make_core(self, body: Callable[[T], Any], options: CoordinatorOptions) -> Core:
        key_selector = self._key_selector
        if not callable(key_selector):
            raise TypeError(
                f"key_selector must be callable, got {type(key_selector).__name__} {key_selector!r}"
            )
        backlog = KeyedBacklog(options)
        core = Core(body, options, kind="keyed", backlog=backlog, key_selector=key_selector)
        backlog.core = core
        return core

    @overload
    @classmethod
    def from_iterable(
        cls,
        source: Iterable[T] | AsyncIterable[T],
        key_selector: Callable[[T], K],
        body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
        options: CoordinatorOptions | None = None,
        **option_fields: Unpack[OptionsKwargs],
    ) -> KeyedWorkCoordinator[T, K]: ...
    @overload
    @classmethod
    def from_iterable(
        cls,
        source: Iterable[T] | AsyncIterable[T],
        body: Callable[[T], Any] | Callable[[T], Awaitable[Any]],
        options: CoordinatorOptions | None = None,
        *,
        key: Callable[[T], K],
        **option_fields: Unpack[OptionsKwargs],
    ) -> KeyedWorkCoordinator[T, K]: ...
    @classmethod
    def from_iterable(
        cls, source: Iterable[Any] | AsyncIterable[Any], *args: Any, **kwargs: Any
    ) -> KeyedWorkCoordinator[Any, Any]:
        """Build a keyed coordinator fed from `source` (see `WorkCoordinator.from_iterable`).

        Takes the same two forms as the constructor: `(source, key_selector, body, ...)`
        or `(source, body, key=key_selector, ...)`.
        """
        coordinator = cls(*args, **kwargs)
        coordinator._start_source(source)
        return coordinator

    def try_enqueue(self, item: T, *, priority: int = 0, delay: float | None = None) -> bool:
        """Accept `item` if that needs no waiting.

        Returns False for a full or closed coordinator, when `key_selector` raises,
        and — with fair scheduling on — when the item's key already has
        `fair_scheduling_threshold` pending items (delayed ones included).
        `priority` and `delay` are as for `enqueue`.
        """
        return super().try_enqueue(item, priority=priority, delay=delay)

    @property
    def active_keys(self) -> int:
        """Keys that currently have a child actor (pending, running or recently idle)."""
        return int(self._core.call(self._backlog.active_keys, None))

    @property
    def _backlog(self) -> KeyedBacklog:
        backlog = self._core.backlog
        assert isinstance(backlog, KeyedBacklog)
        return backlog

    def get_pending_count_for_key(self, key: K) -> int:
        """Items of `key` accepted and not yet started (0 for unknown keys).

        `key` is compared as the key selector returns it (`7`, not `"7"`); snapshot
        and signal queries per key compare `str(key)`, as snapshots hold it.
        """
        return int(self._core.call(self._core.key_pending, key))

    def has_signal_for_key(self, key: K, name: str) -> bool:
        """True if an operation of `key` in the window emitted `name`."""
        wanted = str(key)
        return bool(self.get_signals(lambda e: e.key == wanted and e.signal == name))

    def count_signals_for_key(self, key: K) -> int:
        """How many signals the window's operations of `key` emitted."""
        return len(self.get_signals_by_key(key))

    def get_snapshot_for_key(self, key: K) -> tuple[OperationSnapshot, ...]:
        """The window's operations of `key`, oldest first."""
        wanted = str(key)
        return tuple(s for s in self.get_snapshot() if s.key == wanted)
