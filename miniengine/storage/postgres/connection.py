"""Connecting to PostgreSQL and naming its errors.

The URL is handed to libpq as it is, so its usual ways of giving a password (in the URL,
``PGPASSWORD``, ``~/.pgpass`` or ``PGPASSFILE``) all work and none puts it on a command line;
the URL shown in messages never contains the password.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from miniengine.exceptions import DatabaseFullError, ReadOnlyDatabaseError, StoreError
from miniengine.storage.paths import USERINFO, lower_scheme, url_without_password

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "COMMIT_CHANNEL",
    "CONNECTION_DEFAULTS",
    "connect",
    "connection_options",
    "is_retryable",
    "is_url",
    "one_line",
    "store_error",
    "without_password",
]

#: The channel every write transaction notifies as it commits (see ``PostgresStore``).
COMMIT_CHANNEL = "miniengine_commit"

#: Seconds to wait for the server to accept a connection.
CONNECT_TIMEOUT = 10

#: libpq's options for every connection the engine opens, unless the URL sets them: a server
#: that vanishes without closing the connection (a failover that moved its address, a network
#: that drops packets) is noticed within half a minute (TCP keepalive probes while a query
#: waits for its answer, and a limit on data sent but never acknowledged) instead of after the
#: operating system's retransmissions, a quarter of an hour, with the store's write lock held.
CONNECTION_DEFAULTS = {
    "connect_timeout": str(CONNECT_TIMEOUT),
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "30000",
}

#: SQLSTATEs after which the whole transaction may simply run again: a serialization failure
#: and a deadlock (PostgreSQL rolled the transaction back and chose it as the victim).
RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})


def is_url(value: str) -> bool:
    """Whether ``value`` is a PostgreSQL URL (``postgresql://`` or ``postgres://``)."""
    return value.lower().startswith(("postgresql://", "postgres://"))


def without_password(url: str) -> str:
    """The URL with a password in it (``user:password@`` or ``?password=``) replaced by
    ``***`` (for messages and ``location``)."""
    return url_without_password(url)


def connection_options(url: str) -> dict[str, Any]:
    """The options to open ``url`` with: :data:`CONNECTION_DEFAULTS` that the URL does not set,
    and the application name that tells the engine's sessions apart on the server."""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(url)
    options: dict[str, Any] = {
        key: value for key, value in CONNECTION_DEFAULTS.items() if key not in given
    }
    options["application_name"] = "miniengine"
    return options


def connect(url: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A new connection to ``url``; autocommit, since the store issues ``BEGIN`` itself."""
    import psycopg

    url = lower_scheme(url)
    try:  # (a malformed URL fails in connection_options already)
        return psycopg.connect(url, autocommit=autocommit, **connection_options(url))
    except psycopg.Error as exc:
        raise StoreError(
            f"{without_password(url)}: cannot connect to the database: "
            f"{without_secrets(one_line(exc), url)}"
        ) from exc


def without_secrets(text: str, url: str) -> str:
    """``text``, a driver's message about ``url``, with the URL's password replaced by ``***``:
    libpq quotes a URL that it cannot parse whole, password included."""
    text = text.replace(url, without_password(url))
    for secret in _passwords(url):
        text = text.replace(secret, "***")
    return text


def _passwords(url: str) -> set[str]:
    """The password of ``url`` as written and decoded (``user:password@``, ``password=``),
    found by pattern, since a URL that libpq refuses may not parse here either."""
    found: list[str] = []
    # up to the last "@": a password may hold an unescaped "@" (libpq then reads the rest as
    # the host and names it in its message), "/" or "?"
    userinfo = USERINFO.match(url)
    if userinfo is not None and ":" in userinfo.group(2):
        secret = userinfo.group(2).split(":", 1)[1]
        # and each piece of it between the "@"s, which libpq may quote apart
        found += [secret, *secret.split("@")]
    found += re.findall(r"[?&]password=([^&#]*)", url)
    # (a piece of one or two characters would blank the same letters all over the message)
    return {form for secret in found for form in (secret, unquote(secret)) if len(form) > 2}


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` rolled back a transaction that may just run again."""
    return getattr(exc, "sqlstate", None) in RETRYABLE_SQLSTATES


def store_error(location: str, what: str, exc: Exception) -> StoreError:
    """The :class:`StoreError` for a psycopg error: a full disk and a read-only role by name."""
    state = getattr(exc, "sqlstate", None) or ""
    if state == "53100":  # disk_full
        return DatabaseFullError(
            f"{location}: {what}: the server's disk is full ({one_line(exc)}); the transaction "
            "was rolled back and everything stored before is intact"
        )
    if state in ("25006", "42501"):  # read_only_sql_transaction, insufficient_privilege
        return ReadOnlyDatabaseError(
            f"{location}: {what}: this role may not write the database ({one_line(exc)}); it can "
            "be read, but nothing can be stored in it"
        )
    return StoreError(f"{location}: {what}: {one_line(exc)}")


def one_line(exc: BaseException) -> str:
    """The driver's message on one line (libpq adds an indented hint on a line of its own,
    which a one-line error on the command line would show as ``\\n\\t``)."""
    return " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or (
        type(exc).__name__
    )
