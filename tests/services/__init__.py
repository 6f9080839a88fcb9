"""Private instances of real services (an SSH server, ...) that tests start and stop themselves."""
