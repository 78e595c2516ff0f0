"""Benchmark harness (``r2tuning bench`` / ``python -m bench.run``): see docs/performance.md."""
