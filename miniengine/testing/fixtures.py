"""Helpers for testing code that uses miniengine, usable as a pytest plugin.

``pytest -p miniengine.testing`` (or ``pytest_plugins = ["miniengine.testing"]`` in a conftest)
provides the ``miniengine_db`` fixture: a fresh database file in a temporary folder, set as
``$MINIENGINE_DB`` for the test and closed afterwards, so tests never touch the user's database.

A test marked ``backends`` (or a whole module: ``pytestmark = pytest.mark.backends``), and any
test using ``backend_db``, runs once per backend: ``miniengine_db`` is then a fresh sqlite file in
the ``[sqlite]`` variant and the URL of a fresh PostgreSQL database from the ``postgres_url``
fixture in the ``[postgresql]`` variant.  ``postgres_url`` uses ``$MINIENGINE_TEST_POSTGRES`` (the
URL of an empty database the test may fill) and skips the test without it; a conftest may
override it to start a server of its own.  A test marked ``sqlite_only`` (it opens the sqlite file
itself) runs on sqlite only.  ``xfail_on("postgresql", reason=...)`` names a known failure of a
test's variant on that backend, which then runs as a strict ``xfail``; with ``long_on("postgresql",
reason=...)`` that variant is a ``long`` run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from miniengine.storage.open import close_all_backends
from miniengine.storage.paths import ENV_VAR

__all__ = [
    "backend_db",
    "miniengine_backend",
    "miniengine_db",
    "postgres_url",
    "pytest_configure",
    "pytest_generate_tests",
]

#: The URL of an empty PostgreSQL database that tests may use (``postgres_url``).
TEST_POSTGRES_VAR = "MINIENGINE_TEST_POSTGRES"


#: The backends a test marked ``backends`` runs on, in the order of its variants.
BACKENDS = ("sqlite", "postgresql")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "backends: run the test on every backend (miniengine_db is a path or a URL)"
    )
    config.addinivalue_line(
        "markers", "sqlite_only(reason): the test works on the sqlite file itself: sqlite only"
    )
    config.addinivalue_line(
        "markers",
        "xfail_on(backend, reason): the test's variant on that backend is a known failure "
        "(strict xfail)",
    )
    config.addinivalue_line(
        "markers", "long_on(backend, reason): the test's variant on that backend is marked long"
    )
    config.addinivalue_line("markers", "long: a long run (deselect with -m 'not long')")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Give a test marked ``backends`` (or using ``backend_db``) one variant per backend."""
    if "miniengine_backend" not in metafunc.fixturenames:
        return
    wanted = "backend_db" in metafunc.fixturenames
    wanted = wanted or metafunc.definition.get_closest_marker("backends") is not None
    if not wanted:
        return
    only_sqlite = metafunc.definition.get_closest_marker("sqlite_only") is not None
    backends = [
        pytest.param(backend, marks=_marks_on(metafunc.definition, backend))
        for backend in (BACKENDS[:1] if only_sqlite else BACKENDS)
    ]
    metafunc.parametrize("miniengine_backend", backends, indirect=True, scope="function")


def _marks_on(definition: pytest.Item, backend: str) -> list[pytest.MarkDecorator]:
    """The marks of a test's variant on ``backend``, from its ``xfail_on`` and ``long_on``."""
    marks = []
    for marker in definition.iter_markers("xfail_on"):
        if marker.args[:1] == (backend,):
            reason = f"on {backend}: {marker.kwargs.get('reason', '')}"
            marks.append(pytest.mark.xfail(strict=True, reason=reason))
    if any(marker.args[:1] == (backend,) for marker in definition.iter_markers("long_on")):
        marks.append(pytest.mark.long)
    return marks


@pytest.fixture
def miniengine_backend(request: pytest.FixtureRequest) -> str:
    """The backend of ``miniengine_db``: ``sqlite`` unless the test runs on every backend."""
    backend: str = getattr(request, "param", BACKENDS[0])
    return backend


@pytest.fixture
def miniengine_db(
    request: pytest.FixtureRequest, tmp_path: Path, miniengine_backend: str
) -> Iterator[Path | str]:
    """A fresh database, set as ``$MINIENGINE_DB`` for the test: the path of a sqlite file, or in
    the PostgreSQL variant of a test run on every backend the URL of a fresh database."""
    location: Path | str = tmp_path / "engine.sqlite"
    if miniengine_backend == "postgresql":
        location = str(request.getfixturevalue("postgres_url"))
    previous = os.environ.get(ENV_VAR)
    os.environ[ENV_VAR] = str(location)
    try:
        yield location
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


@pytest.fixture
def backend_db(miniengine_db: Path | str) -> Path | str:
    """``miniengine_db`` on each backend in turn (a sqlite path, a PostgreSQL URL): a test using
    this fixture runs once per backend, as one marked ``backends`` does."""
    return miniengine_db
