"""The ``r2tuning`` command: one entry point for the engine, the service and the benchmarks."""
