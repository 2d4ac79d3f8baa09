"""Benchmarks: run with `python bench/run.py` (see docs/performance.md)."""
