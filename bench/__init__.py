"""Benchmarks: figures (throughput, latency, recovery) written as JSON, never asserted in tests."""
