"""A small web service whose background work is visible: the seed's example, in Python.

    pip install -e '.[web]'                 # from a checkout of this repository
    python examples/web_service.py          # serves on http://127.0.0.1:8000

(Once published, the package would be `pip install 'ephemeral-actors[web]'`.)

Endpoints:

* `POST /api/translate` `{"text": ...}` — queued on the work coordinator "fast";
  answers `{"pending": n}` at once. A translation backend answering "429" makes the
  body emit `rate-limit`, which defers new commands; the next translation that
  succeeds emits `rate-limit.cleared`, which releases them at once (without one,
  deferred commands run anyway after `max_defer_attempts` re-checks, about 1 s).
* `POST /api/command` `{"user": ..., "command": ...}` — queued per user on the keyed
  coordinator "commands" (each user's commands run in order); with fair scheduling a
  user with too many pending commands gets `429 Too many pending commands for this
  user`, and other users are not held up. Once the coordinator is closed (the
  application is shutting down) the answer is `503` instead: `offer()` says which.
* `GET /api/status` — pending/active/completed/failed per coordinator,
  `hasRateLimit` (a `rate-limit` newer than any `rate-limit.cleared`), and the
  number of error signals in the windows.

A body that is not a JSON object is answered `400` with `{"error": ...}`. The
coordinators come from a `CoordinatorRegistry` and are closed, with the shared
signal bus, when the application shuts down.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ephemeral_actors import (
    Admission,
    CoordinatorOptions,
    CoordinatorRegistry,
    SignalBus,
    current_operation,
)


async def translate(text: str) -> str:
    """Stand-in for a call to a translation API."""
    await asyncio.sleep(0.01)
    if "429" in text:
        current_operation().signal("rate-limit")
        raise RuntimeError("translation API answered 429 Too Many Requests")
    if not text.strip():
        current_operation().signal("error.translate")
        raise ValueError("nothing to translate")
    return text[::-1]


def rate_limited(bus: SignalBus) -> bool:
    """True while the newest `rate-limit*` signal on the bus is a hit, not a clearance."""
    news = bus.sense(lambda event: event.signal in ("rate-limit", "rate-limit.cleared"))
    return bool(news) and news[-1].signal == "rate-limit"


async def json_object(request: Request) -> dict[str, Any] | None:
    """The request body as a JSON object, or None if it is not one (a client error)."""
    try:
        payload = await request.json()
    except ValueError:  # invalid JSON, or a body that is not UTF-8
        return None
    return payload if isinstance(payload, dict) else None


NOT_A_JSON_OBJECT = {"error": "the request body must be a JSON object"}


def user_of(command: dict[str, Any]) -> str:
    """The key of a command: its user (validated as a str before it is queued)."""
    return str(command["user"])


def create_app(*, command_gate: threading.Event | None = None) -> Starlette:
    """Build the application; `command_gate`, if given, holds every command until set."""
    bus = SignalBus(name="web")
    registry = CoordinatorRegistry()

    def run_command(command: dict[str, Any]) -> None:
        if command_gate is not None:
            command_gate.wait()
        if command.get("command") == "fail":
            current_operation().signal("error.command")
            raise RuntimeError(f"command failed for {command['user']}")

    # register_*() return typed keys: registry.get(FAST) is a WorkCoordinator[str].
    async def translate_then_clear(text: str) -> str:
        translated = await translate(text)
        # The API answers again: if the bus still shows a rate limit, say it is over,
        # which releases the deferred commands at once.
        if rate_limited(bus):
            current_operation().signal("rate-limit.cleared")
        return translated

    fast_key = registry.register_work(
        "fast", translate_then_clear, CoordinatorOptions(max_concurrency=16, signals=bus)
    )
    commands_key = registry.register_keyed(
        "commands",
        user_of,
        run_command,
        CoordinatorOptions(
            max_concurrency=4,
            enable_fair_scheduling=True,
            fair_scheduling_threshold=3,
            signals=bus,
            defer_on_signals="rate-limit",
            resume_on_signals="rate-limit.cleared",
        ),
    )

    async def post_translate(request: Request) -> JSONResponse:
        payload = await json_object(request)
        if payload is None:
            return JSONResponse(NOT_A_JSON_OBJECT, status_code=400)
        fast = registry.get(fast_key)
        await fast.enqueue_async(str(payload.get("text", "")))
        return JSONResponse({"pending": fast.pending_count})

    async def post_command(request: Request) -> JSONResponse:
        payload = await json_object(request)
        if payload is None:
            return JSONResponse(NOT_A_JSON_OBJECT, status_code=400)
        if not isinstance(payload.get("user"), str):
            return JSONResponse({"error": "user must be a string"}, status_code=400)
        commands = registry.get(commands_key)
        admission = commands.offer(payload)
        if admission is Admission.CLOSED:
            # Not the client's fault and not worth retrying here: we are shutting down.
            return JSONResponse({"error": "Shutting down"}, status_code=503)
        if not admission:  # UNFAIR (or FULL): this user should slow down
            return JSONResponse(
                {"error": "Too many pending commands for this user"}, status_code=429
            )
        pending = commands.get_pending_count_for_key(payload["user"])
        return JSONResponse({"accepted": True, "pending": pending}, status_code=202)

    async def get_status(_request: Request) -> JSONResponse:
        coordinators = {name: registry.get(name) for name in registry.names}
        return JSONResponse(
            {
                "coordinators": {
                    name: {
                        "pending": c.pending_count,
                        "active": c.active_count,
                        "completed": c.total_completed,
                        "failed": c.total_failed,
                    }
                    for name, c in coordinators.items()
                },
                "hasRateLimit": rate_limited(bus),
                "errorSignals": sum(
                    c.count_signals_matching("error.*") for c in coordinators.values()
                ),
            }
        )

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if command_gate is not None:
                command_gate.set()
            # The server accepts no more requests now, so blocking the loop briefly
            # while running work finishes is harmless.
            registry.close(10.0)
            bus.close()

    app = Starlette(
        routes=[
            Route("/api/translate", post_translate, methods=["POST"]),
            Route("/api/command", post_command, methods=["POST"]),
            Route("/api/status", get_status, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.registry = registry  # for tests and admin endpoints
    return app


def main() -> None:
    """Serve the app with uvicorn on localhost."""
    import uvicorn  # noqa: PLC0415 - only needed to serve

    uvicorn.run(create_app(), host="127.0.0.1", port=8000)


if __name__ == "__main__":
    main()
