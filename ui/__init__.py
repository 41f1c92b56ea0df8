"""Front ends: the command line (cli.py) and the browser page (serve.py, layout.py, handlers.py, worker.py).

They talk to framepack_core through its public API only: a request in, events out, a cancel flag.
"""
