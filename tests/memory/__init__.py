"""memory/: the budget, the manager, streaming, the host and the caps."""
