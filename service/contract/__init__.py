"""What both processes share: request/response/job models, settings, error types, Redis key names, metric names.

Nothing here imports torch or the engine.
"""
