"""The runtime: processes, process functions, the runner and the launch functions."""
