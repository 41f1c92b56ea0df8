"""Tests, one folder per package they test; shared helpers in tests/support."""
