"""How a run starts: one module per kind of start."""
