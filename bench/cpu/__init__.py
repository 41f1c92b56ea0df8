"""Benchmarks that mean something on a CPU (most also run on a GPU); each prints one JSON line last."""
