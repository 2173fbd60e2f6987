"""Running a feature set's tasks: each task's methods into one folder (run), kept by fingerprint so that a task
that did not change is reused, not recomputed (cache), and published into the outputs DVC versions (publish)."""
