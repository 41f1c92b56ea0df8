"""The persistent job queue and the executors that work through it.

    store.py      JobStore: the queue in SQLite in the outputs folder, the single source of truth
    leases.py     who runs a job, for how long: leases renewed by their runner, not pids
    intake.py     jobs from forms, flags, JSON Lines / CSV files and folders (validated, pictures copied)
    running.py    one job through the one run path (a Start -> starts.begin -> run.execute)
    executor.py   work through the queue in this process
    ray_pool.py   ... or on a Ray cluster, one long-lived worker per GPU (imported only for --ray)

Sits between the front ends and the engine: app.py -> ui -> jobs -> framepack_core -> memory.
Importing this package imports neither torch nor ray.
"""
