"""The PostgreSQL schema, its version, and creating or migrating it safely.

The tables, indexes and constraints are those of the sqlite schema at the same version (one
number describes both): ``bigint`` identity pks, ``bytea`` for msgpack blobs, ``double
precision`` for times (seconds since the epoch, as on sqlite).  The version lives in
``miniengine_meta``, whose presence also marks a database (or rather its schema on the
connection's ``search_path``) as miniengine's.

Creation and migrations run in one transaction under ``pg_advisory_xact_lock`` and re-read the
version once they hold it, so two processes creating the schema at the same moment both
succeed and it is created once.  A schema of a newer version, or tables named like ours
without a version, are refused before anything is written.

Where PostgreSQL differs from sqlite:

- uuids and the scheduler's computer uuids are ``COLLATE "C"``: a uuid prefix is looked up as a
  range of the uuid index, which needs byte order (a linguistic collation ignores dashes);
- the flags (``paused``, ``submitted``, ``done``) stay integers 0/1, so rows read back are the
  same values as on sqlite;
- identity values are never reused (sqlite's plain ``INTEGER PRIMARY KEY`` may reuse the pk
  of the last row deleted), and an insert that ``ON CONFLICT DO NOTHING`` drops, or that rolls
  back, uses one up: task pks (a deduplicated enqueue) and node pks have gaps.  Pks still grow
  with time within one writer; no code relies on them being dense;
- foreign keys are enforced (sqlite declares them but the engine does not enable them);
- the state-change events are written by a PL/pgSQL trigger (a trigger's ``WHEN`` cannot
  hold a subquery), which takes a transaction-level advisory lock before inserting, so that
  event ids become visible in commit order as on sqlite, where writers are serialised
  anyway: a subscriber reads ``id > last seen`` and must never skip a later-committed lower
  id.  It costs only while someone subscribes, like the events themselves.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

from miniengine.exceptions import IncompatibleDatabaseError, StoreError
from miniengine.storage.schema import APPLICATION_ID
from miniengine.storage.schema import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "ADVISORY_LOCK_KEY",
    "EVENTS_LOCK_KEY",
    "MIGRATIONS",
    "REPOSITORY_KEY",
    "SCHEMA_VERSION",
    "TABLES",
    "Migration",
    "ensure_schema",
    "read_meta",
    "read_schema_version",
    "write_meta_tx",
]

#: The key in ``miniengine_meta`` of the repository folder of the database (file contents live
#: in a folder, not in PostgreSQL; every host of the database must see it at this path).
REPOSITORY_KEY = "repository"

#: The advisory lock that serialises creating and migrating the schema ("MiNi", as sqlite's
#: application id).
ADVISORY_LOCK_KEY = APPLICATION_ID
#: The advisory lock that orders the inserts into ``events`` by commit ("MiNe").
EVENTS_LOCK_KEY = 0x4D694E65

#: The tables of the schema (a database holding any of them without ``miniengine_meta`` is
#: someone else's and left alone).
TABLES = (
    "nodes",
    "links",
    "logs",
    "checkpoints",
    "tasks",
    "waits",
    "awaited",
    "call_memo",
    "workers",
    "events",
    "watchers",
    "gates",
    "computers",
    "calcjob_jobs",
    "comments",
    "groups",
    "group_nodes",
    "settings",
)

_SCHEMA_V7 = f"""
CREATE TABLE miniengine_meta (
    key            text PRIMARY KEY,
    value          text NOT NULL
);

CREATE TABLE computers (
    pk              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid            text COLLATE "C" NOT NULL UNIQUE,
    label           text NOT NULL UNIQUE,
    hostname        text NOT NULL,
    description     text NOT NULL DEFAULT '',
    transport_type  text NOT NULL,
    scheduler_type  text NOT NULL,
    metadata        bytea NOT NULL,
    configuration   bytea,
    ctime           double precision NOT NULL,
    mtime           double precision NOT NULL
);

CREATE TABLE nodes (
    pk             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid           text COLLATE "C" NOT NULL UNIQUE,
    node_type      text NOT NULL,
    process_type   text,
    process_label  text,
    process_state  text,
    process_status text,
    exit_status    bigint,
    exit_message   text,
    exception      text,
    paused         integer NOT NULL DEFAULT 0,
    label          text NOT NULL DEFAULT '',
    description    text NOT NULL DEFAULT '',
    attributes     bytea,
    owner          text,
    lease_epoch    bigint NOT NULL DEFAULT 0,
    lease_expires  double precision,
    ctime          double precision NOT NULL,
    mtime          double precision NOT NULL,
    submitted      integer NOT NULL DEFAULT 0,
    control        text,
    computer_pk    bigint REFERENCES computers (pk)
);
CREATE INDEX nodes_active ON nodes (process_state)
    WHERE process_state IN ('created', 'running', 'waiting');
CREATE INDEX nodes_process_ctime ON nodes (ctime) WHERE process_state IS NOT NULL;
CREATE INDEX nodes_control ON nodes (owner) WHERE control IS NOT NULL;
CREATE INDEX nodes_computer ON nodes (computer_pk) WHERE computer_pk IS NOT NULL;

CREATE TABLE links (
    pk         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    in_pk      bigint NOT NULL REFERENCES nodes (pk),
    out_pk     bigint NOT NULL REFERENCES nodes (pk),
    link_type  text NOT NULL,
    label      text NOT NULL
);
CREATE INDEX links_in ON links (in_pk);
CREATE INDEX links_out ON links (out_pk);

CREATE TABLE logs (
    pk         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_pk    bigint NOT NULL REFERENCES nodes (pk),
    time       double precision NOT NULL,
    levelname  text NOT NULL,
    message    text NOT NULL
);
CREATE INDEX logs_node ON logs (node_pk);

CREATE TABLE checkpoints (
    node_pk    bigint PRIMARY KEY REFERENCES nodes (pk),
    seq        bigint NOT NULL,
    data       bytea NOT NULL
);

CREATE TABLE tasks (
    pk             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    process_pk     bigint NOT NULL REFERENCES nodes (pk),
    dedup_key      text NOT NULL UNIQUE,
    status         text NOT NULL DEFAULT 'ready',
    worker         text,
    lease_expires  double precision,
    not_before     double precision NOT NULL DEFAULT 0,
    attempts       integer NOT NULL DEFAULT 0,
    ctime          double precision NOT NULL
);
CREATE INDEX tasks_ready ON tasks (not_before, pk) WHERE status = 'ready';
CREATE INDEX tasks_ready_pk ON tasks (pk) WHERE status = 'ready';
CREATE INDEX tasks_leased ON tasks (worker) WHERE status = 'leased';
CREATE INDEX tasks_process ON tasks (process_pk);

CREATE TABLE waits (
    parent_pk      bigint PRIMARY KEY REFERENCES nodes (pk),
    seq            bigint NOT NULL,
    outstanding    integer NOT NULL
);

CREATE TABLE awaited (
    child_pk       bigint NOT NULL REFERENCES nodes (pk),
    parent_pk      bigint NOT NULL REFERENCES nodes (pk),
    PRIMARY KEY (child_pk, parent_pk)
);

CREATE TABLE call_memo (
    parent_pk      bigint NOT NULL REFERENCES nodes (pk),
    seq            bigint NOT NULL,
    call_index     integer NOT NULL,
    process_type   text NOT NULL,
    fingerprint    text NOT NULL,
    child_pk       bigint NOT NULL REFERENCES nodes (pk),
    PRIMARY KEY (parent_pk, seq, call_index)
);

CREATE TABLE workers (
    id             text PRIMARY KEY,
    pid            integer NOT NULL,
    hostname       text NOT NULL,
    slots          integer NOT NULL,
    busy           integer NOT NULL DEFAULT 0,
    started        double precision NOT NULL,
    heartbeat      double precision NOT NULL
);

CREATE TABLE events (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    node_pk     bigint NOT NULL,
    from_state  text,
    to_state    text NOT NULL,
    time        double precision NOT NULL
);

CREATE TABLE watchers (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    expires     double precision NOT NULL
);

CREATE FUNCTION miniengine_state_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    at double precision := CASE WHEN TG_OP = 'INSERT' THEN NEW.ctime ELSE NEW.mtime END;
BEGIN
    IF EXISTS (SELECT 1 FROM watchers WHERE expires > at) THEN
        PERFORM pg_advisory_xact_lock({EVENTS_LOCK_KEY});
        INSERT INTO events (node_pk, from_state, to_state, time)
        VALUES (NEW.pk, CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.process_state END,
                NEW.process_state, at);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER nodes_state_event AFTER UPDATE OF process_state ON nodes
    FOR EACH ROW WHEN (NEW.process_state IS DISTINCT FROM OLD.process_state)
    EXECUTE FUNCTION miniengine_state_event();

CREATE TRIGGER nodes_create_event AFTER INSERT ON nodes
    FOR EACH ROW WHEN (NEW.process_state IS NOT NULL)
    EXECUTE FUNCTION miniengine_state_event();

CREATE TABLE gates (
    name        text PRIMARY KEY,
    opened      double precision NOT NULL
);

CREATE TABLE calcjob_jobs (
    process_pk      bigint PRIMARY KEY REFERENCES nodes (pk),
    computer_uuid   text COLLATE "C" NOT NULL,
    job_id          text NOT NULL,
    owner           text,
    lease_expires   double precision,
    done            integer NOT NULL DEFAULT 0,
    scheduler_state text,
    detailed_info   bytea,
    created         double precision NOT NULL
);
CREATE INDEX calcjob_jobs_owner ON calcjob_jobs (owner, computer_uuid);
"""


#: Version 8 (as ``storage/schema_v8.py``): the host of each worker.
_SCHEMA_V8 = """
ALTER TABLE workers ADD COLUMN host text NOT NULL DEFAULT '';
"""

#: Version 9 (as ``storage/schema_v9.py``): extras (``jsonb``), comments and groups.
_SCHEMA_V9 = """
ALTER TABLE nodes ADD COLUMN extras jsonb NOT NULL DEFAULT '{}';

CREATE TABLE comments (
    pk         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid       text COLLATE "C" NOT NULL UNIQUE,
    node_pk    bigint NOT NULL REFERENCES nodes (pk),
    ctime      double precision NOT NULL,
    mtime      double precision NOT NULL,
    content    text NOT NULL
);
CREATE INDEX comments_node ON comments (node_pk);

CREATE TABLE groups (
    pk           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    uuid         text COLLATE "C" NOT NULL UNIQUE,
    label        text NOT NULL,
    type_string  text NOT NULL,
    description  text NOT NULL DEFAULT '',
    extras       jsonb NOT NULL DEFAULT '{}',
    ctime        double precision NOT NULL,
    UNIQUE (label, type_string)
);

CREATE TABLE group_nodes (
    group_pk   bigint NOT NULL REFERENCES groups (pk),
    node_pk    bigint NOT NULL REFERENCES nodes (pk),
    PRIMARY KEY (group_pk, node_pk)
);
CREATE INDEX group_nodes_node ON group_nodes (node_pk);
"""

#: Version 10 (as ``storage/schema_v10.py``): the caching hash of a process (the index ends with
#: the pk, which sqlite's indexes hold anyway, so that the oldest source is found without a sort).
_SCHEMA_V10 = """
ALTER TABLE nodes ADD COLUMN node_hash text COLLATE "C";
CREATE INDEX nodes_hash ON nodes (process_type, node_hash, pk) WHERE node_hash IS NOT NULL;
"""


#: Version 11 (as ``storage/schema_v11.py``): a ``jsonb`` copy of node attributes, which
#: PostgreSQL can query (it cannot read msgpack); the migration fills it for existing nodes.
_SCHEMA_V11 = """
ALTER TABLE nodes ADD COLUMN attributes_json jsonb;
"""


def _backfill_attributes(connection: psycopg.Connection[Any]) -> None:
    from miniengine.storage.postgres.attribute_rows import backfill

    backfill(connection)


#: Version 12 (as ``storage/schema_v12.py``): settings that live in the database.
_SCHEMA_V12 = """
CREATE TABLE settings (
    name       text COLLATE "C" PRIMARY KEY,
    value      text NOT NULL
);
"""

#: Version 13 (as ``storage/schema_v13.py``): the processes that ended badly, by state and pk.
_SCHEMA_V13 = """
CREATE INDEX nodes_ended_badly ON nodes (process_state, pk)
    WHERE process_state IN ('excepted', 'killed');
"""

#: Version 14 (as ``storage/schema_v14.py``): whether a parent ever waited for a process, set by
#: the wait and read by the process's end, which looks for waiting parents only when it is set.
_SCHEMA_V14 = """
ALTER TABLE nodes ADD COLUMN awaited smallint NOT NULL DEFAULT 0;
UPDATE nodes SET awaited = 1 WHERE pk IN (SELECT child_pk FROM awaited);
"""


class Migration(NamedTuple):
    """One forward step: the SQL that brings a schema from ``source`` to ``target``, then
    ``after`` (if any): what SQL alone cannot do, in the same transaction."""

    source: int
    target: int
    sql: str
    after: Callable[[psycopg.Connection[Any]], None] | None = None


#: The steps, applied in order from the database's version.  A step's ``sql`` may hold several
#: statements (it is sent as one simple query, in the transaction that holds the lock).  Each
#: new sqlite schema version adds a step here of the same number.
MIGRATIONS: list[Migration] = [
    Migration(0, 7, _SCHEMA_V7),
    Migration(7, 8, _SCHEMA_V8),
    Migration(8, 9, _SCHEMA_V9),
    Migration(9, 10, _SCHEMA_V10),
    Migration(10, 11, _SCHEMA_V11, _backfill_attributes),
    Migration(11, 12, _SCHEMA_V12),
    Migration(12, 13, _SCHEMA_V13),
    Migration(13, 14, _SCHEMA_V14),
]

SCHEMA_VERSION = MIGRATIONS[-1].target
assert SCHEMA_VERSION == SQLITE_SCHEMA_VERSION, "the PostgreSQL schema lags the sqlite one"


def read_schema_version(connection: psycopg.Connection[Any]) -> int | None:
    """The schema version of the database, ``None`` when it has no miniengine schema.

    Reads only; raises ``IncompatibleDatabaseError`` when tables named like miniengine's exist
    without a version (another program's tables on the ``search_path``).
    """
    # pg_class rather than to_regclass: the latter trusts this session's catalog cache, which
    # may still say "no such table" after another session created it while we waited for a lock
    if (
        connection.execute(
            "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE c.relname = 'miniengine_meta' AND n.nspname = ANY(current_schemas(false))"
        ).fetchone()
        is None
    ):
        foreign = connection.execute(
            "SELECT string_agg(c.relname, ', ' ORDER BY c.relname) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = ANY(%s) "
            "AND c.relkind IN ('r', 'p', 'v') AND n.nspname = ANY(current_schemas(false))",
            (list(TABLES),),
        ).fetchone()
        if foreign is not None and foreign[0] is not None:
            raise _foreign(foreign[0])
        return None
    row = connection.execute(
        "SELECT value FROM miniengine_meta WHERE key = 'schema_version'"
    ).fetchone()
    # (the schema and its version are written in one transaction: a row missing or not a
    # version was changed by hand, and no migration can start from it)
    text = None if row is None else str(row[0])
    if text is None or not text.isascii() or not text.isdigit() or int(text) == 0:
        raise IncompatibleDatabaseError(
            "the database has miniengine's tables, but its schema version "
            f"({'missing' if text is None else repr(text)}) is not one miniengine writes: it "
            "was changed by hand. Restore the database from a backup, or set the version its "
            "tables have again (miniengine_meta, key 'schema_version'); it was left untouched"
        )
    return int(text)


def read_meta(connection: psycopg.Connection[Any], key: str) -> str | None:
    """The value of ``key`` in ``miniengine_meta`` (``None`` when unset)."""
    row = connection.execute("SELECT value FROM miniengine_meta WHERE key = %s", (key,)).fetchone()
    return None if row is None else str(row[0])


def write_meta_tx(connection: psycopg.Connection[Any], key: str, value: str) -> None:
    """Set ``key`` in ``miniengine_meta`` (in the caller's transaction)."""
    connection.execute(
        "INSERT INTO miniengine_meta (key, value) VALUES (%s, %s) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (key, value),
    )


def _foreign(tables: str) -> IncompatibleDatabaseError:
    return IncompatibleDatabaseError(
        f"tables named like miniengine's ({tables}) exist without a miniengine schema version: "
        "this is another program's schema; it was left untouched"
    )


def _check_version(where: str, version: int | None) -> bool:
    """Raise for a newer schema; return True when the schema needs work."""
    if version is not None and version > SCHEMA_VERSION:
        raise IncompatibleDatabaseError(
            f"{where} was written by a newer miniengine (schema version {version}, this version "
            f"understands up to {SCHEMA_VERSION}); upgrade miniengine to open it"
        )
    return version is None or version < SCHEMA_VERSION


def ensure_schema(connection: psycopg.Connection[Any], where: str) -> None:
    """Create or migrate the schema to :data:`SCHEMA_VERSION`, idempotently.

    ``where`` names the database in messages (its URL without password).  The connection
    must not be inside a transaction; this commits its own.  A newer or foreign schema is
    refused with ``IncompatibleDatabaseError`` before anything is written.
    """
    import psycopg

    try:
        with connection.transaction():
            # one snapshot for both of its queries: a creator committing between them would
            # otherwise show its tables without its version (a "foreign" schema)
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            needs_work = _check_version(where, read_schema_version(connection))
        if not needs_work:
            return
        with connection.transaction():
            # READ COMMITTED whatever the server's default: each query after the lock must see
            # what a creator that held it before us committed (a REPEATABLE READ snapshot would
            # be taken as the lock is asked for, before that commit)
            connection.execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
            version = read_schema_version(connection)
            if not _check_version(where, version):
                return
            current = version or 0
            for step in MIGRATIONS:
                if step.source != current:
                    continue
                connection.execute(step.sql.encode())  # several statements: no parameters
                if step.after is not None:
                    step.after(connection)
                current = step.target
            if current != SCHEMA_VERSION:
                raise StoreError(
                    f"{where}: no migration leads from schema version {version} to {SCHEMA_VERSION}"
                )
            connection.execute(
                "INSERT INTO miniengine_meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
    except psycopg.Error as exc:
        from miniengine.storage.postgres.connection import one_line

        hint = ""
        if getattr(exc, "sqlstate", None) == "42501":  # insufficient_privilege
            hint = (
                "; the role must own the database (CREATE DATABASE ... OWNER role) or may "
                "create tables in its schema public"
            )
        raise StoreError(f"{where}: cannot create the schema: {one_line(exc)}{hint}") from exc
