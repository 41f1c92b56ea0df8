"""A run: its life (lifecycle.Run: start, execute, stop), its files, its owner, its record and the MP4's tags.

`from framepack_core.run import Run` is the front ends' one way in; the name is found lazily, so that the
run's small modules (files, owner) import without the whole run.
"""


def __getattr__(name):
    if name == "Run":
        from .lifecycle import Run

        return Run
    raise AttributeError(name)
