"""Where the service keeps things: Redis for a deployment, or this process's memory in embedded mode.

One interface per concern (:mod:`.jobs`, :mod:`.records`, :mod:`.chunks` with :mod:`.features` and
:mod:`.videos` on top), a Redis implementation of each (``redis_*``, one server or a cluster: :mod:`.connect`),
the embedded twins (:mod:`.memory`) and the cold tier under both (:mod:`.cold`, :mod:`.cold_records`);
:func:`service.store.backend.open_backend` picks them. No torch here: both processes use it.
"""
