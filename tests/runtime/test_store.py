"""The store's behaviour suite, run against every backend: SQLite file, in-memory SQLite, PostgreSQL."""

from __future__ import annotations

import threading

import pytest

from runtime.domain.entities import CleanedEntry, Item, QuarantineEntry, SourceRecord
from runtime.domain.errors import NotFoundError
from runtime.store import Store


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite-file":
        s = Store(f"sqlite:///{tmp_path / 'registry.db'}")
    elif request.param == "sqlite-memory":
        s = Store("sqlite://")
    else:
        url, schema = request.getfixturevalue("pg_schema")
        s = Store(url, schema=schema)
    yield s
    s.close()


def _items(n: int, source: str = "src", label: str = "a") -> list[Item]:
    return [
        Item(uid=f"{source}:{i}", id=f"{i:064x}", kind="text", source=f"{source}/{i}", source_label=label,
             pack="p.bin", offset=i, length=1, encoding="bytes")
        for i in range(n)
    ]


def test_import_replaces_a_source_atomically(store: Store):
    rec = SourceRecord("src", "csv", "h1", 3, None)
    store.import_source(rec, _items(3), [(f"{i:064x}", "a", "import:src") for i in range(3)])
    assert store.item_count() == 3
    assert len(store.labels()) == 3
    store.import_source(SourceRecord("src", "csv", "h2", 2, None), _items(2, label="b"),
                        [(f"{i:064x}", "b", "import:src") for i in range(2)])
    assert store.item_count() == 2
    assert {r.label for r in store.labels()} == {"b"}
    assert store.sources()[0].content_hash == "h2"


def test_failed_import_leaves_nothing(store: Store):
    store.import_source(SourceRecord("src", "csv", "h1", 2, None), _items(2), [])
    dup = _items(2) + _items(1)  # the same uid twice violates the primary key mid-transaction
    from sqlalchemy.exc import IntegrityError

    with pytest.raises(IntegrityError):
        store.import_source(SourceRecord("src", "csv", "h2", 3, None), dup, [])
    assert store.item_count() == 2
    assert store.sources()[0].content_hash == "h1"


def test_splits_and_fingerprint(store: Store):
    store.import_source(SourceRecord("src", "csv", "h", 4, None), _items(4), [])
    fp = store.items_fingerprint()
    store.set_splits({"src:0": "test", "src:1": "train", "src:2": "train", "src:3": "train"})
    assert [i.split for i in store.items()] == ["test", "train", "train", "train"]
    assert len(store.items(split="train")) == 3
    assert store.items_fingerprint() == fp  # splits are not part of the import fingerprint


def test_labels_undo_and_revision(store: Store):
    r0 = store.labels_revision()
    a = store.add_label("x", "cat", "ann", "manual")
    store.add_label("x", None, "ann", "manual", action="skip")
    r1 = store.labels_revision()
    assert r1 != r0
    undone = store.undo_last("ann")
    assert undone is not None and undone.action == "skip"
    assert store.labels_revision() != r1
    assert [r.id for r in store.labels()] == [a.id]
    assert store.undo_last("ann").id == a.id
    assert store.undo_last("ann") is None
    assert store.labels() == []
    assert len(store.labels(include_undone=True)) == 2


def test_replace_labels_by_prefix(store: Store):
    store.add_label("x", "keep", "me", "manual")
    n = store.replace_labels("ls:f.json#", [{"item_id": "x", "label": "a", "labeler": "ls:1", "task_ref": "ls:f.json#1/0"}])
    assert n == 1
    store.replace_labels("ls:f.json#", [{"item_id": "y", "label": "b", "labeler": "ls:1", "task_ref": "ls:f.json#2/0"}])
    assert sorted((r.item_id, r.label) for r in store.labels()) == [("x", "keep"), ("y", "b")]


def test_importing_the_same_labels_again_changes_nothing(store: Store):
    """A Label Studio file imported again, or one whose every task matched no item (--skip-unmatched, 0 labels),
    made a new labels revision: every step from data.ingest on turned stale, "labels changed since it ran". The
    same rows again leave the revision as it was; other rows, or a row undone since, change it."""
    rows = [{"item_id": "y", "label": "b", "labeler": "ls:1", "task_ref": "ls:f_1.json#2/0"},
            {"item_id": "z", "label": None, "labeler": "ls:2", "action": "skip", "task_ref": "ls:f_1.json#3/0"}]
    store.replace_labels("ls:f_1.json#", rows)
    rev = store.labels_revision()
    assert store.replace_labels("ls:f_1.json#", [dict(r) for r in rows]) == 2
    assert store.labels_revision() == rev
    store.replace_labels("ls:empty.json#", [])  # nothing matched, nothing before
    assert store.labels_revision() == rev
    store.replace_labels("ls:f_1.json#", [rows[0]])  # one row fewer
    assert store.labels_revision() != rev
    # "_" in a file's name is no LIKE wildcard: another file's rows stay
    store.replace_labels("ls:fx1.json#", [{"item_id": "w", "label": "c", "labeler": "ls:1", "task_ref": "ls:fx1.json#1/0"}])
    store.replace_labels("ls:f_1.json#", [])
    assert [(r.item_id, r.label) for r in store.labels()] == [("w", "c")]


def test_versions(store: Store):
    assert store.latest_version() is None
    v1 = store.add_version("h1.dir", "c1", 10, {"a": 10}, {"train": 8, "test": 2}, {}, "outs: []\n")
    v2 = store.add_version("h2.dir", None, 11, {"a": 11}, {"train": 9, "test": 2}, {}, "outs: []\n")
    assert (v1.id, v2.id) == ("v1", "v2")
    assert [v.id for v in store.versions()] == ["v1", "v2"]
    assert store.version("2").id == "v2"
    assert store.version("V2").id == store.version(" v2 ").id == "v2"  # as `cdl data checkout V2` types it
    assert store.version_by_hash("h1.dir").id == "v1"
    assert store.latest_version().classes == {"a": 11}
    with pytest.raises(NotFoundError, match="v9"):
        store.version("v9")


def test_quarantine_and_cleaned(store: Store):
    store.replace_quarantine("v1", [QuarantineEntry("v1", "u1", "i1", "s/1", "min_length", "3 characters")])
    store.replace_quarantine("v1", [QuarantineEntry("v1", "u2", "i2", "s/2", "min_length", "0 characters")])
    assert [q.item for q in store.quarantine("v1")] == ["u2"]
    store.replace_cleaned("v1", [CleanedEntry("v1", "u3", "i3", "s/3", "decoded")])
    assert store.cleaned("v1")[0].action == "decoded"
    assert store.quarantine("v2") == []


def test_step_runs_and_interrupted(store: Store):
    rid = store.start_step_run("data.import", "job1", "fp")
    assert store.last_step_run("data.import").status == "running"
    store.finish_step_run(rid, "done", "out", summary={"items": 3})
    last = store.last_step_runs()["data.import"]
    assert last.status == "done" and last.summary == {"items": 3} and last.duration is not None
    # a run whose process is gone is marked failed
    with store.session() as s:
        from runtime.store.tables import SqlStepRun

        s.add(SqlStepRun(step="data.split", status="running", input_fp="x", pid=2**22 + 12345))
        s.commit()
    assert store.mark_interrupted_runs("gone") == 1
    assert store.last_step_run("data.split").status == "failed"


def test_an_interrupted_run_closes_its_experiment_but_not_another_hosts_runs(store: Store):
    import os
    import socket
    import subprocess
    import sys

    from runtime.store.tables import SqlStepRun

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    dead_pid = int(gone)  # that process has exited
    exp_fields = dict(kind="tune", step="model.tune", dataset_version="v1", transform="t", framework="torch",
                      template="mlp", git_commit=None, git_dirty=False)
    with store.session() as s:  # a model.tune run on another machine sharing the registry: its pid is not ours
        s.add(SqlStepRun(step="model.tune", job="elsewhere", status="running", input_fp="x", pid=dead_pid,
                         host="another-host"))
        s.commit()
    theirs = store.create_experiment(job="elsewhere", **exp_fields)
    rid = store.start_step_run("model.tune", None, "fp")  # ours, from `cdl run` (no job)
    with store.session() as s:
        row = s.get(SqlStepRun, rid)
        assert row.host == socket.gethostname()
        row.pid = dead_pid  # ... killed
        s.add(row)
        s.commit()
    ours = store.create_experiment(job=None, **exp_fields)
    here = socket.gethostname()
    running = store.create_trial(ours.id, 0, {"lr": 0.1}, worker=f"{here}:{dead_pid}")  # the killed step's
    done = store.create_trial(ours.id, 1, {"lr": 0.2}, worker=f"{here}:{dead_pid}")
    store.finish_trial(done.id, "complete", 0.5, 2)
    live = store.create_trial(ours.id, 2, {"lr": 0.3}, worker=f"{here}:{os.getpid()}")  # a worker still at it
    remote = store.create_trial(ours.id, 3, {"lr": 0.4}, worker="another-host:1")
    assert store.mark_interrupted_runs("gone") == 1
    assert store.experiment(ours.id).status == "failed"
    assert store.trial(running.id).state == "failed" and store.trial(done.id).state == "complete"
    assert store.trial(live.id).state == "running" and store.trial(remote.id).state == "running"
    assert store.experiment(theirs.id).status == "running"
    with store.session() as s:
        from sqlalchemy import select

        assert s.execute(select(SqlStepRun.status).where(SqlStepRun.job == "elsewhere")).scalar_one() == "running"


def test_a_failed_job_fails_its_step_runs_and_the_trials_no_live_process_runs(store: Store):
    import os
    import socket
    import subprocess
    import sys

    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True, check=True).stdout.strip())
    exp_fields = dict(kind="tune", step="model.tune", dataset_version="v1", transform="t", framework="torch",
                      template="mlp", git_commit=None, git_dirty=False)
    store.create_job("job1", {"steps": ["model.tune"]})
    rid = store.start_step_run("model.tune", "job1", "fp")
    exp = store.create_experiment(job="job1", **exp_fields)
    other = store.create_experiment(job="job2", **exp_fields)  # another job's: untouched
    here = socket.gethostname()
    own = store.create_trial(exp.id, 0, {"lr": 0.1}, worker=f"{here}:{dead_pid}")  # the job's process, now gone
    anonymous = store.create_trial(exp.id, 1, {"lr": 0.2})
    live = store.create_trial(exp.id, 2, {"lr": 0.3}, worker=f"{here}:{os.getpid()}")  # a `cdl tune worker`
    remote = store.create_trial(exp.id, 3, {"lr": 0.4}, worker="another-host:1")
    done = store.create_trial(exp.id, 4, {"lr": 0.5}, worker=f"{here}:{dead_pid}")
    store.finish_trial(done.id, "complete", 0.5, 2)
    bystander = store.create_trial(other.id, 0, {"lr": 0.1}, worker=f"{here}:{dead_pid}")
    assert store.fail_job_runs("job1", "cancelled by the user") == 1
    run = store.last_step_run("model.tune")
    assert run.id == rid and run.status == "failed" and run.error == "cancelled by the user"
    # cancelled by a person: the study and its trials are cancelled (they read as failed)
    assert store.experiment(exp.id).status == "cancelled" and store.experiment(other.id).status == "running"
    assert store.trial(own.id).state == "cancelled" and store.trial(anonymous.id).state == "cancelled"
    assert store.trial(live.id).state == "running" and store.trial(remote.id).state == "running"
    assert store.trial(done.id).state == "complete" and store.trial(bystander.id).state == "running"


def test_label_leases(store: Store):
    import time

    items = ["i1", "i2", "i3"]
    assert store.lease_item("ann", items, 60) == "i1"
    assert store.lease_item("bob", items, 60) == "i2"  # i1 is ann's
    assert store.lease_item("ann", items, 60) == "i1"  # asking again keeps her item
    assert store.leased_by_others("ann") == {"i2"}
    store.release_lease("ann", "i1")  # labeled
    assert store.lease_item("cy", items, 0.5) == "i1"
    assert store.lease_item("ann", ["i1", "i2"], 60) is None  # both open with others
    time.sleep(0.7)  # cy's lease runs out
    assert store.lease_item("ann", ["i1", "i2"], 60) == "i1"


def test_two_labelers_asking_at_once_get_different_items(store: Store):
    if store.url == "sqlite://":
        pytest.skip("one in-memory database per process: the concurrent case needs a file or a server")
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(4) as pool:
        got = pool.map(_lease_one, [(store.url, store.schema, f"labeler{k}") for k in range(4)])
    assert sorted(got) == ["i0", "i1", "i2", "i3"], got


def _lease_one(args) -> str:  # noqa: ANN001
    url, schema, labeler = args
    s = Store(url, schema=schema)
    try:
        return s.lease_item(labeler, [f"i{k}" for k in range(8)], 60)
    finally:
        s.close()


def test_state_roundtrip(store: Store):
    assert store.get_state("k", 5) == 5
    store.set_state("k", {"a": [1, 2]})
    assert store.get_state("k") == {"a": [1, 2]}


def test_concurrent_writers(store: Store):
    errors = []

    def work(n: int) -> None:
        try:
            for i in range(20):
                store.add_label(f"item{n}-{i}", "x", f"w{n}", "manual")
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(store.labels()) == 80


def test_a_missing_variant_names_what_was_built_and_what_was_not(store: Store):
    """`cdl deploy m:1:nope` listed the skipped variants (qat on a PyTorch model, tensorrt without a GPU) among
    the ones to choose from; choosing one of those then failed again."""
    from runtime.domain.errors import NotFoundError

    store.put_variant("m", 1, "fp32")
    store.put_variant("m", 1, "static_int8")
    store.put_variant("m", 1, "tensorrt", status="skipped", message="TensorRT unavailable: no GPU")
    with pytest.raises(NotFoundError) as err:
        store.variant("m", 1, "nope")
    assert "(built: fp32, static_int8; not built: tensorrt)" in str(err.value), err.value
    store.put_variant("m", 2, "fp32")
    with pytest.raises(NotFoundError) as err:
        store.variant("m", 2, "int8")
    assert "(built: fp32);" in str(err.value) and "not built" not in str(err.value), err.value


def _reference_states(records) -> dict:  # noqa: ANN001
    """The effective-label rules as first written, record by record: what the cached, incremental states of
    runtime.labeling must always equal."""
    from runtime.labeling import LabelState

    manual, imported, model = {}, {}, {}
    for r in records:
        if r.undone or r.action != "label" or r.label is None:
            continue
        if r.source == "manual":
            if r.item_id not in manual or r.id > manual[r.item_id].id:
                manual[r.item_id] = r
        elif r.source == "import":
            imported.setdefault(r.item_id, []).append(r)
        elif r.source == "model":
            if r.item_id not in model or r.id > model[r.item_id].id:
                model[r.item_id] = r
    out = {}
    for item_id in set(manual) | set(imported):
        if item_id in manual:
            out[item_id] = LabelState(manual[item_id].label, False, (manual[item_id].label,), "manual")
            continue
        distinct = tuple(sorted({r.label for r in imported[item_id] if r.label}))
        out[item_id] = (LabelState(distinct[0], False, distinct, "import") if len(distinct) == 1
                        else LabelState(None, True, distinct, "import"))
    return out


def test_cached_label_states_follow_every_change(store: Store):
    """The labeling queue keeps every item's effective label between calls and updates it from the rows added
    since (70 000 labels were read on each item the panel showed). After any mix of labels, skips, model labels,
    undos and re-imports replacing rows, the cached states equal the rules applied to the whole table."""
    import random

    from runtime.labeling import _current, current_states, effective_labels

    rng = random.Random(7)
    items = [f"{i:064x}" for i in range(40)]
    labels = ["a", "b", "c"]
    store.replace_labels("f1.json", [{"item_id": i, "label": rng.choice(labels), "labeler": "import:f1",
                                      "task_ref": f"f1.json#{k}"} for k, i in enumerate(items)])
    assert current_states(store) == _reference_states(store.labels())
    for step in range(120):
        op = rng.choice(["manual", "manual", "skip", "model", "undo", "import", "reimport"])
        who = rng.choice(["ann", "bob"])
        if op == "manual":
            store.add_label(rng.choice(items), rng.choice(labels), who, "manual")
        elif op == "skip":
            store.add_label(rng.choice(items), None, who, "manual", "skip")
        elif op == "model":
            store.add_label(rng.choice(items), rng.choice(labels), "model", "model")
        elif op == "undo":
            store.undo_last(who)
        elif op == "import":  # a second annotator's file: may disagree (a conflict) or agree
            store.replace_labels(f"f2.json#{step}", [{"item_id": rng.choice(items), "label": rng.choice(labels),
                                                      "labeler": "import:f2", "task_ref": f"f2.json#{step}"}])
        else:  # the first file imported again, changed: its rows are replaced
            store.replace_labels("f1.json", [{"item_id": i, "label": rng.choice(labels), "labeler": "import:f1",
                                              "task_ref": f"f1.json#{k}"} for k, i in enumerate(items[:30])])
        want = _reference_states(store.labels())
        assert current_states(store) == want, (step, op)
        assert effective_labels(store.labels()) == want
        # the sets progress counts by, updated with the states
        now = _current(store)
        assert now.labeled == {i for i, st in want.items() if st.label is not None}, (step, op)
        assert now.conflicts == {i for i, st in want.items() if st.label is None and st.conflict}, (step, op)
    assert any(s.conflict for s in want.values()) and any(s.source == "manual" for s in want.values())


def test_the_items_fingerprint_is_kept_per_revision_and_follows_every_write(store: Store, tmp_path):
    """statuses() hashed every item on each call (0.3 s at 70 000 items); the hash is now kept per revision token,
    which every write of items renews in its own transaction. It must still change with every import and removal,
    also when another process (here: another Store on the same database) made it."""
    store.import_source(SourceRecord("src", "csv", "h1", 3, None), _items(3), [])
    first = store.items_fingerprint()
    assert store.items_fingerprint() == first and list(store._items_fp.values()) == [first]  # kept
    store.import_source(SourceRecord("src", "csv", "h2", 3, None), _items(3, label="b"), [])  # same uids, new labels
    second = store.items_fingerprint()
    assert second != first
    store.import_source(SourceRecord("more", "csv", "h3", 2, None), _items(2, source="more"), [])
    third = store.items_fingerprint()
    assert third not in (first, second)
    store.remove_source("more")
    assert store.items_fingerprint() == second  # the same item set hashes the same
    if store.url.startswith("sqlite:///") and store.url != "sqlite:///:memory:":
        other = Store(store.url)
        try:
            other.import_source(SourceRecord("x", "csv", "h4", 1, None), _items(1, source="x"), [])
        finally:
            other.close()
        assert store.items_fingerprint() not in (first, second, third)


def test_the_items_fingerprint_is_kept_in_the_registry_for_the_next_process(store: Store, monkeypatch):
    """Each `cdl` process hashed every item again (0.5 s of `cdl status` on Fashion-MNIST): the transaction that
    writes items files their hash beside the new revision token, and a new process reads it while the token is the
    same. A kept hash of another token is never taken; without one (items written before it was kept) the items
    are hashed, as before."""
    from runtime.store import store as store_module
    from runtime.store.store import ITEMS_FINGERPRINT, ITEMS_REVISION

    def fresh() -> str:  # what hashing the items says, nothing kept
        with store.session() as s:
            return store_module._items_hash(s)

    for write in (lambda: store.import_source(SourceRecord("src", "csv", "h1", 3, None), _items(3), []),
                  lambda: store.import_source(SourceRecord("src", "csv", "h2", 3, None), _items(3, label="b"), []),
                  lambda: store.import_source(SourceRecord("more", "csv", "h3", 2, None), _items(2, source="more"),
                                              []),
                  lambda: store.remove_items("more", [_items(2, source="more")[0].uid]),
                  lambda: store.remove_source("more")):
        write()
        kept = store.get_state(ITEMS_FINGERPRINT)
        assert kept == {"token": store.get_state(ITEMS_REVISION), "fingerprint": fresh()}
        store._items_fp.clear()  # as a new process finds it: read, not hashed
        hashed: list[int] = []
        monkeypatch.setattr(store_module, "_items_hash", lambda s, hashed=hashed: hashed.append(1) or "not this")
        assert store.items_fingerprint() == kept["fingerprint"] and hashed == []
        monkeypatch.undo()
    # kept for another token (or items written before it was kept): hashed, and not written on the way
    last = store.items_fingerprint()
    store.set_state(ITEMS_FINGERPRINT, {"token": "another", "fingerprint": "0" * 64})
    store._items_fp.clear()
    assert store.items_fingerprint() == last == fresh()
    assert store.get_state(ITEMS_FINGERPRINT)["token"] == "another"


def test_a_workspace_without_the_revision_token_gets_one(store: Store):
    """A registry from before the token was hashed on every call until its next import; it gets a token at the
    first call, and the hash is kept from then on, still following later imports."""
    from runtime.store.store import ITEMS_REVISION

    store.import_source(SourceRecord("src", "csv", "h1", 3, None), _items(3), [])
    fp = store.items_fingerprint()
    with store.session() as s:  # as a registry written before the token existed
        from runtime.store import tables as t

        s.delete(s.get(t.SqlState, ITEMS_REVISION))
        s.commit()
    store._items_fp.clear()
    assert store.items_fingerprint() == fp
    token = store.get_state(ITEMS_REVISION)
    assert token and store._items_fp == {token: fp}
    from runtime.store.store import ITEMS_FINGERPRINT

    assert store.get_state(ITEMS_FINGERPRINT) == {"token": token, "fingerprint": fp}  # filed with the new token
    assert store.items_fingerprint() == fp and store.get_state(ITEMS_REVISION) == token  # one token, kept
    store.import_source(SourceRecord("more", "csv", "h2", 2, None), _items(2, source="more"), [])
    assert store.items_fingerprint() != fp


def test_removing_some_of_a_sources_items_with_state_in_one_transaction(store: Store):
    """A dismissed retrain proposal's unlabeled samples go, and its record changes, together."""
    store.import_source(SourceRecord("proposal:p1", "proposal", "p1", 5, None), _items(5, "proposal:p1", None))
    store.import_source(SourceRecord("other", "csv", "h", 2, None), _items(2, "other"))
    before = store.items_fingerprint()
    assert store.item_uids() == {f"proposal:p1:{i}" for i in range(5)} | {"other:0", "other:1"}
    store.remove_items("proposal:p1", ["proposal:p1:1", "proposal:p1:3", "other:0"],
                       state={"proposal:p1": {"status": "dismissed"}, "proposal:p1:items": ["proposal:p1:0"]})
    # only that source's items go (other:0 is another source's), and its count follows
    assert store.item_uids() == {"proposal:p1:0", "proposal:p1:2", "proposal:p1:4", "other:0", "other:1"}
    assert {s.name: s.items for s in store.sources()} == {"proposal:p1": 3, "other": 2}
    assert store.get_state("proposal:p1") == {"status": "dismissed"}
    assert store.get_state("proposal:p1:items") == ["proposal:p1:0"]
    assert store.items_fingerprint() != before


def test_rows_written_in_bulk_read_back_as_one_written_alone(store: Store):
    """An import's items and labels go to SQLite's executemany directly (SQLAlchemy's statement machinery cost
    2.6 s of a Fashion-MNIST import): each value converted as SQLAlchemy binds it, so a bulk row reads back as a
    row added alone does, times and flags included, and "offset" (an SQL keyword) is still a column."""
    from datetime import UTC, datetime

    items = _items(3)
    items[1] = Item(uid="src:1", id=items[1].id, kind="text", source="src/1", source_label=None, pack="p.bin",
                    offset=12345, length=7, encoding="bytes", source_split="test")
    store.import_source(SourceRecord("src", "csv", "h", 3, None), items,
                        [(items[0].id, "a", "import:src"), (items[2].id, "b", "import:src", "manual")])
    assert [(i.uid, i.source_label, i.offset, i.length, i.source_split, i.split) for i in store.items()] == [
        ("src:0", "a", 0, 1, None, None), ("src:1", None, 12345, 7, "test", None), ("src:2", "a", 2, 1, None, None)]
    alone = store.add_label(items[1].id, "c", "ana")
    bulk = store.labels()[:2]
    assert [(r.item_id, r.label, r.labeler, r.source, r.action, r.undone) for r in bulk] == [
        (items[0].id, "a", "import:src", "import", "label", False),
        (items[2].id, "b", "import:src", "manual", "label", False)]
    for r in (*bulk, alone):
        assert type(r.created) is datetime and r.created.tzinfo is not None
        assert abs((datetime.now(UTC) - r.created).total_seconds()) < 60
    assert store.item_tally() == (3, 3, {"a": 2, None: 1})
    if store.engine.dialect.name == "sqlite":  # stored as SQLAlchemy writes them (sqlite3's own adapter differs)
        from sqlalchemy import text

        with store.engine.connect() as c:
            raw = c.execute(text("SELECT created, typeof(undone) FROM cdl_label ORDER BY id")).all()
        assert len({(len(created), kind) for created, kind in raw}) == 1, raw
    store.replace_labels("file:x", [{"item_id": items[1].id, "label": "d", "labeler": "ls", "task_ref": "file:x",
                                     "created": datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)}])
    (back,) = [r for r in store.labels() if r.task_ref == "file:x"]
    assert back.created == datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC) and back.undone is False
    store.replace_quarantine("v1", [QuarantineEntry("v1", "src:0", items[0].id, "src/0", "empty", "no text")])
    store.replace_cleaned("v1", [CleanedEntry("v1", "src:1", items[1].id, "src/1", "stripped")])
    assert [q.reason for q in store.quarantine("v1")] == ["no text"]
    assert [c.action for c in store.cleaned("v1")] == ["stripped"]
