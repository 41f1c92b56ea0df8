"""Tools run from a tree's root (not part of the app): tools/data_flow.py measures how a run's start is handled."""
