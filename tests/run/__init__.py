"""framepack_core/run/: the run, its record, its files, remakes and reliability."""
