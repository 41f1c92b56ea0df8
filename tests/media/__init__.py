"""framepack_core/media/: pictures, video writing and segments."""
