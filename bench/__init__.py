"""Benchmarks: `make bench`, or one module with `python -m bench.NAME`."""
