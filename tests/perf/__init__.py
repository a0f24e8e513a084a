"""Benchmarks that print figures (``python -m tests.perf.bench``, ``python -m tests.perf.scale``).

Run by hand or by ``make bench``, never by ``make test``; ``tests/unit/test_perf_smoke.py``
only checks that the generators here still work.
"""
