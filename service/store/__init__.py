"""Where the service keeps things: Redis for a deployment, or this process's memory in embedded mode.

One interface per concern (:mod:`.jobs`, :mod:`.records`, :mod:`.chunks` with :mod:`.features` and
:mod:`.videos` on top), a Redis implementation of each (``redis_*``) and the embedded twins (:mod:`.memory`);
:func:`service.store.backend.open_backend` picks one. No torch here: both processes use it.
"""
