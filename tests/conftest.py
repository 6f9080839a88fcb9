"""Shared fixtures: every test gets its own database file (see ``miniengine.testing``)."""

from __future__ import annotations

import pytest

pytest_plugins = ["miniengine.testing"]


@pytest.fixture(autouse=True)
def _isolated_db(miniengine_db: object) -> None:
    """No test may touch ``~/.miniengine``: each one runs against a fresh temporary database."""
