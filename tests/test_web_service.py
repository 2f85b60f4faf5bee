"""The web service example, end to end through a real HTTP client (Starlette TestClient)."""

from __future__ import annotations

import importlib.util
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

from starlette.testclient import TestClient

from ephemeral_actors.testing import library_threads
from tests.conftest import WAIT

EXAMPLE = Path(__file__).parent.parent / "examples" / "web_service.py"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("web_service_example", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def wait_for(predicate, client: TestClient) -> dict:
    """Poll /api/status (a real client would) until `predicate(status)` holds."""
    deadline = time.monotonic() + WAIT
    while True:
        status = client.get("/api/status").json()
        if predicate(status):
            return status
        assert time.monotonic() < deadline, f"status never matched: {status}"
        time.sleep(0.01)


def test_translate_queues_work_and_status_reports_it():
    """POST /api/translate answers at once with the pending count; status shows the outcome."""
    app = load_example().create_app()
    with TestClient(app) as client:
        response = client.post("/api/translate", json={"text": "hello"})
        assert response.status_code == 200
        assert response.json()["pending"] >= 0
        client.post("/api/translate", json={"text": "   "})
        status = wait_for(
            lambda s: (
                s["coordinators"]["fast"]["completed"] + s["coordinators"]["fast"]["failed"] == 2
            ),
            client,
        )
        assert status["coordinators"]["fast"] == {
            "pending": 0,
            "active": 0,
            "completed": 1,
            "failed": 1,
        }
        assert status["errorSignals"] == 1
        assert status["hasRateLimit"] is False


def test_a_flooding_user_gets_429_and_others_do_not():
    """Fair scheduling refuses a user's fourth pending command with 429; another user is served."""
    gate = threading.Event()
    app = load_example().create_app(command_gate=gate)
    with TestClient(app) as client:
        codes = [
            client.post("/api/command", json={"user": "mallory", "command": f"c{i}"}).status_code
            for i in range(8)
        ]
        # Three may wait (the threshold) and one may already run; the rest are refused.
        first_refusal = codes.index(429)
        assert first_refusal in (3, 4)
        assert set(codes[first_refusal:]) == {429}
        refused = client.post("/api/command", json={"user": "mallory", "command": "more"})
        assert refused.status_code == 429
        assert refused.json() == {"error": "Too many pending commands for this user"}
        assert (
            client.post("/api/command", json={"user": "alice", "command": "hi"}).status_code == 202
        )
        gate.set()
        accepted = first_refusal + 1
        status = wait_for(lambda s: s["coordinators"]["commands"]["completed"] == accepted, client)
        assert status["coordinators"]["commands"]["failed"] == 0


def test_rate_limit_signal_shows_in_status():
    """A 429 from the translation backend raises hasRateLimit through the shared bus."""
    app = load_example().create_app()
    with TestClient(app) as client:
        client.post("/api/translate", json={"text": "please 429"})
        # The body emits the signal before it raises: wait for both, the failure is
        # counted when the body has returned.
        status = wait_for(
            lambda s: s["hasRateLimit"] and s["coordinators"]["fast"]["failed"] == 1, client
        )
        assert status["hasRateLimit"]


def test_bad_command_is_rejected_with_400():
    """A command without a user is a client error, not queued work."""
    app = load_example().create_app()
    with TestClient(app) as client:
        assert client.post("/api/command", json={"command": "x"}).status_code == 400


def test_shutdown_leaves_no_library_threads():
    """Application shutdown closes the registry and the bus: no thread of ours remains."""
    before = set(library_threads())
    app = load_example().create_app()
    with TestClient(app) as client:
        client.post("/api/translate", json={"text": "x"})
        client.post("/api/command", json={"user": "u", "command": "go"})
        assert set(library_threads()) - before
    for thread in set(library_threads()) - before:
        thread.join(WAIT)
    assert not (set(library_threads()) - before)


def test_invalid_json_is_a_400_not_a_500():
    """A body that is not JSON, or not a JSON object, is answered 400 with an error message."""
    app = load_example().create_app()
    with TestClient(app, raise_server_exceptions=False) as client:
        for path in ("/api/translate", "/api/command"):
            for body in (b"{not json", b"\xff\xfe", b"[1, 2]", b'"text"'):
                response = client.post(
                    path, content=body, headers={"content-type": "application/json"}
                )
                assert response.status_code == 400, (path, body, response.text)
                assert response.json() == {"error": "the request body must be a JSON object"}


def test_a_successful_translation_clears_the_rate_limit():
    """The docstring's promise holds: after a 429, the next success emits rate-limit.cleared."""
    module = load_example()
    assert "rate-limit.cleared" in (module.__doc__ or "")
    app = module.create_app()
    with TestClient(app) as client:
        client.post("/api/translate", json={"text": "please 429"})
        wait_for(lambda s: s["hasRateLimit"], client)
        client.post("/api/translate", json={"text": "hello"})
        status = wait_for(lambda s: not s["hasRateLimit"], client)
        assert status["coordinators"]["fast"]["completed"] == 1


def test_the_example_needs_no_type_ignore():
    """registry.get() is typed through the keys register_*() return: no `type: ignore` left."""
    assert "type: ignore" not in EXAMPLE.read_text()


def test_a_closed_coordinator_answers_503_not_429():
    """After the commands coordinator is closed (shutdown), a command gets 503, not 429."""
    app = load_example().create_app()
    with TestClient(app) as client:
        app.state.registry.get("commands").complete()
        response = client.post("/api/command", json={"user": "alice", "command": "c"})
        assert response.status_code == 503
        assert response.json() == {"error": "Shutting down"}
