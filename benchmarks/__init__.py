"""Benchmarks: per-stage latency across backends and precisions."""
