"""Benchmarks; each prints one JSON line last. Not tests. cpu/: meaningful on any machine; gpu/: need a
GPU to mean anything (and the GPU session); support/: what they and the tests share."""
