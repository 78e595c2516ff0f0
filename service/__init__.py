"""The grounding service: a FastAPI API process and worker processes that share one Redis.

The API (:mod:`service.api`) validates, stores uploads, hands jobs off and answers; it never imports torch.
Workers (:mod:`service.worker`) own the models and the device. :mod:`service.schemas` is the contract between
the two; :mod:`service.keys` names every Redis key; :mod:`service.settings` holds every limit.
"""
