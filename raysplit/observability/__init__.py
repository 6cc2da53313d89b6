"""What a run exports while it runs: the metric names (one list) and their recorder."""
