"""Shared fixtures: every test gets its own database (see ``miniengine.testing``).

A module marked ``pytestmark = pytest.mark.backends`` runs each of its tests on a fresh sqlite
file and on a fresh database of a private PostgreSQL cluster (``tests/services/postgres.py``),
which skips with the reason printed when PostgreSQL's binaries are missing (and fails under
``CI``).  ``miniengine_db`` is then the file's path or the database's URL; a test that opens the
sqlite file itself is marked ``sqlite_only(reason=...)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.services.postgres import PostgresServer, running_postgres

pytest_plugins = ["miniengine.testing"]


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``pytest -n 2 --dist loadgroup`` (pytest-xdist), each module's tests run together
    in one worker, in order, so that module-scoped fixtures (an sshd, a SLURM cluster, a
    database the tests only read) are made once; the documentation's pages are split, one
    group per page (a page's blocks build on each other, and pages are independent)."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        group = item.nodeid.split("::", 1)[0]
        callspec = getattr(item, "callspec", None)
        page = getattr(callspec.params.get("block") if callspec else None, "page", None)
        if isinstance(page, Path):
            group = f"{group}:{page}"
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    """One private PostgreSQL cluster for the whole run (started by the first test needing it)."""
    with running_postgres(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database of the private cluster for this test (dropped afterwards).  A test (or
    a fixture of its own) asking for ``postgres_url`` gets an empty one: it may be about creating
    the schema.  Through ``miniengine_db`` it is a copy with the schema that a first open would
    create, which is quicker than creating it in every test."""
    if "postgres_url" in request.node.fixturenames:
        url = postgres_server.create_database()
    else:
        url = postgres_server.pool().take()  # made while earlier tests ran
    yield url
    postgres_server.pool().give_back(url.rsplit("/", 1)[1])  # dropped behind the tests


@pytest.fixture(autouse=True)
def _isolated_db(
    miniengine_db: Path | str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No test may touch ``~/.miniengine``: each one runs against a fresh temporary database.
    On PostgreSQL the daemon's files live under the home folder, so the test gets its own, and
    file contents go to the folder ``$MINIENGINE_REPOSITORY`` names (a sqlite file's repository
    is beside it)."""
    if not isinstance(miniengine_db, Path):
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        monkeypatch.setenv("HOME", str(home))
        monkeypatch.setenv("MINIENGINE_REPOSITORY", str(tmp_path / "repository"))
