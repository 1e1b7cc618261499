"""CDL_DATABASE_URL moves a workspace's registry to PostgreSQL through the same code."""

from __future__ import annotations

from runtime.api import add_source
from runtime.datasets import diff_json, report_json
from runtime.jobs import Runner
from runtime.workspace import Workspace
from tests.conftest import make_bbc_subset


def test_data_pipeline_on_postgresql(tmp_path, pg_schema, monkeypatch):
    url, schema = pg_schema
    monkeypatch.setenv("CDL_DATABASE_URL", url)
    monkeypatch.setenv("CDL_DATABASE_SCHEMA", schema)
    ws = Workspace.init(tmp_path / "ws", "text-classification")
    assert ws.store.engine.dialect.name == "postgresql"
    assert not (ws.root / ".cdl" / "registry.db").exists()
    src = make_bbc_subset(tmp_path / "bbc.zip", per_class=8)
    add_source(ws, src)
    assert Runner(ws).run(until="data.label").ok
    assert ws.store.latest_version().items == 41  # 8 per class and sport/199.txt
    assert any(c["source"].endswith("sport/199.txt") for c in report_json(ws)["cleaned"])
    make_bbc_subset(src, per_class=9)
    assert Runner(ws).run(until="data.label").ok
    assert diff_json(ws, "v1", "v2")["added"] == 5
    ws.close()


def test_backup_of_a_postgresql_workspace_says_the_registry_is_not_in_it(tmp_path, pg_schema, monkeypatch):
    """The registry stays in PostgreSQL (pg_dump's job): the archive has the rest, the summary says so, and the
    workspace restored beside it opens the same registry."""
    import tarfile

    from runtime.backup import backup, restore

    url, schema = pg_schema
    monkeypatch.setenv("CDL_DATABASE_URL", url)
    monkeypatch.setenv("CDL_DATABASE_SCHEMA", schema)
    ws = Workspace.init(tmp_path / "ws", "text-classification")
    add_source(ws, make_bbc_subset(tmp_path / "bbc.zip", per_class=4))
    assert Runner(ws).run(until="data.version").ok
    out = backup(ws, tmp_path / "ws.tar.gz", with_data=True)
    assert out["registry"].startswith("postgresql") and any("PostgreSQL" in n for n in out["notes"])
    with tarfile.open(out["archive"]) as tar:
        assert ".cdl/registry.db" not in tar.getnames() and "cdl.yaml" in tar.getnames()
    got = restore(out["archive"], tmp_path / "restored")
    assert got["dataset_versions"] == 1 and got["registry"].startswith("postgresql")
    ws.close()


def test_experiments_show_names_the_study_storage_a_postgresql_workspace_needs(tmp_path, pg_schema, monkeypatch):
    """`cdl experiments show` names the Optuna storage; a registry in a schema of its own needs its search_path too,
    or `optuna.load_study` with the URL alone finds no such study."""
    import optuna

    from runtime.experiments import experiment_json

    url, schema = pg_schema
    monkeypatch.setenv("CDL_DATABASE_URL", url)
    monkeypatch.setenv("CDL_DATABASE_SCHEMA", schema)
    ws = Workspace.init(tmp_path / "ws", "text-classification")
    add_source(ws, make_bbc_subset(tmp_path / "bbc.zip", per_class=8))
    assert Runner(ws).run(until="model.tune", overrides={"model.tune": {"n_trials": 2, "max_epochs": 1}}).ok
    doc = experiment_json(ws.store, "latest-tune")
    shown, _, rest = doc["storage"].partition(" ")
    assert rest == f"(schema {schema}: engine_kwargs connect_args options -csearch_path={schema})", doc["storage"]
    storage = optuna.storages.RDBStorage(shown, engine_kwargs={"connect_args": {"options": f"-csearch_path={schema}"}})
    study = optuna.load_study(study_name=doc["study"], storage=storage)
    assert len(study.trials) == len(doc["trial_list"]) == 2
    ws.close()
