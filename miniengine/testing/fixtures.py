"""Helpers for testing code that uses miniengine, usable as a pytest plugin.

``pytest -p miniengine.testing`` (or ``pytest_plugins = ["miniengine.testing"]`` in a conftest)
provides the ``miniengine_db`` fixture: a fresh database file in a temporary folder, set as
``$MINIENGINE_DB`` for the test and closed afterwards, so tests never touch the user's database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from miniengine.storage.paths import ENV_VAR
from miniengine.storage.store import close_all_stores

__all__ = ["miniengine_db"]


@pytest.fixture
def miniengine_db(tmp_path: Path) -> Iterator[Path]:
    """The path of a fresh database file, set as ``$MINIENGINE_DB`` for the test."""
    path = tmp_path / "engine.sqlite"
    previous = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(path)
    try:
        yield path
    finally:
        close_all_stores()
        if previous is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = previous
