"""The actors behind a coordinator, for code that lives in a Pykka actor system.

Most users never need this module: `coordinator.actor_ref` with the messages of
`ephemeral_actors.messages` covers `tell`/`ask`. For proxy-style calls that type-check,
use `coordinator.proxy()`, which returns a `SupervisorProxy`:

```python
proxy = coordinator.proxy()
op_id = proxy.enqueue(item).get()          # Future[int]
stats = proxy.stats().get()                # Future[CoordinatorStats]
proxy.pause.defer()                        # tell semantics
```

Deadlock rule: never block an actor on a future that needs that same actor. An
actor's handler may `ask` a coordinator (its supervisor is another actor), but a
body running in a coordinator must not `ask` the actor that is waiting for that
body's outcome.
"""

from __future__ import annotations

import pykka
from pykka.typing import ActorMemberMixin, proxy_method

from ephemeral_actors._coordinators._keyed import KeyChild
from ephemeral_actors._coordinators._supervisor import Supervisor
from ephemeral_actors._dispatch import PoolActor
from ephemeral_actors._public import publish

__all__ = ["KeyChild", "PoolActor", "Supervisor", "SupervisorProxy"]


class SupervisorProxy(ActorMemberMixin, pykka.ActorProxy[Supervisor]):
    """The type of a coordinator's supervisor proxy, for static checkers.

    Never instantiated: `coordinator.proxy()` returns Pykka's own `ActorProxy`, cast
    to this type (the `pykka.typing` pattern). Each method sends a message and
    returns a `pykka.Future` of the answer; use `.defer()` for fire-and-forget.
    """

    enqueue = proxy_method(Supervisor.enqueue)
    submit = proxy_method(Supervisor.submit)
    stats = proxy_method(Supervisor.stats)
    get_snapshot = proxy_method(Supervisor.get_snapshot)
    pause = proxy_method(Supervisor.pause)
    resume = proxy_method(Supervisor.resume)
    complete = proxy_method(Supervisor.complete)
    cancel = proxy_method(Supervisor.cancel)
    set_max_concurrency = proxy_method(Supervisor.set_max_concurrency)
    pin = proxy_method(Supervisor.pin)
    unpin = proxy_method(Supervisor.unpin)
    evict = proxy_method(Supervisor.evict)


# The actor classes live in private modules; this is the path users see and pickle.
publish(__name__, globals(), __all__)
