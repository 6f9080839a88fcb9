"""The test suite; a package so that ``tests.workchains`` is importable by module path."""
