"""Schema version 12: settings that live in the database (AiiDA keeps them in its profile).

- ``settings``: one row per setting, its value as JSON text.  Every program that opens the
  database reads the same values, daemon workers on any host included, so a setting such as
  ``caching.default_enabled`` reaches the workers that run submitted processes.
"""

from __future__ import annotations

__all__ = ["SCHEMA_V12"]

SCHEMA_V12 = """
CREATE TABLE settings (
    name       TEXT PRIMARY KEY,
    value      TEXT NOT NULL
) WITHOUT ROWID;
"""
