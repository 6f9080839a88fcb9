"""Where the database lives: an explicit path, else ``$MINIENGINE_DB``, else the user default."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DEFAULT_DB_PATH", "ENV_VAR", "resolve_db_path"]

ENV_VAR = "MINIENGINE_DB"
DEFAULT_DB_PATH = Path("~/.miniengine/engine.sqlite")


# Resolution is cached per (argument, $MINIENGINE_DB, working directory, $HOME): every input that
# can change the answer is in the key, so a launch always lands where the environment says.
_resolved: dict[tuple[str | None, str | None, str | None, str | None], Path] = {}


def resolve_db_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the database path now (each top-level launch calls this, so tests can switch).

    The default folder is created readable only by the user (0700).
    """
    given = os.fspath(explicit) if explicit is not None else None
    from_env = os.environ.get(ENV_VAR)
    chosen = given if given is not None else from_env
    # the working directory matters only for a relative path (getcwd is a system call)
    relative_to = os.getcwd() if chosen and not os.path.isabs(chosen) else None
    key = (given, from_env, relative_to, os.environ.get("HOME"))
    path = _resolved.get(key)
    if path is None:
        path = _resolve(*key[:2])
        if len(_resolved) > 64:
            _resolved.clear()
        _resolved[key] = path
    return path


def _resolve(explicit: str | None, from_env: str | None) -> Path:
    if explicit is not None:
        return Path(explicit).expanduser().absolute()
    if from_env:
        return Path(from_env).expanduser().absolute()
    path = DEFAULT_DB_PATH.expanduser().absolute()
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path
