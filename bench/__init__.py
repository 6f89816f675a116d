"""Benchmarks: each prints our figures beside a baseline measured in the same run (docs/performance.md).

Run them from the repository root as modules, e.g. `.venv/bin/python -m bench.serve_bench`.
"""
