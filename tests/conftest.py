"""Shared fixtures: every test gets its own database file (see ``miniengine.testing``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.services.postgres import PostgresServer, running_postgres

pytest_plugins = ["miniengine.testing"]


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One private PostgreSQL cluster for the whole run (started by the first test needing it)."""
    with running_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh database of the private cluster for this test (dropped afterwards)."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(autouse=True)
def _isolated_db(miniengine_db: object) -> None:
    """No test may touch ``~/.miniengine``: each one runs against a fresh temporary database."""
