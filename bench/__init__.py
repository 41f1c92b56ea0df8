"""Benchmarks; each prints one JSON line last. Not tests."""
