"""jobs/: the queue, its intake, its runner and Ray."""
