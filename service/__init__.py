"""The grounding service: a FastAPI API process and worker processes that share one Redis.

* :mod:`service.contract`: what both processes share (schemas, settings, errors, key and metric names);
* :mod:`service.store`: the Redis backend and its embedded in-process twin;
* :mod:`service.api`: the API process (validates, stores uploads, hands jobs off, answers; never imports torch);
* :mod:`service.worker`: the worker process (owns the models and the device).
"""
