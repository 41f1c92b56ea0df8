"""framepack_core/engine/: the pipeline, the session and its configuration, the rehearsal."""
