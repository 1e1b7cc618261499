"""The registry store: one class over SQLModel tables, on SQLite (default) or PostgreSQL.

Contract:
- Thread safety: a Store may be shared by threads; every method opens and closes its own session. Worker
  processes open their own Store on the same URL.
- Consistency: a read that starts after a write returned sees that write (read-your-writes); SQLite runs in
  WAL mode so readers never block the writer.
- What goes out: frozen domain records (runtime.domain). Sql rows never leave this module.
- Transactions: methods that change several rows (an import, a version, a quarantine) commit all or nothing.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, delete, event, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError
from sqlmodel import Session, SQLModel, create_engine

from runtime.domain.entities import (
    CleanedEntry,
    DatasetVersion,
    Item,
    LabelRecord,
    QuarantineEntry,
    SourceRecord,
    StepRun,
)
from runtime.domain.errors import ConfigError, NotFoundError
from runtime.domain.frozen import fields_of, frozen_many
from runtime.domain.processes import pid_alive
from runtime.store import migrate
from runtime.store import tables as t
from runtime.store.deploy import DeployMixin
from runtime.store.models import ModelRegistryMixin, fail_orphan_trials

DATABASE_URL_ENV = "CDL_DATABASE_URL"
DATABASE_SCHEMA_ENV = "CDL_DATABASE_SCHEMA"


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


_ITEM_COLUMNS = [t.SqlItem.__table__.c[f] for f in fields_of(Item)]  # an Item's fields, in its order


def _items(rows: Iterable[Sequence[Any]]) -> list[Item]:
    """Items from rows of _ITEM_COLUMNS (made as runtime.domain.frozen does: 70 000 took 1.1-1.5 s one by one)."""
    return frozen_many(Item, rows)


def _label(row: t.SqlLabel) -> LabelRecord:
    return LabelRecord(
        id=row.id or 0,
        item_id=row.item_id,
        label=row.label,
        labeler=row.labeler,
        source=row.source,
        action=row.action,
        created=_aware(row.created),
        dataset_version=row.dataset_version,
        task_ref=row.task_ref,
        undone=row.undone,
    )


def _version(row: t.SqlDatasetVersion) -> DatasetVersion:
    return DatasetVersion(
        id=row.id,
        number=row.number,
        dvc_hash=row.dvc_hash,
        git_commit=row.git_commit,
        items=row.items,
        classes=dict(row.classes or {}),
        splits=dict(row.splits or {}),
        created=_aware(row.created),
        dvc_file=row.dvc_file,
        split_classes=dict(row.split_classes or {}),
    )


def _run(row: t.SqlStepRun) -> StepRun:
    return StepRun(
        id=row.id or 0,
        step=row.step,
        job=row.job,
        status=row.status,
        started=_aware(row.started),
        finished=_aware(row.finished),
        input_fp=row.input_fp,
        output_fp=row.output_fp,
        error=row.error,
        summary=dict(row.summary or {}),
        params=row.params,
        message=row.message,
        pid=row.pid,
        host=row.host,
    )


def _engine(url: str, schema: str | None) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn, _record):  # noqa: ANN001
            cur = dbapi_conn.cursor()
            if ":memory:" not in url:
                cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    connect_args: dict[str, Any] = {}
    if schema:
        connect_args["options"] = f"-csearch_path={schema}"
        bootstrap = create_engine(url)
        with bootstrap.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        bootstrap.dispose()
    return create_engine(url, connect_args=connect_args, pool_pre_ping=True)


class Store(ModelRegistryMixin, DeployMixin):
    """The registry. See the module docstring for the contract."""

    def __init__(self, url: str, schema: str | None = None):
        self.url = url
        self.schema = schema
        if url == "sqlite://" or url == "sqlite:///:memory:":
            # One shared in-memory database for all threads of this process.
            from sqlalchemy.pool import StaticPool

            self.engine = create_engine(
                "sqlite://", connect_args={"check_same_thread": False}, poolclass=StaticPool
            )
        self._lock = threading.RLock()
        self._items_fp: dict[str, str] = {}  # ITEMS_REVISION token -> items_fingerprint()
        try:
            if not hasattr(self, "engine"):
                self.engine = _engine(url, schema)
            # Versioned migrations (Alembic), once, under a lock; a no-op when the schema is at head.
            self.migrated = migrate.upgrade(self.engine)
        except DatabaseError as exc:  # OperationalError (cannot connect), or a file that is no database
            from sqlalchemy.engine import make_url

            if hasattr(self, "engine"):
                self.engine.dispose()
            try:
                where = make_url(url).render_as_string(hide_password=True)
            except Exception:  # noqa: BLE001
                where = "(unparsable URL)"
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig is not None else str(exc)
            hint = ("; the file is damaged: restore the workspace from its last backup (`cdl restore ARCHIVE DEST`)"
                    if "not a database" in reason or "malformed" in reason else "")
            raise ConfigError(f"cannot open the registry database {where}: {reason}{hint}") from None

    # -- construction -------------------------------------------------------------------------------------

    @classmethod
    def for_workspace(cls, root: Path) -> Store:
        """`CDL_DATABASE_URL` moves the registry to PostgreSQL; otherwise `.cdl/registry.db` (SQLite)."""
        url = os.environ.get(DATABASE_URL_ENV)
        if url:
            return cls(url, schema=os.environ.get(DATABASE_SCHEMA_ENV))
        db = Path(root) / ".cdl" / "registry.db"
        db.parent.mkdir(parents=True, exist_ok=True)
        return cls(f"sqlite:///{db}")

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        with Session(self.engine, expire_on_commit=False) as s:
            yield s

    # -- sources and items --------------------------------------------------------------------------------

    def import_source(
        self,
        source: SourceRecord,
        items: Sequence[Item],
        labels: Sequence[tuple[str, ...]] = (),
        options: dict[str, Any] | None = None,
        replaces: Sequence[str] = (),
    ) -> None:
        """Replace everything one source contributed (items and its import labels) in one transaction.

        labels: (item_id, label, labeler[, source]) from the source itself; source "import" where not given, or
        "manual" for a decision the source records (a Label Studio annotation marked ground truth).
        replaces: other sources (no longer configured) that go in the same transaction: a source file that moved
        (or another of the same name) brings items with their uids.
        """
        origin = f"source:{source.name}"
        rows = [
            {
                "uid": i.uid,
                "id": i.id,
                "kind": i.kind,
                "source": i.source,
                "source_name": source.name,
                "source_label": i.source_label,
                "source_split": i.source_split,
                "pack": i.pack,
                "offset": i.offset,
                "length": i.length,
                "encoding": i.encoding,
                "split": None,
            }
            for i in items
        ]
        now = t.utcnow()
        label_rows = [
            {
                "item_id": item_id,
                "label": label,
                "labeler": labeler,
                "source": source[0] if source else "import",
                "action": "label",
                "created": now,
                "task_ref": origin,
                "undone": False,
            }
            for item_id, label, labeler, *source in labels
        ]
        with self._lock, self.session() as s:
            # an item imported again unchanged keeps its split: data.split does not run again when the item set
            # is the same (a source that moved, an option that changes nothing), and data.ingest needs one
            tbl = t.SqlItem.__table__
            kept = {r.uid: (r.id, r.split) for r in s.execute(
                select(tbl.c.uid, tbl.c.id, tbl.c.split).where(tbl.c.source_name.in_([source.name, *replaces]))).all()}
            for row in rows:
                was = kept.get(row["uid"])
                if was is not None and was[0] == row["id"]:
                    row["split"] = was[1]
            for old in replaces:
                s.execute(delete(t.SqlItem).where(t.SqlItem.source_name == old))
                s.execute(delete(t.SqlLabel).where(t.SqlLabel.task_ref == f"source:{old}"))
                s.execute(delete(t.SqlSource).where(t.SqlSource.name == old))
            s.execute(delete(t.SqlItem).where(t.SqlItem.source_name == source.name))
            s.execute(
                # the source's own labels (its ground-truth decisions too): labels people gave have no task_ref
                delete(t.SqlLabel).where(t.SqlLabel.task_ref == origin).where(t.SqlLabel.source.in_(("import", "manual")))
            )
            _insert_many(s, t.SqlItem.__table__, rows)
            _insert_many(s, t.SqlLabel.__table__, label_rows)
            _labels_replaced(s)
            _items_replaced(s)
            s.merge(
                t.SqlSource(
                    name=source.name,
                    kind=source.kind,
                    content_hash=source.content_hash,
                    items=source.items,
                    imported_at=now,
                    options=options or {},
                )
            )
            s.commit()

    def remove_source(self, name: str) -> None:
        origin = f"source:{name}"
        with self._lock, self.session() as s:
            s.execute(delete(t.SqlItem).where(t.SqlItem.source_name == name))
            s.execute(delete(t.SqlLabel).where(t.SqlLabel.task_ref == origin))
            _labels_replaced(s)
            _items_replaced(s)
            s.execute(delete(t.SqlSource).where(t.SqlSource.name == name))
            s.commit()

    def remove_items(self, source: str, uids: Iterable[str], state: dict[str, Any] | None = None) -> None:
        """Remove some of one source's items, and write `state` keys, in one transaction (a dismissed retrain
        proposal's unlabeled samples, and the proposal's record)."""
        uids = sorted(set(uids))
        with self._lock, self.session() as s:
            for chunk in _chunks(uids, 500):
                s.execute(delete(t.SqlItem).where(t.SqlItem.source_name == source, t.SqlItem.uid.in_(chunk)))
            left = s.execute(select(func.count()).select_from(t.SqlItem).where(t.SqlItem.source_name == source)
                             ).scalar_one()
            s.execute(update(t.SqlSource).where(t.SqlSource.name == source).values(items=left))
            _items_replaced(s)
            for key, value in (state or {}).items():
                s.merge(t.SqlState(key=key, value=_jsonable(value)))
            s.commit()

    def sources(self) -> list[SourceRecord]:
        with self.session() as s:
            rows = s.execute(select(t.SqlSource).order_by(t.SqlSource.name)).scalars().all()
            return [
                SourceRecord(r.name, r.kind, r.content_hash, r.items, _aware(r.imported_at)) for r in rows
            ]

    def items(self, split: str | None = None) -> list[Item]:
        q = select(*_ITEM_COLUMNS).order_by(t.SqlItem.uid)
        if split is not None:
            q = q.where(t.SqlItem.split == split)
        with self.session() as s:
            return _items(s.execute(q).all())

    def items_by_uid(self, uids: Iterable[str]) -> list[Item]:
        """The items with these uids (those that exist), in uid order."""
        return self._items_where("uid", uids)

    def items_by_id(self, item_ids: Iterable[str]) -> list[Item]:
        """The items with these content ids (duplicates: every uid), in uid order."""
        return self._items_where("id", item_ids)

    def _items_where(self, column: str, values: Iterable[str]) -> list[Item]:
        tbl = t.SqlItem.__table__
        with self.session() as s:
            rows = _rows_in(s, select(*_ITEM_COLUMNS), tbl.c[column], values)
        return sorted(_items(rows), key=lambda i: i.uid)

    def item_count(self) -> int:
        with self.session() as s:
            return int(s.execute(select(func.count()).select_from(t.SqlItem)).scalar_one())

    def item_tally(self) -> tuple[int, int, dict[str | None, int]]:
        """(items, distinct contents, items per source label) counted by the database: data.import read every item
        for these (2.4 s of its 10 on Fashion-MNIST's 70 000)."""
        tbl = t.SqlItem.__table__
        with self.session() as s:
            n, unique = s.execute(select(func.count(), func.count(tbl.c.id.distinct()))).one()
            labels = dict(s.execute(select(tbl.c.source_label, func.count()).group_by(tbl.c.source_label)).all())
        return int(n), int(unique), {k: int(v) for k, v in labels.items()}

    def item_uids(self) -> set[str]:
        """Every item's uid (one column: cheaper than items())."""
        with self.session() as s:
            return set(s.execute(select(t.SqlItem.uid)).scalars().all())

    def items_fingerprint(self) -> str:
        """A hash of the current item set (uids, content ids, source labels): changes iff an import changed it.

        Hashing every item took 0.3 s on Fashion-MNIST's 70 000, and every step-state query (the studio's
        refreshes, `cdl status`) paid it. Every write to the items writes a new ITEMS_REVISION token in the same
        transaction, so the hash is kept per token. The token is read before the items: a commit between the two
        can only file a newer item set under an older token, which no later read asks for. The hash is also kept in
        the registry (ITEMS_FINGERPRINT, beside its token), written by the transaction that writes the items and
        the token: each `cdl` process hashed the items again, 0.5 s of `cdl status` on Fashion-MNIST. (A registry
        whose items were written before it was kept is hashed as before, until its next write of items.)"""
        token = self.items_token()
        if token in self._items_fp:
            return self._items_fp[token]
        kept = self.get_state(ITEMS_FINGERPRINT)
        if isinstance(kept, dict) and kept.get("token") == token and isinstance(kept.get("fingerprint"), str):
            fp = kept["fingerprint"]
        else:
            with self.session() as s:
                fp = _items_hash(s)
        self._items_fp = {token: fp}
        return fp

    def items_token(self) -> str:
        """The item set's revision: a new token whenever items are written (read it before reading the items)."""
        token = self.get_state(ITEMS_REVISION)
        if token is None:  # a workspace from before the token: it gets one now (it was hashed on every call)
            token = self._first_items_token()
        return token

    def _first_items_token(self) -> str:
        """Write an ITEMS_REVISION token where there is none, unless another process just did (an import, or
        this same call elsewhere): the token is then read back, before the items are, as items_fingerprint
        requires."""
        import uuid

        from sqlalchemy.exc import IntegrityError

        try:
            with self._lock, self.session() as s:
                token = uuid.uuid4().hex[:12]
                s.add(t.SqlState(key=ITEMS_REVISION, value=token))
                s.flush()
                s.merge(t.SqlState(key=ITEMS_FINGERPRINT, value={"token": token, "fingerprint": _items_hash(s)}))
                s.commit()
        except IntegrityError:  # someone else's token is there: theirs stands
            pass
        return self.get_state(ITEMS_REVISION)

    def unsplit_count(self) -> int:
        """Items data.split has not assigned: imported since it ran, as an import of the same items again after
        their removal is, which leaves the item set's fingerprint as it was."""
        with self.session() as s:
            return s.execute(select(func.count()).select_from(t.SqlItem).where(t.SqlItem.split.is_(None))).scalar_one()

    def set_splits(self, splits: dict[str, str]) -> None:
        stmt = (
            update(t.SqlItem.__table__)
            .where(t.SqlItem.__table__.c.uid == bindparam("b_uid"))
            .values(split=bindparam("b_split"))
        )
        params = [{"b_uid": uid, "b_split": split} for uid, split in splits.items()]
        with self._lock, self.engine.begin() as conn:
            for chunk in _chunks(params, 20000):
                conn.execute(stmt, chunk)

    # -- labels -------------------------------------------------------------------------------------------

    def add_label(
        self,
        item_id: str,
        label: str | None,
        labeler: str,
        source: str = "manual",
        action: str = "label",
        dataset_version: str | None = None,
        task_ref: str | None = None,
    ) -> LabelRecord:
        with self._lock, self.session() as s:
            row = t.SqlLabel(
                item_id=item_id,
                label=label,
                labeler=labeler,
                source=source,
                action=action,
                dataset_version=dataset_version,
                task_ref=task_ref,
            )
            s.add(row)
            s.commit()
            s.refresh(row)
            return _label(row)

    def replace_labels(self, task_ref_prefix: str, rows: Sequence[dict[str, Any]]) -> int:
        """Replace every label whose task_ref starts with the prefix (one imported file) in one transaction."""
        now = t.utcnow()
        full = [
            {
                "item_id": r["item_id"],
                "label": r.get("label"),
                "labeler": r["labeler"],
                "source": r.get("source", "import"),
                "action": r.get("action", "label"),
                "created": r.get("created") or now,
                "dataset_version": r.get("dataset_version"),
                "task_ref": r["task_ref"],
                "undone": False,
            }
            for r in rows
        ]
        def fact(r: Any) -> tuple:  # noqa: ANN401 - a row's content, its time aside (an import without one is "now")
            return (r["item_id"], r["label"], r["labeler"], r["source"], r["action"], r["task_ref"], r["undone"])

        tbl = t.SqlLabel.__table__
        with self._lock, self.session() as s:
            mine = tbl.c.task_ref.startswith(task_ref_prefix, autoescape=True)  # "_" in a file's name is no wildcard
            had = s.execute(select(tbl).where(mine)).mappings().all()
            if Counter(map(fact, had)) == Counter(map(fact, full)):
                # the same file again, or one that matched nothing: nothing changes, and the labels' revision
                # stays, where every step from data.ingest on turned stale, "labels changed since it ran"
                return len(full)
            s.execute(delete(t.SqlLabel).where(mine))
            _insert_many(s, t.SqlLabel.__table__, full)
            _labels_replaced(s)
            s.commit()
        return len(full)

    def labels(self, include_undone: bool = False, item_ids: Iterable[str] | None = None) -> list[LabelRecord]:
        """Label rows, oldest first (rows of the table, not ORM objects: 70 000 labels read in a fraction of the
        time); item_ids: only those items'."""
        tbl = t.SqlLabel.__table__
        q = select(tbl)
        if not include_undone:
            q = q.where(tbl.c.undone == False)  # noqa: E712
        with self.session() as s:
            rows = s.execute(q).all() if item_ids is None else _rows_in(s, q, tbl.c.item_id, item_ids)
        rows.sort(key=lambda r: r.id)
        # made as runtime.domain.frozen does (70 000 one by one took 1.25 s), each as _label makes it
        return frozen_many(LabelRecord, ((r.id or 0, r.item_id, r.label, r.labeler, r.source, r.action,
                                          _aware(r.created), r.dataset_version, r.task_ref, r.undone) for r in rows))

    def label_facts(self, after_id: int | None = None,
                    item_ids: Iterable[str] | None = None) -> list[tuple[int, str, str, str]]:
        """(id, item_id, label, source) of every label action in force (not undone, not a skip), oldest first:
        what an item's effective label is computed from, without the rest of the row."""
        tbl = t.SqlLabel.__table__
        q = select(tbl.c.id, tbl.c.item_id, tbl.c.label, tbl.c.source).where(
            tbl.c.undone == False, tbl.c.action == "label", tbl.c.label.is_not(None))  # noqa: E712
        if after_id is not None:
            q = q.where(tbl.c.id > after_id)
        with self.session() as s:
            if item_ids is None:  # ordered by the database: sorting 70 000 rows in Python took a tenth of a second
                return [tuple(r) for r in s.execute(q.order_by(tbl.c.id)).all()]
            return sorted(tuple(r) for r in _rows_in(s, q, tbl.c.item_id, item_ids))

    def decision_rows(self) -> list[tuple[str, str, str, str | None, str | None]]:
        """(item_id, labeler, action, label, task_ref) of every label and skip in force that a labeler gave (model
        predictions left out), oldest first: what each labeler decided, without the rest of the row (whole rows of
        70 000 labels took 2 s to read)."""
        tbl = t.SqlLabel.__table__
        q = select(tbl.c.item_id, tbl.c.labeler, tbl.c.action, tbl.c.label, tbl.c.task_ref).where(
            tbl.c.undone == False, tbl.c.source != "model").order_by(tbl.c.id)  # noqa: E712
        with self.session() as s:
            return [tuple(r) for r in s.execute(q).all()]

    def label_names(self) -> set[str]:
        """Every label some labeler, import or model gave (not undone)."""
        tbl = t.SqlLabel.__table__
        with self.session() as s:
            return set(s.execute(select(tbl.c.label).distinct().where(
                tbl.c.action == "label", tbl.c.label.is_not(None), tbl.c.undone == False)).scalars())  # noqa: E712

    def decided_by(self, labeler: str) -> set[str]:
        """Items `labeler` labeled or skipped by hand (not undone)."""
        tbl = t.SqlLabel.__table__
        with self.session() as s:
            return set(s.execute(select(tbl.c.item_id).where(
                tbl.c.labeler == labeler, tbl.c.source == "manual", tbl.c.undone == False)).scalars())  # noqa: E712

    def lease_item(self, labeler: str, candidates: Sequence[str], seconds: float) -> str | None:
        """The first of `candidates` (item ids, in queue order) that no other labeler holds, leased to `labeler`
        for `seconds`; the labeler's earlier lease and expired ones are released. One transaction: two
        labelers asking at once get different items (the item id is the lease's key)."""
        from datetime import timedelta

        from sqlalchemy.exc import IntegrityError

        for _ in range(5):  # a PostgreSQL race for the same item: the loser picks again
            now = t.utcnow()
            try:
                with self._lock, self.session() as s:
                    s.execute(delete(t.SqlLabelLease).where(
                        (t.SqlLabelLease.until < now) | (t.SqlLabelLease.labeler == labeler)))
                    held = set(s.execute(select(t.SqlLabelLease.item_id)).scalars())
                    pick = next((c for c in candidates if c not in held), None)
                    if pick is not None:
                        s.add(t.SqlLabelLease(item_id=pick, labeler=labeler, until=now + timedelta(seconds=seconds)))
                    s.commit()
                    return pick
            except IntegrityError:
                continue
        return None

    def leased_by_others(self, labeler: str) -> set[str]:
        """Item ids other labelers hold now."""
        with self.session() as s:
            return set(s.execute(select(t.SqlLabelLease.item_id).where(
                t.SqlLabelLease.labeler != labeler, t.SqlLabelLease.until >= t.utcnow())).scalars())

    def release_lease(self, labeler: str, item_id: str | None = None) -> None:
        with self._lock, self.session() as s:
            q = delete(t.SqlLabelLease).where(t.SqlLabelLease.labeler == labeler)
            if item_id is not None:
                q = q.where(t.SqlLabelLease.item_id == item_id)
            s.execute(q)
            s.commit()

    @staticmethod
    def _last_manual(labeler: str):  # noqa: ANN205 - a select
        return (select(t.SqlLabel)
                .where(t.SqlLabel.labeler == labeler)
                .where(t.SqlLabel.source == "manual")
                .where(t.SqlLabel.undone == False)  # noqa: E712
                .order_by(t.SqlLabel.id.desc())
                .limit(1))

    def last_manual(self, labeler: str) -> LabelRecord | None:
        """What undo_last would undo, left as it is (the labeling panel's Undo says it, and is off without one)."""
        with self.session() as s:
            row = s.execute(self._last_manual(labeler)).scalar_one_or_none()
            return _label(row) if row is not None else None

    def undo_last(self, labeler: str) -> LabelRecord | None:
        """Undo the labeler's last manual action (a label or a skip). Returns it, or None if nothing to undo."""
        with self._lock, self.session() as s:
            row = s.execute(self._last_manual(labeler)).scalar_one_or_none()
            if row is None:
                return None
            row.undone = True
            row.undone_at = t.utcnow()
            s.add(row)
            s.commit()
            s.refresh(row)
            return _label(row)

    def labels_revision(self) -> str:
        """Changes whenever a label is added, replaced or undone."""
        n, mx, undone, replaced = self.label_counts()
        return f"{n}:{mx}:{undone}" + (f":{replaced}" if replaced else "")

    def label_counts(self) -> tuple[int, int | None, int, str | None]:
        """(rows, the newest row's id, rows undone, a token that changes whenever rows are deleted) of the labels
        table. The token is needed: SQLite gives a row added after the newest was deleted that row's id again,
        so a re-imported file whose rows were the newest left the counts as they were."""
        with self.session() as s:
            n, mx = s.execute(select(func.count(), func.max(t.SqlLabel.id))).one()
            undone = s.execute(
                select(func.count()).select_from(t.SqlLabel).where(t.SqlLabel.undone == True)  # noqa: E712
            ).scalar_one()
            token = s.get(t.SqlState, LABELS_REPLACED)
            return int(n), (int(mx) if mx is not None else None), int(undone), (token.value if token else None)

    # -- dataset versions ---------------------------------------------------------------------------------

    def add_version(
        self,
        dvc_hash: str,
        git_commit: str | None,
        items: int,
        classes: dict[str, int],
        splits: dict[str, int],
        split_classes: dict[str, dict[str, int]],
        dvc_file: str,
    ) -> DatasetVersion:
        with self._lock, self.session() as s:
            n = s.execute(select(func.max(t.SqlDatasetVersion.number))).scalar_one_or_none() or 0
            row = t.SqlDatasetVersion(
                number=n + 1,
                id=f"v{n + 1}",
                dvc_hash=dvc_hash,
                git_commit=git_commit,
                items=items,
                classes=classes,
                splits=splits,
                split_classes=split_classes,
                dvc_file=dvc_file,
            )
            s.add(row)
            s.commit()
            s.refresh(row)
            return _version(row)

    def versions(self) -> list[DatasetVersion]:
        with self.session() as s:
            rows = s.execute(select(t.SqlDatasetVersion).order_by(t.SqlDatasetVersion.number)).scalars().all()
            return [_version(r) for r in rows]

    def version(self, version_id: str) -> DatasetVersion:
        vid = version_id.strip()  # "v2", "2", "V2" and " v2" (pasted) name one version
        vid = f"v{vid[1:]}" if vid[:1] in ("v", "V") else f"v{vid}"
        with self.session() as s:
            row = s.execute(select(t.SqlDatasetVersion).where(t.SqlDatasetVersion.id == vid)).scalar_one_or_none()
            if row is None:
                known = ", ".join(v.id for v in self.versions()) or "none yet"
                raise NotFoundError(f"dataset version {version_id!r} does not exist (known: {known})")
            return _version(row)

    def version_by_hash(self, dvc_hash: str) -> DatasetVersion | None:
        with self.session() as s:
            row = s.execute(
                select(t.SqlDatasetVersion)
                .where(t.SqlDatasetVersion.dvc_hash == dvc_hash)
                .order_by(t.SqlDatasetVersion.number.desc())
                .limit(1)
            ).scalar_one_or_none()
            return _version(row) if row else None

    def latest_version(self) -> DatasetVersion | None:
        vs = self.versions()
        return vs[-1] if vs else None

    # -- quarantine and cleaning --------------------------------------------------------------------------

    def replace_quarantine(self, version: str, entries: Sequence[QuarantineEntry]) -> None:
        rows = [
            {
                "version": version,
                "uid": e.item,
                "item_id": e.item_id,
                "source": e.source,
                "rule": e.rule,
                "reason": e.reason,
            }
            for e in entries
        ]
        with self._lock, self.session() as s:
            s.execute(delete(t.SqlQuarantine).where(t.SqlQuarantine.version == version))
            _insert_many(s, t.SqlQuarantine.__table__, rows)
            s.commit()

    def quarantine(self, version: str) -> list[QuarantineEntry]:
        with self.session() as s:
            rows = s.execute(
                select(t.SqlQuarantine).where(t.SqlQuarantine.version == version).order_by(t.SqlQuarantine.id)
            ).scalars()
            return [QuarantineEntry(r.version, r.uid, r.item_id, r.source, r.rule, r.reason) for r in rows]

    def replace_cleaned(self, version: str, entries: Sequence[CleanedEntry]) -> None:
        rows = [
            {"version": version, "uid": e.item, "item_id": e.item_id, "source": e.source, "action": e.action}
            for e in entries
        ]
        with self._lock, self.session() as s:
            s.execute(delete(t.SqlCleaned).where(t.SqlCleaned.version == version))
            _insert_many(s, t.SqlCleaned.__table__, rows)
            s.commit()

    def cleaned(self, version: str) -> list[CleanedEntry]:
        with self.session() as s:
            rows = s.execute(
                select(t.SqlCleaned).where(t.SqlCleaned.version == version).order_by(t.SqlCleaned.id)
            ).scalars()
            return [CleanedEntry(r.version, r.uid, r.item_id, r.source, r.action) for r in rows]

    # -- step runs ----------------------------------------------------------------------------------------

    def start_step_run(self, step: str, job: str | None, input_fp: str, params: dict[str, Any] | None = None) -> int:
        with self._lock, self.session() as s:
            row = t.SqlStepRun(step=step, job=job, status="running", input_fp=input_fp, pid=os.getpid(),
                               host=socket.gethostname(), params=None if params is None else _jsonable(params))
            s.add(row)
            s.commit()
            s.refresh(row)
            return row.id or 0

    def finish_step_run(
        self,
        run_id: int,
        status: str,
        output_fp: str | None = None,
        error: str | None = None,
        summary: dict[str, Any] | None = None,
        message: str | None = None,
        input_fp: str | None = None,
    ) -> None:
        """`input_fp`: the inputs as the step left them, where it changes what it reads (Step.changes_own_reads)."""
        with self._lock, self.session() as s:
            row = s.get(t.SqlStepRun, run_id)
            if row is None:
                raise NotFoundError(f"step run {run_id} does not exist")
            if input_fp:
                row.input_fp = input_fp
            row.status = status
            row.finished = t.utcnow()
            row.output_fp = output_fp
            row.error = error
            row.summary = _jsonable(summary or {})
            row.message = message
            s.add(row)
            s.commit()

    def last_step_run(self, step: str, status: str | None = None) -> StepRun | None:
        q = select(t.SqlStepRun).where(t.SqlStepRun.step == step)
        if status:
            q = q.where(t.SqlStepRun.status == status)
        with self.session() as s:
            row = s.execute(q.order_by(t.SqlStepRun.id.desc()).limit(1)).scalar_one_or_none()
            return _run(row) if row else None

    def step_runs(self, step: str, limit: int = 50) -> list[StepRun]:
        """A step's runs, newest first."""
        q = select(t.SqlStepRun).where(t.SqlStepRun.step == step).order_by(t.SqlStepRun.id.desc()).limit(limit)
        with self.session() as s:
            return [_run(r) for r in s.execute(q).scalars().all()]

    def last_step_runs(self) -> dict[str, StepRun]:
        """The newest run of every step, in one query."""
        sub = select(func.max(t.SqlStepRun.id)).group_by(t.SqlStepRun.step)
        with self.session() as s:
            rows = s.execute(select(t.SqlStepRun).where(t.SqlStepRun.id.in_(sub))).scalars().all()
            return {r.step: _run(r) for r in rows}

    def running_step_runs(self) -> list[StepRun]:
        """Step runs recorded as running (one cheap query: the studio asks every few seconds whether another
        process has started a step)."""
        with self.session() as s:
            rows = s.execute(select(t.SqlStepRun).where(t.SqlStepRun.status == "running")).scalars().all()
            return [_run(r) for r in rows]

    def last_done_runs(self) -> dict[str, StepRun]:
        sub = select(func.max(t.SqlStepRun.id)).where(t.SqlStepRun.status == "done").group_by(t.SqlStepRun.step)
        with self.session() as s:
            rows = s.execute(select(t.SqlStepRun).where(t.SqlStepRun.id.in_(sub))).scalars().all()
            return {r.step: _run(r) for r in rows}

    def mark_interrupted_runs(self, reason: str = "the process running this step ended before it finished") -> int:
        """Runs left 'running' by a process of this host that died are failed, so no step shows running
        forever, with what they left running: the experiment a killed model.tune or model.train had open (so
        no `cdl tune worker` joins its study) and its running trials that no live process runs. Runs on other
        hosts (a shared registry) are left to those hosts."""
        here = socket.gethostname()
        with self._lock, self.session() as s:
            rows = s.execute(select(t.SqlStepRun).where(t.SqlStepRun.status == "running")).scalars().all()
            rows = [r for r in rows if (r.host is None or r.host == here) and not pid_alive(r.pid)]
            now = t.utcnow()
            for r in rows:
                r.status = "failed"
                r.finished = now
                r.error = reason
                s.add(r)
                job = t.SqlExperiment.job.is_(None) if r.job is None else t.SqlExperiment.job == r.job
                exps = select(t.SqlExperiment.id).where(t.SqlExperiment.status == "running",
                                                        t.SqlExperiment.step == r.step, job,
                                                        t.SqlExperiment.created >= r.started)
                # its trials that no live process runs (a tuning worker elsewhere, or alive here, finishes its
                # own trial: the heartbeat catches it if it dies)
                fail_orphan_trials(s, exps, now)
                s.execute(update(t.SqlExperiment).where(t.SqlExperiment.id.in_(exps))
                          .values(status="failed", finished=now))
            s.commit()
            return len(rows)

    # -- state --------------------------------------------------------------------------------------------

    def get_state(self, key: str, default: Any = None) -> Any:
        with self.session() as s:
            row = s.get(t.SqlState, key)
            return default if row is None else row.value

    def set_state(self, key: str, value: Any) -> None:
        with self._lock, self.session() as s:
            s.merge(t.SqlState(key=key, value=_jsonable(value)))
            s.commit()


def _own_tables() -> list[Any]:
    return [
        tbl for name, tbl in SQLModel.metadata.tables.items() if name.startswith("cdl_")
    ]


LABELS_REPLACED = "labels_replaced"  # cdl_state key: a new token whenever label rows are deleted
ITEMS_REVISION = "items_revision"  # cdl_state key: a new token whenever items are written (import, removal)
ITEMS_FINGERPRINT = "items_fingerprint"  # cdl_state key: {"token": an ITEMS_REVISION, "fingerprint": its item set's}
# cdl_state key: {"token": the ITEMS_REVISION data.ingest laid data/dataset out from, "index": its index file's
# (inode, mtime_ns, size)}: the labeling queue knows from it that no item was imported or removed since
INGESTED_ITEMS = "ingested_items"


def _labels_replaced(s) -> None:  # noqa: ANN001
    """Within the transaction that deleted label rows: a new token, so that labels_revision changes."""
    import uuid

    s.merge(t.SqlState(key=LABELS_REPLACED, value=uuid.uuid4().hex[:12]))


def _items_replaced(s) -> None:  # noqa: ANN001
    """Within the transaction that wrote items, after the writes: a new token, and the item set's hash filed under
    it (items_fingerprint), both committed with the items or not at all."""
    import uuid

    token = uuid.uuid4().hex[:12]
    s.merge(t.SqlState(key=ITEMS_REVISION, value=token))
    s.merge(t.SqlState(key=ITEMS_FINGERPRINT, value={"token": token, "fingerprint": _items_hash(s)}))


def _items_hash(s) -> str:  # noqa: ANN001
    """sha256 over every item's uid, content id, source label and source split, in uid order, as the session
    sees them."""
    h = hashlib.sha256()
    q = select(t.SqlItem.uid, t.SqlItem.id, t.SqlItem.source_label, t.SqlItem.source_split).order_by(t.SqlItem.uid)
    for row in s.execute(q).all():
        h.update(f"{row[0]}\0{row[1]}\0{row[2]}\0{row[3]}\n".encode())
    return h.hexdigest()


def _rows_in(s, query, column, values: Iterable[str]) -> list[Any]:  # noqa: ANN001
    """The query's rows whose `column` is one of `values`, asked in chunks under every database's limit on
    parameters."""
    out: list[Any] = []
    for chunk in _chunks(sorted(set(values)), 500):
        out.extend(s.execute(query.where(column.in_(chunk))).all())
    return out


def _insert_many(s: Session, table: Any, rows: Sequence[dict[str, Any]]) -> None:  # noqa: ANN401 - a Table
    """Insert `rows` (dicts with the same keys) into `table` in the session's transaction. On SQLite they go to the
    driver's executemany at once, each value through its column's own conversion as SQLAlchemy would bind it:
    SQLAlchemy's statement machinery cost 2.6 s of a Fashion-MNIST import (70 000 items and their 70 000 labels),
    more than SQLite's own insert. Elsewhere (PostgreSQL) SQLAlchemy's insert, in chunks."""
    if not rows:
        return
    conn = s.connection()
    dialect = conn.dialect
    if dialect.name != "sqlite":
        for chunk in _chunks(rows, 20000):
            s.execute(insert(table), chunk)
        return
    names = list(rows[0])
    convert = [(n, table.c[n].type._cached_bind_processor(dialect)) for n in names]
    quote = dialect.identifier_preparer.quote
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in names)}) "
           f"VALUES ({', '.join('?' for _ in names)})")
    columns = []
    for n, f in convert:
        column = [r[n] for r in rows]
        if f is not None:  # a time, a flag: few distinct values (an import's rows share one time), each done once
            try:
                done = {v: None if v is None else f(v) for v in set(column)}
                column = [done[v] for v in column]
            except TypeError:  # values that cannot be keys (a JSON column's): each converted
                column = [None if v is None else f(v) for v in column]
        columns.append(column)
    values = list(zip(*columns, strict=True))
    conn.exec_driver_sql(sql, values)


def _chunks(rows: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(rows), n):
        yield rows[i : i + n]


def _jsonable(obj: Any) -> Any:
    """JSON columns take plain data: numpy scalars, tuples and datetimes are converted."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, datetime):
        return obj.isoformat()
    if hasattr(obj, "item") and callable(obj.item):
        try:
            return obj.item()
        except (TypeError, ValueError):
            return str(obj)
    return obj
