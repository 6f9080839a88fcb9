"""Helpers for testing code that uses miniengine.

- ``WaitingProcess`` and ``open_gate``: a process that waits until it is told to continue, so
  pause, play and kill can be tested deterministically, without sleeps.
- The ``miniengine_db`` pytest fixture (``pytest -p miniengine.testing`` or
  ``pytest_plugins = ["miniengine.testing"]``): a fresh database file per test; a test marked
  ``backends`` (or using ``backend_db``) runs on sqlite and on PostgreSQL (``postgres_url``, from
  ``$MINIENGINE_TEST_POSTGRES``), where ``miniengine_db`` is the database's URL.
"""

from __future__ import annotations

from miniengine.testing.gates import WaitingProcess, gate_is_open, open_gate

__all__ = ["WaitingProcess", "gate_is_open", "open_gate"]

try:
    from miniengine.testing.fixtures import (
        backend_db,
        miniengine_backend,
        miniengine_db,
        postgres_url,
        pytest_configure,
        pytest_generate_tests,
    )
except ImportError:  # pytest is not installed: the fixture is not needed then
    pass
else:
    __all__ += [
        "backend_db",
        "miniengine_backend",
        "miniengine_db",
        "postgres_url",
        "pytest_configure",
        "pytest_generate_tests",
    ]
