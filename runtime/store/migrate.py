"""Versioned schema migrations of the registry (Alembic), run once, under a lock, when a Store opens.

- The revisions live in runtime/store/migrations/versions; the current one is kept in the table
  `cdl_schema_version` (Optuna's own Alembic table, `alembic_version`, shares the database).
- Opening a database at the head revision costs one query (Alembic is not imported). An older database is upgraded by the first opener
  while every other opener waits on the lock (PostgreSQL: an advisory lock; SQLite: a lock file beside the
  database), then sees the head and does nothing.
- A database made before migrations existed (its tables, no version row) is brought to 0001, which creates the
  tables it lacks, and upgraded.
- All pending revisions run in one transaction, on SQLite too: one that fails leaves the database as it was
  (a ConfigError says which upgrade failed and why).
- A database from a newer cdl (an unknown revision) is refused with a clear error; nothing is changed.
"""

from __future__ import annotations

import fcntl
import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from runtime.domain.errors import ConfigError

VERSION_TABLE = "cdl_schema_version"
BASELINE = "0001"
# the newest revision under migrations/versions, as Alembic finds it (a test checks): a database at it opens with
# one query and without importing Alembic, 0.4 s of every `cdl` command
HEAD = "0008"
_PG_LOCK_KEY = 0x0CD1_5C4E  # pg_advisory_lock key for registry migrations
log = logging.getLogger("cdl.store.migrate")


def _config(conn: Connection | None = None):  # noqa: ANN202
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.attributes["connection"] = conn
    return cfg


@functools.cache
def _script():  # noqa: ANN202
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(_config())


def head_revision() -> str:
    return _script().get_current_head()


def current_revision(conn: Connection) -> str | None:
    from alembic.migration import MigrationContext

    return MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE}).get_current_revision()


def _known(rev: str) -> bool:
    try:
        return _script().get_revision(rev) is not None
    except Exception:  # noqa: BLE001 - alembic raises several kinds for an unknown id
        return False


@contextmanager
def _lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                conn.commit()
        return
    db = engine.url.database
    if not db or db == ":memory:":
        yield  # one process owns an in-memory database
        return
    with open(f"{db}.migrate.lock", "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextmanager
def _transactional(engine: Engine) -> Iterator[Engine]:
    """An engine whose transactions hold DDL too, so that a migration that fails leaves the database as it was.
    PostgreSQL's do. Python's sqlite3 commits before each DDL statement on its own, so a SQLite file is
    migrated on a connection of its own that issues BEGIN itself (the recipe of SQLAlchemy's pysqlite notes);
    an in-memory database (one connection, owned by this process) is migrated as it is."""
    db = engine.url.database
    if engine.dialect.name != "sqlite" or not db or db == ":memory:":
        yield engine
        return
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    eng = create_engine(engine.url, connect_args={"timeout": 60}, poolclass=NullPool)

    @event.listens_for(eng, "connect")
    def _autocommit_driver(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # the driver opens no transaction; "begin" below does

    @event.listens_for(eng, "begin")
    def _begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        yield eng
    finally:
        eng.dispose()


def _state(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return current_revision(conn)


def _at_head(engine: Engine) -> bool:
    """Whether the version table holds HEAD alone (one plain query; no table, or any trouble: no)."""
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}"))] == [(HEAD,)]
    except DBAPIError:
        return False


def upgrade(engine: Engine, target: str = "head") -> list[str]:
    """Bring the database to `target` (default: head). Returns the revisions applied (empty: nothing to do)."""
    if target == "head" and _at_head(engine):
        return []
    from alembic import command

    head = head_revision()
    rev = _state(engine)
    if rev == head and target == "head":
        return []
    with _lock(engine), _transactional(engine) as eng:
        with eng.begin() as conn:
            rev = current_revision(conn)
            if rev is not None and not _known(rev):
                raise ConfigError(
                    f"the registry database {engine.url.render_as_string(hide_password=True)} is at schema "
                    f"revision {rev}, which this cdl does not know (its newest is {head}): it was opened by a "
                    "newer cdl-studio; upgrade cdl-studio")
            if rev is None and inspect(conn).has_table("cdl_source"):
                # made before migrations: the baseline creates the tables it lacks (the first builds made
                # only the data pipeline's) and keeps the others; it is not reported as applied
                log.info("registry made before migrations: bringing it to %s", BASELINE)
                command.upgrade(_config(conn), BASELINE)
                rev = BASELINE
            before = rev
            try:
                command.upgrade(_config(conn), target)
            except DBAPIError as exc:  # the transaction rolls back: nothing of the upgrade stays
                reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
                raise ConfigError(
                    f"the registry database {engine.url.render_as_string(hide_password=True)} could not be "
                    f"upgraded from schema revision {before or 'empty'} to {target if target != 'head' else head}: "
                    f"{reason}; it is left as it was") from exc
            after = current_revision(conn)
        applied = _between(before, after)
        if applied:
            log.info("registry schema upgraded %s -> %s", before or "empty", after)
        return applied


def _between(before: str | None, after: str | None) -> list[str]:
    if before == after or after is None:
        return []
    return [r.revision for r in reversed(list(_script().iterate_revisions(after, before or "base")))]
