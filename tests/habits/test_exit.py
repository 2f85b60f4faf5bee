"""Nothing lost at exit; the facade may be collected while its actors live (SPEC 15)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading

import pytest

from ephemeral_actors import WorkCoordinator
from tests.conftest import WAIT
from tests.isolated import HANG, ROOT, run_isolated


def run_child(source: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(source)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=HANG,
        check=False,
    )


def test_unclosed_coordinator_finishes_its_work_at_exit():
    """20 items, no close(): all 20 run before the interpreter exits."""
    out = run_isolated(
        """
        import atexit, time
        from ephemeral_actors import WorkCoordinator

        ran = []
        # A plain atexit handler runs after the library's exit hook.
        atexit.register(lambda: print(f"ran {len(ran)}"))

        def body(item):
            time.sleep(0.01)
            ran.append(item)

        work = WorkCoordinator(body, max_concurrency=2)
        for i in range(20):
            work.enqueue(i)
        """
    )
    assert "ran 20" in out


def test_unclosed_async_coordinator_finishes_its_work_at_exit():
    """Coroutine bodies on the shared loop finish at exit too."""
    out = run_isolated(
        """
        import asyncio, atexit
        from ephemeral_actors import WorkCoordinator

        ran = []
        atexit.register(lambda: print(f"ran {len(ran)}"))

        async def body(item):
            await asyncio.sleep(0.01)
            ran.append(item)

        work = WorkCoordinator(body, max_concurrency=3)
        for i in range(20):
            work.enqueue(i)
        del work  # the facade may go; the work does not
        """
    )
    assert "ran 20" in out


def test_a_hung_body_is_cancelled_after_exit_timeout_with_one_warning():
    """A body that never returns: exit after exit_timeout, one WARNING, status unchanged."""
    done = run_child(
        """
        import atexit, logging, sys, threading
        from ephemeral_actors import WorkCoordinator

        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        never = threading.Event()
        work = WorkCoordinator(
            lambda item: never.wait(), name="stuck", max_concurrency=1, exit_timeout=0.2
        )
        for i in range(5):
            work.enqueue(i)
        atexit.register(
            lambda: print(f"cancelled {work.total_cancelled} active {work.active_count}")
        )
        sys.exit(3)
        """
    )
    assert done.returncode == 3, done.stderr
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1, done.stderr
    assert "'stuck'" in warnings[0]
    assert "4 pending and 1 active" in warnings[0]
    # The pending four and the hung one all count as cancelled.
    assert "cancelled 5 active 0" in done.stdout


def test_closed_coordinators_are_not_waited_for_at_exit():
    """A coordinator closed by the program is left alone by the exit hook (no warning)."""
    done = run_child(
        """
        from ephemeral_actors import WorkCoordinator

        work = WorkCoordinator(lambda item: None)
        work.enqueue(1)
        work.close()
        """
    )
    assert done.returncode == 0
    assert "WARNING" not in done.stderr


def drop_and_collect(holder: list[WorkCoordinator[int]]) -> None:
    """Drop the last reference and collect whatever cycle held it."""
    holder.clear()
    gc.collect()


def test_collecting_an_unclosed_busy_facade_warns_and_the_work_goes_on():
    """Dropping the last reference to a busy coordinator: ResourceWarning; its work still runs."""
    gate = threading.Event()
    ran = threading.Event()

    def body(_: object) -> None:
        gate.wait(WAIT)
        ran.set()

    work = WorkCoordinator(body, name="dropped")
    work.enqueue(1)
    core = work._core
    holder = [work]
    del work
    with pytest.warns(ResourceWarning, match="'dropped'"):
        drop_and_collect(holder)
    gate.set()
    assert ran.wait(WAIT)
    core.close(WAIT)


def test_collecting_an_idle_or_closed_facade_does_not_warn(recwarn):
    """No pending or active work, or closed: nothing to warn about."""
    idle = WorkCoordinator(lambda _: None)
    core = idle._core
    del idle
    gc.collect()
    closed = WorkCoordinator(lambda _: None)
    closed.enqueue(1)
    closed.close(WAIT)
    del closed
    gc.collect()
    assert not [w for w in recwarn if issubclass(w.category, ResourceWarning)]
    core.close(WAIT)


@pytest.mark.parametrize("kind", ["work", "keyed", "async"])
def test_an_idle_facade_collected_as_the_interpreter_shuts_down_does_not_hang_it(kind):
    """A facade in a reference cycle is collected by the interpreter's last collection,
    when no new thread can run: its coordinator must not start one to close itself
    (the process used to hang there for ever)."""
    done = run_child(
        f"""
        from ephemeral_actors import KeyedWorkCoordinator, WorkCoordinator

        async def coroutine_body(item):
            return item

        class Holder:
            pass

        holder = Holder()
        holder.itself = holder  # a cycle: only the last collection frees it
        if {kind!r} == "keyed":
            holder.work = KeyedWorkCoordinator(lambda item: item % 3, lambda item: None)
        elif {kind!r} == "async":
            holder.work = WorkCoordinator(coroutine_body, max_concurrency=4)
        else:
            holder.work = WorkCoordinator(lambda item: None, max_concurrency=4)
        futures = [holder.work.submit(item) for item in range(10)]
        for future in futures:
            future.result(30)
        del holder, futures
        print("the script ended")
        """
    )
    assert done.returncode == 0, done.stderr
    assert "the script ended" in done.stdout


def test_a_forked_child_does_not_wait_for_the_parents_work_at_its_exit():
    """A forked process (a ProcessPoolExecutor worker, say) inherits the parent's
    coordinators but not their threads: its exit must not wait exit_timeout for them."""
    out = run_isolated(
        """
        import multiprocessing, threading
        from ephemeral_actors import WorkCoordinator

        gate = threading.Event()
        c = WorkCoordinator(lambda item: gate.wait(), max_concurrency=1, exit_timeout=600)
        for item in range(3):
            c.enqueue(item)  # one runs and blocks, two wait: unfinished work at fork time
        child = multiprocessing.get_context("fork").Process(target=print, args=("child",))
        child.start()
        child.join()
        print("child exit code", child.exitcode)
        gate.set()
        c.close(30)
        """
    )
    assert "child exit code 0" in out
