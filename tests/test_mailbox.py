"""The actor runtime's mailbox: turns, the begin/finish fast path, and their order."""

from __future__ import annotations

import threading

from ephemeral_actors._mailbox import BUSY, Mailbox, current_actor
from tests.conftest import WAIT


class Owner:
    """Stands for an actor: the mailbox only uses it to mark whose turn runs."""


def test_post_runs_the_turn_in_the_caller_when_idle():
    owner = Owner()
    seen: list[tuple[str, object]] = []
    ends: list[int] = []
    box = Mailbox(owner, lambda m: seen.append((m, current_actor())), lambda: ends.append(1))
    assert box.post("a") is True
    assert seen == [("a", owner)]
    assert ends == [1]
    assert current_actor() is None


def test_begin_never_overtakes_mail_already_queued():
    """A sender between its append and its flag check: the fast path must go behind it."""
    handled: list[str] = []
    box = Mailbox(Owner(), handled.append, lambda: None)
    box._queue.append("earlier")  # appended; its sender has not tried the flag yet
    assert box.begin() is BUSY
    box.post("later")
    assert handled == ["earlier", "later"]


def test_begin_and_finish_make_a_turn_and_run_what_arrived_meanwhile():
    """Between begin and finish this thread owns the actor; mail sent meanwhile by another
    thread waits for the turn and is handled by finish, in order, before the flag is free."""
    owner = Owner()
    handled: list[str] = []
    ends: list[int] = []
    box = Mailbox(owner, handled.append, lambda: ends.append(len(handled)))
    token = box.begin()
    assert token is not BUSY
    assert box.in_turn()
    assert current_actor() is owner
    posted = threading.Event()

    def other() -> None:
        assert box.post("from another thread") is False  # the turn is taken: it only queues
        posted.set()

    thread = threading.Thread(target=other)
    thread.start()
    assert posted.wait(WAIT)
    thread.join(WAIT)
    assert handled == []
    box.finish(token)
    assert handled == ["from another thread"]
    assert ends == [0, 1]  # the begun turn ended, then the turn that ran the queued mail
    assert current_actor() is None
    again = box.begin()  # the flag is free again
    assert again is not BUSY
    box.finish(again)
    assert current_actor() is None
