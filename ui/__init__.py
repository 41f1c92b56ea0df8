"""Front ends: the command line (cli) and, later, the Gradio page. Talks to framepack_core only."""
