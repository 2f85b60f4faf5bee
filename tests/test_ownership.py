"""Ownership check mode (SPEC 14): writes to actor state outside the owner's turn fail."""

from __future__ import annotations

import os

from ephemeral_actors.testing import ownership_checks_enabled
from tests.isolated import run_isolated


def test_the_mode_follows_the_environment_variable():
    """ownership_checks_enabled() says whether EPHEMERAL_ACTORS_CHECK_OWNERSHIP=1 was set."""
    assert ownership_checks_enabled() == (
        os.environ.get("EPHEMERAL_ACTORS_CHECK_OWNERSHIP", "") not in ("", "0")
    )


def test_a_write_from_outside_the_supervisor_turn_is_caught():
    """In check mode normal traffic passes, and writing supervisor or key-child state from
    a caller's thread raises AssertionError naming the actor's state."""
    out = run_isolated(
        """
        import os
        os.environ["EPHEMERAL_ACTORS_CHECK_OWNERSHIP"] = "1"
        from ephemeral_actors import KeyedWorkCoordinator, WorkCoordinator
        from ephemeral_actors.testing import ownership_checks_enabled
        assert ownership_checks_enabled()

        with WorkCoordinator(lambda item: None, max_concurrency=2) as work:
            for item in range(50):
                work.enqueue(item)
            work.pause()
            work.resume()
        assert work.total_completed == 50

        keyed = KeyedWorkCoordinator(lambda item: item % 3, lambda item: None)
        for item in range(30):
            keyed.enqueue(item)
        keyed.complete()
        keyed.drain(30)
        try:
            keyed._core.paused = True
        except AssertionError as exc:
            print("supervisor:", exc)
        keyed.pause()  # a message: still allowed
        child = keyed._core.backlog.children[0]
        try:
            child.running = 5
        except AssertionError as exc:
            print("child:", exc)
        keyed.close(30)
        """
    )
    lines = out.splitlines()
    assert lines[0].startswith("supervisor: Core.paused of <keyed")
    assert "outside its owner's turn" in lines[0]
    assert lines[1].startswith("child: KeyChild.running of <keyed")


def test_a_closed_key_child_is_still_checked_through_the_weak_link():
    """After close the keyed backlog reaches its core through a weak proxy: a child's
    state written in the supervisor's turn still passes, and from outside still fails."""
    out = run_isolated(
        """
        import os
        os.environ["EPHEMERAL_ACTORS_CHECK_OWNERSHIP"] = "1"
        import weakref
        from ephemeral_actors import KeyedWorkCoordinator

        keyed = KeyedWorkCoordinator(lambda item: item, lambda item: None)
        keyed.submit(0).result(30)
        child = keyed._core.backlog.children[0]
        keyed.close(30)
        assert type(child.backlog.core) is weakref.ProxyType

        def write(_):
            child.processed = child.processed

        keyed._core.call(write, None)
        print("in the turn: passed")
        try:
            child.running = 5
        except AssertionError as exc:
            print("outside:", exc)
        """
    )
    lines = out.splitlines()
    assert lines[0] == "in the turn: passed"
    assert lines[1].startswith("outside: KeyChild.running of <keyed")


def test_a_field_change_that_skips_the_fast_path_refresh_is_caught():
    """In check mode, a turn fails on a busy-turn flag left stale by a change of a field
    it derives from (here `deferring`, set without `refresh_fast_paths()`)."""
    out = run_isolated(
        """
        import os
        os.environ["EPHEMERAL_ACTORS_CHECK_OWNERSHIP"] = "1"
        from ephemeral_actors import WorkCoordinator

        c = WorkCoordinator(lambda item: None, max_concurrency=1)
        core = c._core
        core.call(lambda _: core.refresh_fast_paths(), None)  # with the refresh: fine

        def forget(_):
            core.deferring = True  # a write in the turn, without the refresh

        try:
            core.call(forget, None)
        except AssertionError as exc:
            print("caught:", exc)

        def restore(_):
            core.deferring = False
            core.refresh_fast_paths()

        core.call(restore, None)
        c.close(30)
        """
    )
    assert out.startswith("caught: coordinator 'work-")
    assert "stale fast-path flags (True, True)" in out


def test_without_the_mode_nothing_is_checked():
    """Without the variable the check costs nothing and does not fire."""
    out = run_isolated(
        """
        import os
        os.environ.pop("EPHEMERAL_ACTORS_CHECK_OWNERSHIP", None)
        from ephemeral_actors import WorkCoordinator
        from ephemeral_actors.testing import ownership_checks_enabled
        assert not ownership_checks_enabled()
        c = WorkCoordinator(lambda item: None)
        c._core.paused = True  # wrong, but unchecked
        print("unchecked")
        c.close(30)
        """
    )
    assert out == "unchecked\n"


def test_a_turn_that_hands_its_mail_off_takes_the_dispatcher_in_its_own_turn():
    """A supervisor turn past THROUGHPUT messages hands the rest to the dispatcher. Taking
    the dispatcher reference writes the supervisor's state: in check mode, that used to
    raise in the caller after the turn and leave the mail behind."""
    out = run_isolated(
        """
        import os, threading
        os.environ["EPHEMERAL_ACTORS_CHECK_OWNERSHIP"] = "1"
        from ephemeral_actors import WorkCoordinator
        from ephemeral_actors._mailbox import THROUGHPUT

        work = WorkCoordinator(lambda item: None, max_concurrency=1)
        core = work._core
        done = threading.Event()

        def flood(_):
            for _ in range(THROUGHPUT + 100):
                core.mailbox.post((core._on_pause, False))  # resume: harmless
            core.mailbox.post((lambda _: done.set(), None))

        core.call(flood, None)
        assert done.wait(30), "the handed-off mail was not run"
        print("handed off:", core.uses_dispatcher, "left:", len(core.mailbox))
        work.close(30)
        """
    )
    assert out.splitlines() == ["handed off: True left: 0"]


def test_writes_inside_what_an_actor_owns_are_caught_too():
    """The check covers what an actor's fields hold, not only the fields: the window,
    the backlogs and the children registry, the waiters, the restart window, token
    buckets, the schedule, the failure log and the bus's window, each written from a
    caller's thread, raise AssertionError naming the structure; the same calls made in
    the owner's turn pass."""
    out = run_isolated(
        """
        import os
        os.environ["EPHEMERAL_ACTORS_CHECK_OWNERSHIP"] = "1"
        from ephemeral_actors import KeyedWorkCoordinator, SignalBus, WorkCoordinator

        def caught(what, write):
            try:
                write()
            except AssertionError as exc:
                assert "outside its owner's turn" in str(exc), exc
                print(what, "caught:", str(exc).split(" of ")[0])
            else:
                print(what, "NOT caught")

        work = WorkCoordinator(lambda item: None, rate_limit=1000.0, max_concurrency=1)
        work.submit(1).result(30)
        core = work._core
        caught("window", lambda: core.window.evict(1))
        caught("backlog", lambda: core.backlog.take_all())
        caught("fifo", lambda: core.backlog.items.append(None))
        caught("waiters", lambda: core.waiters.append(None))
        caught("space waiters", lambda: core.space_waiters.clear())
        caught("idle", lambda: core.idle.clear())
        caught("restarts", lambda: core.crashes.append(0.0))
        caught("failures", lambda: core.failures.evict(1))
        caught("schedule", lambda: core.schedule.take_all())
        caught("bucket", lambda: core.schedule.bucket.refund())
        # The same writes in the supervisor's turn (an ask) pass.
        core.call(lambda: (core.window.evict(1), core.crashes.clear(), core.waiters.clear()))
        print("in the turn: passed")
        work.close(30)

        keyed = KeyedWorkCoordinator(lambda item: item, lambda item: None)
        keyed.submit("k").result(30)
        keyed.pause()
        keyed.enqueue("k")  # waits in the key's mailbox (an idle key has none)
        backlog = keyed._core.backlog
        caught("children", lambda: backlog.children.pop("k"))
        caught("keyed backlog", lambda: backlog.on_reap(None))
        caught("key mailbox", lambda: backlog.children["k"].mailbox.clear())
        keyed.close(30)

        bus = SignalBus()
        bus.emit("a")
        caught("bus window", lambda: bus._state.entries.clear())
        caught("bus routes", lambda: bus._state.routes.clear())
        bus.close()
        """
    )
    assert "NOT caught" not in out, out
    expected = {
        "window": "Window.evict()",
        "backlog": "FifoBacklog.take_all()",
        "fifo": "deque.append()",
        "waiters": "list.append()",
        "space waiters": "deque.clear()",
        "idle": "list.clear()",
        "restarts": "deque.append()",
        "failures": "FailureLog.evict()",
        "schedule": "Schedule.take_all()",
        "bucket": "TokenBucket.refund()",
        "children": "dict.pop()",
        "keyed backlog": "KeyedBacklog.on_reap()",
        "key mailbox": "deque.clear()",
        "bus window": "deque.clear()",
        "bus routes": "dict.clear()",
    }
    for what, name in expected.items():
        assert f"{what} caught: {name}" in out, (what, out)
    assert "in the turn: passed" in out
