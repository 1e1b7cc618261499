"""Versioned schema migrations and concurrent writers, on a SQLite file and on PostgreSQL.

Each check runs in several real processes (spawned), as several cdl processes opening one registry would.
"""

from __future__ import annotations

import multiprocessing as mp

import pytest
from sqlalchemy import inspect, text

from runtime.domain.errors import ConfigError
from runtime.store import Store, migrate


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'registry.db'}", None
    return request.getfixturevalue("pg_schema")


def _engine(url: str, schema: str | None):
    from runtime.store.store import _engine as make

    return make(url, schema)


def _open(args) -> list[str]:  # noqa: ANN001
    url, schema = args
    s = Store(url, schema=schema)
    try:
        return s.migrated
    finally:
        s.close()


def _write(args) -> int:  # noqa: ANN001
    url, schema, n, per = args
    s = Store(url, schema=schema)
    try:
        exp = s.create_experiment(kind="tune", step="model.tune", job=None, dataset_version="v1", transform="t",
                                  framework="torch", template="mlp", git_commit=None, git_dirty=False)
        for i in range(per):
            tr = s.create_trial(exp.id, n * 1000 + i, {"lr": 0.1})
            s.log_metrics(tr.id, 1, {"val_accuracy": 0.5, "val_loss": 1.0})
            s.finish_trial(tr.id, "complete", 0.5, 1)
        return per
    finally:
        s.close()


def _pool(n: int):
    return mp.get_context("spawn").Pool(n)


def test_schema_after_migrations_matches_the_models(db):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext
    from sqlalchemy import MetaData

    from runtime.store.store import _own_tables

    url, schema = db
    s = Store(url, schema=schema)
    assert s.migrated == ["0001", "0002", "0003", "0004", "0005", "0006", "0007", "0008"]
    md = MetaData()
    for tbl in _own_tables():
        tbl.to_metadata(md)
    with s.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), md)
        rev = migrate.current_revision(conn)
    s.close()
    # Only our own tables are compared (Optuna's tables share the database).
    diff = [d for d in diff if not (d[0] == "remove_table" and d[1].name in (migrate.VERSION_TABLE, "alembic_version"))]
    assert diff == [], diff
    assert rev == migrate.head_revision() == migrate.HEAD == "0008"
    assert Store(url, schema=schema).migrated == []  # at head: nothing to do


def test_a_registry_at_head_opens_without_importing_alembic(tmp_path):
    """HEAD is the revision Alembic finds newest (checked above); a database at it is opened with one query, and
    Alembic (0.4 s of every `cdl` command) is not imported. One at an older revision still is upgraded."""
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'registry.db'}"
    Store(url).close()
    probe = ("import sys; from runtime.store import Store; s = Store(sys.argv[1]); "
             "print(s.migrated, 'alembic' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe, url], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["[]", "False"], out.stdout + out.stderr
    older = f"sqlite:///{tmp_path / 'older.db'}"
    eng = _engine(older, None)
    assert migrate.upgrade(eng, "0007")[-1] == "0007"
    eng.dispose()
    out = subprocess.run([sys.executable, "-c", probe, older], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["['0008']", "True"], out.stdout + out.stderr


def test_an_older_database_is_upgraded_once_by_concurrent_openers(db):
    url, schema = db
    eng = _engine(url, schema)
    assert migrate.upgrade(eng, "0001") == ["0001"]
    with eng.begin() as conn:
        conn.execute(text("INSERT INTO cdl_trial (experiment_id, number, params, state, epochs, started) "
                          "VALUES (1, 0, '{}', 'complete', 3, CURRENT_TIMESTAMP)"))
        assert "worker" not in {c["name"] for c in inspect(conn).get_columns("cdl_trial")}
    eng.dispose()
    with _pool(4) as pool:
        results = pool.map(_open, [(url, schema)] * 4)
    assert sorted(results, key=len) == [[], [], [], ["0002", "0003", "0004", "0005", "0006", "0007", "0008"]], results
    s = Store(url, schema=schema)
    assert s.trial(1).epochs == 3  # the data survived
    with s.engine.connect() as conn:
        assert "worker" in {c["name"] for c in inspect(conn).get_columns("cdl_trial")}
    s.close()


def test_a_database_from_before_migrations_is_stamped_and_upgraded(db):
    url, schema = db
    eng = _engine(url, schema)
    migrate.upgrade(eng, "0001")
    with eng.begin() as conn:
        conn.execute(text(f"DROP TABLE {migrate.VERSION_TABLE}"))  # what create_all used to leave
    eng.dispose()
    s = Store(url, schema=schema)
    assert s.migrated == ["0002", "0003", "0004", "0005", "0006", "0007", "0008"]
    s.close()


def test_a_registry_from_the_first_builds_gets_the_tables_it_lacks(db):
    """The first builds made only the data pipeline's tables, with no version table: opening such a registry
    creates the rest and keeps its rows."""
    url, schema = db
    data_tables = {"cdl_source", "cdl_item", "cdl_label", "cdl_dataset_version", "cdl_quarantine", "cdl_cleaned",
                   "cdl_step_run", "cdl_state"}
    eng = _engine(url, schema)
    migrate.upgrade(eng, "0001")
    with eng.begin() as conn:
        for name in set(inspect(conn).get_table_names()) - data_tables:
            conn.execute(text(f"DROP TABLE {name}"))
        conn.execute(text("INSERT INTO cdl_state (key, value) VALUES ('k', '[1, 2]')"))
        assert set(inspect(conn).get_table_names()) == data_tables
    eng.dispose()
    s = Store(url, schema=schema)
    try:
        assert s.migrated == ["0002", "0003", "0004", "0005", "0006", "0007", "0008"]
        assert s.get_state("k") == [1, 2]
        exp = s.create_experiment(kind="tune", step="model.tune", job=None, dataset_version="v1", transform="t",
                                  framework="torch", template="mlp", git_commit=None, git_dirty=False)
        assert s.create_trial(exp.id, 0, {"lr": 0.1}, worker="h:1", retry_of=None).worker == "h:1"
    finally:
        s.close()


def test_a_migration_that_fails_leaves_the_database_as_it_was(db):
    url, schema = db
    eng = _engine(url, schema)
    migrate.upgrade(eng, "0001")
    with eng.begin() as conn:  # 0004 will fail: its column is already there
        conn.execute(text("ALTER TABLE cdl_trial ADD COLUMN retry_of INTEGER"))
    eng.dispose()
    with pytest.raises(ConfigError, match="retry_of"):
        Store(url, schema=schema)
    eng = _engine(url, schema)
    with eng.connect() as conn:
        assert migrate.current_revision(conn) == "0001"  # not 0003: 0002 and 0003 were rolled back with 0004
        assert "worker" not in {c["name"] for c in inspect(conn).get_columns("cdl_trial")}
        assert "host" not in {c["name"] for c in inspect(conn).get_columns("cdl_step_run")}
    eng.dispose()


def test_a_database_from_a_newer_cdl_is_refused_untouched(db):
    url, schema = db
    Store(url, schema=schema).close()
    eng = _engine(url, schema)
    with eng.begin() as conn:
        conn.execute(text(f"UPDATE {migrate.VERSION_TABLE} SET version_num = '0099'"))
    eng.dispose()
    with pytest.raises(ConfigError, match=r"revision 0099.*newer cdl-studio"):
        Store(url, schema=schema)
    eng = _engine(url, schema)
    with eng.connect() as conn:
        assert migrate.current_revision(conn) == "0099"
    eng.dispose()


def test_four_writer_processes_never_see_a_locked_database(db):
    url, schema = db
    Store(url, schema=schema).close()
    per = 40
    with _pool(4) as pool:
        done = pool.map(_write, [(url, schema, n, per) for n in range(4)])
    assert done == [per] * 4
    s = Store(url, schema=schema)
    trials = [t for e in s.experiments() for t in s.trials(e.id)]
    assert len(trials) == 4 * per and all(t.state == "complete" for t in trials)
    s.close()


def test_an_unreachable_database_is_a_clear_error_without_the_password():
    with pytest.raises(ConfigError, match=r"cannot open the registry database postgresql://nobody:\*\*\*@127.0.0.1:1/db") as e:
        Store("postgresql://nobody:secret@127.0.0.1:1/db")
    assert "secret" not in str(e.value)
