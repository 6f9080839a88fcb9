"""Where the database lives: an explicit path, else ``$MINIENGINE_DB``, else the user default.

A value that is not the path of a file in an existing folder is refused rather than created: a
mistyped ``$MINIENGINE_DB`` must not silently start a new, empty database somewhere else, and a
URL must not become a folder named after its scheme.  Only the default folder is created (0700).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from miniengine.exceptions import StoreError
from miniengine.storage.permissions import os_error

__all__ = [
    "DEFAULT_DB_PATH",
    "ENV_VAR",
    "default_db_path",
    "ensure_folder",
    "is_postgres_url",
    "resolve_db",
    "resolve_db_path",
    "url_without_password",
]

ENV_VAR = "MINIENGINE_DB"
DEFAULT_DB_PATH = Path("~/.miniengine/engine.sqlite")


# Resolution is cached per (argument, $MINIENGINE_DB, working directory, $HOME): every input that
# can change the answer is in the key, so a launch always lands where the environment says.
_resolved: dict[tuple[str | None, str | None, str | None, str | None], Path] = {}


def resolve_db_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the database path now (each top-level launch calls this, so tests can switch).

    Nothing is created here (see :func:`ensure_folder`); a URL raises :class:`StoreError`.
    """
    given = os.fspath(explicit) if explicit is not None else None
    return _resolve_path(given, os.environ.get(ENV_VAR))


def _resolve_path(given: str | None, from_env: str | None) -> Path:
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


def resolve_db(explicit: str | os.PathLike[str] | None = None) -> Path | str:
    """:func:`resolve_db_path`, except that a PostgreSQL URL (``postgresql://...``) is
    returned as it is: the database of a backend that is not a file (see
    :func:`miniengine.storage.open.open_backend`).  Other URLs are refused as there."""
    given = os.fspath(explicit) if explicit is not None else None
    from_env = os.environ.get(ENV_VAR)  # read once: every top-level launch comes here
    chosen = given if given is not None else from_env or None
    # a file name has no "://": most launches skip the pattern
    if chosen is not None and "://" in chosen and is_postgres_url(chosen):
        return lower_scheme(chosen)
    return _resolve_path(given, from_env)


def is_postgres_url(value: str) -> bool:
    """Whether ``value`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    match = _URL.match(value)
    return match is not None and match.group(1).lower() in ("postgresql", "postgres")


#: libpq's ``keyword=value`` connection strings (``host=db dbname=engine``)
_KEYWORDS = re.compile(r"^\s*(host|hostaddr|port|dbname|user|password|service|sslmode)\s*=", re.I)
#: a PostgreSQL scheme without ``//`` (``postgresql:engine``), or a URL after spaces
_ALMOST_URL = re.compile(r"^\s*(postgres(ql)?:(?!//)|\s+[A-Za-z][A-Za-z0-9+.-]*://)", re.I)


def _refuse_address_as_path(value: str, source: str) -> None:
    if _KEYWORDS.match(value):
        raise StoreError(
            f"{source} looks like a libpq connection string (host=... dbname=...); give the "
            "database as a URL: postgresql://user@host:port/dbname (its password in a password "
            "file, ~/.pgpass)"
        )
    if _ALMOST_URL.match(value):
        raise StoreError(  # (not shown: a password in it may not be where a URL's would be)
            f"{source} looks like a URL with a space before it, or without the // of one: give "
            "postgresql://user@host:port/dbname, or the path of a sqlite database file"
        )


def lower_scheme(url: str) -> str:
    """``url`` with its scheme in lower case: ``is_postgres_url`` takes ``POSTGRESQL://`` as
    URLs are case-insensitive there, but libpq recognises only lower case (and would quote the
    whole URL, password included, in its error)."""
    match = _URL.match(url)
    if match is None:
        return url
    return match.group(1).lower() + url[len(match.group(1)) :]


def _resolve(explicit: str | None, from_env: str | None) -> Path:
    if explicit is not None:
        return _as_path(explicit, "the database path")
    if from_env:
        return _as_path(from_env, f"${ENV_VAR}")
    return default_db_path()


def default_db_path() -> Path:
    """``~/.miniengine/engine.sqlite`` of the current ``$HOME``."""
    return DEFAULT_DB_PATH.expanduser().absolute()


#: ``scheme://`` and what comes before the last ``@`` (the user and password, if any, as
#: written: a password may hold an unescaped ``/``, ``?``, ``#`` or ``@``).
USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)@")

#: ``scheme://`` at the start of a value: a URL, not a file name.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def _as_path(value: str, source: str) -> Path:
    """``value`` as an absolute path, or StoreError for a URL (which no backend here serves).

    A value that looks like a database server's address written another way (libpq's
    ``host=... dbname=...``, ``postgresql:name``, a URL after a space) is refused too: taken as
    a file name, it would quietly start a new sqlite database named by it, password included.
    """
    match = _URL.match(value)
    if match is None:
        _refuse_address_as_path(value, source)
        return Path(value).expanduser().absolute()
    scheme = match.group(1).lower()
    shown = url_without_password(value)
    if scheme in ("postgresql", "postgres"):
        raise StoreError(
            f"{source} is {shown!r}, a PostgreSQL database: this works on sqlite database "
            "files only (a PostgreSQL server does this kind of work itself); give the path of one"
        )
    raise StoreError(
        f"{source} is {shown!r}: {scheme}:// URLs are not supported; give the path of a "
        "sqlite database file, or a postgresql:// URL"
    )


def url_without_password(url: str) -> str:
    """``url`` with its password (``user:password@`` or ``?password=``) replaced by ``***``:
    what may be printed, logged, written to a pid file or hashed to name a folder."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<a URL that cannot be parsed>"
    userinfo = USERINFO.match(url)
    if password is None and userinfo is not None and ":" in userinfo.group(2):
        # a password with an unescaped "/", "?" or "#", which the parser took for the end of
        # the host part: masked up to the last "@"
        user = userinfo.group(2).split(":", 1)[0]
        if not set(user) & set("/?#@"):
            return url_without_password(f"{userinfo.group(1)}{user}:x@{url[userinfo.end() :]}")
    netloc = parts.netloc
    if password:
        user, _, host = netloc.rpartition("@")
        netloc = user.split(":", 1)[0] + ":***@" + host
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key == "password" for key, _ in pairs):
            query = urlencode(
                [(key, "***" if key == "password" else value) for key, value in pairs], safe="*"
            )
    shown = urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    if not netloc and url[len(parts.scheme) :].startswith(":///"):
        # no host (libpq's default, or ?host=): urlunsplit drops the empty authority's "//"
        shown = parts.scheme + "://" + shown[len(parts.scheme) + 1 :]
    return shown


def ensure_folder(path: Path) -> None:
    """Check that the folder of the database ``path`` exists; create it if it is the default.

    The default folder is created readable only by the user (0700).  Any other folder must
    exist already: a missing one is much more likely a typo than a wish for a new database.
    """
    folder = path.parent
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a database file")
    if folder.is_dir():
        return
    if path == default_db_path():
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, f"cannot create the folder {folder} for the database") from exc
        return
    if folder.exists() or folder.is_symlink():
        raise StoreError(f"{path}: {folder} is not a folder")
    raise StoreError(
        f"{path}: the folder {folder} does not exist; create it first (mkdir -m 700 {folder}) "
        "or correct the path"
    )


#: Names of this machine's loopback interface: one server answers on all of them.
_LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def database_identity(url: str) -> str:
    """Which database ``url`` names: its server (host and port) and database name, as libpq
    reads them.  The user, the password and the connection options (``sslmode``, timeouts) do
    not change the database, so two spellings of one URL (``?port=`` or ``:port``, ``localhost``
    or ``127.0.0.1``, with or without ``sslmode``) get one daemon folder, and the lock in it
    keeps a host to one daemon for the database, and ``db copy`` knows a database it is asked
    to copy onto itself."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        given = conninfo_to_dict(lower_scheme(url))
    except Exception:  # no driver, or a URL libpq refuses (the daemon fails on it anyway)
        return url_without_password(url)
    hosts = [
        "localhost" if host.strip().lower() in _LOOPBACK else host.strip().lower()
        for host in str(given.get("host") or given.get("hostaddr") or "").split(",")
    ]
    port = str(given.get("port") or "5432")
    user = str(given.get("user") or "")
    dbname = str(given.get("dbname") or user)  # libpq's default: the user's name
    return f"{','.join(hosts)}:{port}/{dbname}"
