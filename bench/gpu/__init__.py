"""Benchmarks that need a GPU to mean anything (a CPU runs them only as a dry run), and the GPU session
that runs them in one call (gpu_session.sh) and reads its verdict (gpu_verdict.py)."""
