"""framepack_core's top-level modules: the request, the settings table, the events."""
