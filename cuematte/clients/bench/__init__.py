"""Latency benchmarks: per-stage engine timings (``stages``)."""
