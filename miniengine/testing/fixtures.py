"""Helpers for testing code that uses miniengine, usable as a pytest plugin.

``pytest -p miniengine.testing`` (or ``pytest_plugins = ["miniengine.testing"]`` in a conftest)
provides the ``miniengine_db`` fixture: a fresh database file in a temporary folder, set as
``$MINIENGINE_DB`` for the test and closed afterwards, so tests never touch the user's database.

``backend_db`` runs a test once per backend: on a fresh sqlite file, and on a fresh PostgreSQL
database from the ``postgres_url`` fixture.  That one uses ``$MINIENGINE_TEST_POSTGRES`` (the URL
of an empty database the test may fill) and skips the test without it; a conftest may override
it to start a server of its own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from miniengine.storage.open import close_all_backends
from miniengine.storage.paths import ENV_VAR

__all__ = ["backend_db", "miniengine_db", "postgres_url"]

#: The URL of an empty PostgreSQL database that tests may use (``postgres_url``).
TEST_POSTGRES_VAR = "MINIENGINE_TEST_POSTGRES"


@pytest.fixture
def miniengine_db(tmp_path: Path) -> Iterator[Path]:
    """The path of a fresh database file, set as ``$MINIENGINE_DB`` for the test."""
    path = tmp_path / "engine.sqlite"
    previous = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(path)
    try:
        yield path
    finally:
        close_all_backends()
        if previous is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = previous


@pytest.fixture
def postgres_url() -> str:
    """The URL of an empty PostgreSQL database for this test: ``$MINIENGINE_TEST_POSTGRES``."""
    url = os.environ.get(TEST_POSTGRES_VAR)
    if not url:
        pytest.skip(f"no PostgreSQL database to test with: set ${TEST_POSTGRES_VAR} to its URL")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def backend_db(request: pytest.FixtureRequest, miniengine_db: Path) -> Iterator[Path | str]:
    """A fresh database of each backend in turn (a sqlite path, a PostgreSQL URL), set as
    ``$MINIENGINE_DB`` for the test and closed afterwards.  A test marked ``sqlite_only`` (it
    opens the file itself) runs on sqlite only."""
    if request.param == "sqlite":
        yield miniengine_db
        return
    if request.node.get_closest_marker("sqlite_only") is not None:
        pytest.skip("the test works on the sqlite file itself")
    url: str = request.getfixturevalue("postgres_url")
    previous = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = url
    try:
        yield url
    finally:
        close_all_backends()
        if previous is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = previous
