"""framepack_core/starts/: resume, extend, branch, bridge and what continued runs check."""
