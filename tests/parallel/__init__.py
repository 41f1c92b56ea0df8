"""framepack_core/parallel/: one video on several processes."""
