"""Named coordinators as application services, built lazily by a `CoordinatorRegistry`.

`thumbnails` keeps results, `audit-log` keeps each user's entries in order, `emails` is
plain background work, and `uploads` is built by a factory that feeds the other two.
Nothing is built until first use; closing the registry closes every coordinator it
built, newest first (so `uploads` closes before the services it feeds).

Run: python examples/registry_services.py
"""

from __future__ import annotations

import threading

from ephemeral_actors import (
    CoordinatorOptions,
    CoordinatorRegistry,
    RegistryClosedError,
    ResultCoordinator,
    UnknownCoordinatorError,
    WorkCoordinator,
)

audit_trail: list[str] = []
audit_lock = threading.Lock()


def make_thumbnail(path: str) -> int:
    return len(path) * 16  # stands in for resizing: the thumbnail's size in bytes


def write_audit_entry(entry: tuple[str, str]) -> None:
    with audit_lock:
        audit_trail.append(f"{entry[0]}:{entry[1]}")


def send_email(address: str) -> None:
    """Pretend to send a message."""


def build_uploads(registry: CoordinatorRegistry) -> WorkCoordinator[tuple[str, str]]:
    thumbnails, audit = registry.get("thumbnails"), registry.get("audit-log")

    def handle_upload(upload: tuple[str, str]) -> None:
        user, path = upload
        thumbnails.enqueue(path)
        audit.enqueue((user, f"uploaded {path}"))

    # One at a time, so each user's audit entries are enqueued in upload order.
    return WorkCoordinator(handle_upload, CoordinatorOptions(name="uploads", max_concurrency=1))


def main() -> None:
    with CoordinatorRegistry() as registry:
        two_at_a_time = CoordinatorOptions(max_concurrency=2)
        registry.register_result("thumbnails", make_thumbnail, two_at_a_time)
        registry.register_keyed("audit-log", lambda entry: entry[0], write_audit_entry)
        registry.register_work("emails", send_email)
        registry.register("uploads", build_uploads)
        print("registered:", registry.names, "built:", registry.created)

        uploads = registry.get("uploads")
        assert registry.get("uploads") is uploads  # one instance per name
        for n in range(12):
            uploads.enqueue((f"user-{n % 3}", f"photos/{n}.jpg"))
        print("built on first use:", registry.created)
        try:
            registry.get("email")
        except UnknownCoordinatorError as exc:
            print("typo:", exc)

        # A clean shutdown drains producers before the services they feed.
        for name in ("uploads", "thumbnails", "audit-log"):
            registry.get(name).complete()
            registry.get(name).drain(timeout=10)
        thumbnails = registry.get("thumbnails")
        assert isinstance(thumbnails, ResultCoordinator)  # get() is typed as any coordinator
    # Leaving the block closed uploads, audit-log and thumbnails, newest first.
    made, size = thumbnails.stats().total_completed, sum(thumbnails.get_results())
    print(f"thumbnails: {made} made, {size} bytes")
    user_0 = [e for e in audit_trail if e.startswith("user-0:")]
    in_order = user_0 == [f"user-0:uploaded photos/{n}.jpg" for n in range(0, 12, 3)]
    print(f"audit-log: {len(audit_trail)} entries, user-0's in upload order: {in_order}")
    try:
        registry.get("emails")
    except RegistryClosedError as exc:
        print("after close:", exc)


if __name__ == "__main__":
    main()
