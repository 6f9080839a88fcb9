"""Storage: the sqlite file that holds provenance, checkpoints and (later) the task queue."""
