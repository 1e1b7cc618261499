"""Labels: who said what about which item, the effective label, the labeling queue, Label Studio JSON.

Rules for an item's effective label (items are identified by content id, so duplicates share labels):
- the newest manual label (not undone) wins: a labeler's decision resolves everything before it;
- otherwise the imported labels (from the source's folders/columns, or Label Studio annotations): if they all
  agree that is the label; if they disagree the item is a *conflict* and has no label until someone decides;
- model labels (predictions) never count unless `use_model_labels` is set.

The queue (LabelQueue) is what the annotation panel and `cdl labels` use: next item, set label, skip, undo,
progress, with filters: unlabeled, conflicts, all, and proposal:<id> (a retrain proposal's samples).
"""

from __future__ import annotations

import base64
import io
import itertools
import json
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.domain.entities import LabelRecord
from runtime.domain.errors import CdlError, DataImportError, NotFoundError
from runtime.domain.frozen import no_collection
from runtime.workspace.dataset import DatasetView, IndexRow, PackReader, decode_text

if TYPE_CHECKING:
    from runtime.workspace.workspace import Workspace

FILTERS = ("unlabeled", "conflicts", "all", "labeled")
ORDERS = ("queue", "uncertain")  # as the dataset lists them; least confident suggestion first (active learning)


@dataclass(frozen=True)
class LabelState:
    label: str | None
    conflict: bool
    candidates: tuple[str, ...] = ()
    source: str | None = None  # where the effective label came from: import | manual | model


def effective_labels(records: Iterable[LabelRecord], use_model_labels: bool = False) -> dict[str, LabelState]:
    return _effective(((r.id, r.item_id, r.label, r.source) for r in records
                       if not r.undone and r.action == "label" and r.label is not None), use_model_labels)


def effective_states(store, use_model_labels: bool = False) -> dict[str, LabelState]:  # noqa: ANN001
    """effective_labels over every label row of the store, read as the facts alone (reading the rows whole, times
    converted, took 2.2 s at Fashion-MNIST's 70 000 labels, in data.ingest and again in data.label)."""
    return _effective(store.label_facts(), use_model_labels)


def _effective(facts: Iterable[tuple[int, str, str, str]], use_model_labels: bool = False) -> dict[str, LabelState]:
    """The rules above over (id, item_id, label, source) of the label actions in force."""
    manual: dict[str, tuple[int, str]] = {}
    imported: dict[str, str] = {}  # an item's one imported label ("" for an empty one)
    disagree: dict[str, set[str]] = {}  # items imported with more than one label: a set only for those
    model: dict[str, tuple[int, str]] = {}
    for rid, item, label, source in facts:
        if source == "manual":
            m = manual.get(item)
            if m is None or rid > m[0]:
                manual[item] = (rid, label)
        elif source == "import":
            first = imported.setdefault(item, label)
            if first != label:
                disagree.setdefault(item, {first}).add(label)
        elif source == "model":
            m = model.get(item)
            if m is None or rid > m[0]:
                model[item] = (rid, label)
    out: dict[str, LabelState] = {}
    for item, (_, label) in manual.items():
        out[item] = LabelState(label, False, (label,), "manual")
    for item, label in imported.items():
        if item in out:
            continue
        found = disagree.get(item)
        if found is not None:
            found.discard("")
        if found is None or len(found) == 1:
            label = label or (next(iter(found)) if found else "")
            if label:
                out[item] = LabelState(label, False, (label,), "import")
            else:  # imported without a label only
                out[item] = LabelState(None, True, (), "import")
        else:
            out[item] = LabelState(None, True, tuple(sorted(found)), "import")
    if use_model_labels:
        for item, (_, label) in model.items():
            out.setdefault(item, LabelState(label, False, (label,), "model"))
    return out


def quarantined_apart(store, version: str) -> tuple[set[str], set[str]]:  # noqa: ANN001
    """The uids data.validate quarantined in `version`, as (left out, in conflict alone): those quarantined for a
    label conflict and nothing else stay in the labeling queue, where data.validate says to resolve them."""
    rules: dict[str, set[str]] = {}
    for q in store.quarantine(version):
        rules.setdefault(q.item, set()).add(q.rule)
    alone = {uid for uid, r in rules.items() if r == {"label_conflicts"}}
    return set(rules) - alone, alone


class _StatesCache:
    """Every item's effective label for one store, kept between calls: the labeling panel asks for them on each
    item it shows, and reading 70 000 labels (Fashion-MNIST) took seconds each time. Brought up to date from the
    labels table's counts: rows only added since (a label, a skip) update the items they touch; anything else (an
    undo, a re-import replacing rows) computes them afresh. The items labeled and those in conflict are kept as
    sets beside them, so that progress counts by set intersection (going over 70 000 states took 0.12 s an item)."""

    def __init__(self) -> None:
        self._snapshot: tuple[tuple[int, int | None, int, str | None], _States] | None = None
        self._lock = threading.Lock()

    def get(self, store) -> _States:  # noqa: ANN001
        counts = store.label_counts()
        with self._lock:
            snap = self._snapshot
            if snap is not None and snap[0] == counts:
                return snap[1]
            _, mx, undone, replaced = counts
            now: _States | None = None
            if snap is not None:
                (_, mx0, undone0, replaced0), old = snap
                # nothing undone and nothing deleted (every delete changes the token): rows were only added,
                # and only the items they name can have changed
                if undone == undone0 and replaced == replaced0 and mx0 is not None and mx is not None:
                    touched = {f[1] for f in store.label_facts(after_id=mx0)}
                    fresh = _effective(store.label_facts(item_ids=touched)) if touched else {}
                    now = old.updated(touched, fresh)
            if now is None:
                now = _States.of(_effective(store.label_facts()))
            self._snapshot = (counts, now)
            return now


@dataclass(frozen=True)
class _States:
    states: dict[str, LabelState]
    labeled: set[str]  # items with a label
    conflicts: set[str]  # items without one, in conflict

    @classmethod
    def of(cls, states: dict[str, LabelState]) -> _States:
        return cls(states, {i for i, st in states.items() if st.label is not None},
                   {i for i, st in states.items() if st.label is None and st.conflict})

    def updated(self, touched: set[str], fresh: dict[str, LabelState]) -> _States:
        states, labeled, conflicts = dict(self.states), set(self.labeled), set(self.conflicts)
        for item in touched:
            st = fresh.get(item)
            labeled.discard(item)
            conflicts.discard(item)
            if st is None:
                states.pop(item, None)
                continue
            states[item] = st
            if st.label is not None:
                labeled.add(item)
            elif st.conflict:
                conflicts.add(item)
        return _States(states, labeled, conflicts)


_STATES: weakref.WeakKeyDictionary[Any, _StatesCache] = weakref.WeakKeyDictionary()
_STATES_LOCK = threading.Lock()


def _current(store) -> _States:  # noqa: ANN001
    with _STATES_LOCK:
        cache = _STATES.get(store)
        if cache is None:
            cache = _STATES[store] = _StatesCache()
    return cache.get(store)


def current_states(store) -> dict[str, LabelState]:  # noqa: ANN001
    """Every item's effective label now (model labels not counted), from a cache kept per store. Read-only."""
    return _current(store).states


_VIEWS: weakref.WeakKeyDictionary[Any, tuple[tuple[int, int, int], Any]] = weakref.WeakKeyDictionary()
# what differs between the items and a checked-out index that data.ingest did not lay out (after `cdl data checkout`
# of another version): comparing 70 000 uids took 0.35 s for each queue, and the panel makes one per label
_SINCE: weakref.WeakKeyDictionary[Any, tuple[str, Any, list[Any], set[str]]] = weakref.WeakKeyDictionary()
# the contents the labeling progress counts, per workspace: (the view, (items token, left out), (ids, uids))
_COUNTED: weakref.WeakKeyDictionary[Any, tuple[Any, tuple[Any, frozenset[str]], tuple[set[str], int]]] = (
    weakref.WeakKeyDictionary())


def _same_index(view, sha256: str | None) -> bool:  # noqa: ANN001
    """Whether the index the view was read from has the bytes data.ingest wrote (its hash): a workspace copied,
    restored from a backup or cloned has the index under a new inode and mtime, and the queue read and compared
    70 000 uids in every process until the next data.ingest (0.4-0.5 s of each `cdl labels next` on Fashion-MNIST).
    Hashing the file takes about 50 ms. An index data.ingest wrote before it filed the hash is compared as before."""
    path = getattr(view, "index_path", None)
    if not sha256 or path is None:
        return False
    import hashlib

    try:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        st = path.stat()
    except OSError:
        return False
    # the bytes hashed are the ones the view read only if the file was not replaced in between
    return digest == sha256 and (st.st_ino, st.st_mtime_ns, st.st_size) == view.index_stamp


def checked_out_view(ws: Workspace):  # noqa: ANN201
    """The checked-out dataset view, read again only when data/dataset's index file changed (ingest and checkout
    replace it): reading 70 000 index rows took over a second on each item the panel showed. Shared, read-only:
    the labeling queue's and the data panel's (which read the index again on each refresh)."""
    from runtime.workspace.dataset import INDEX_NAME

    index = ws.dataset_dir / INDEX_NAME
    if not index.exists():  # nothing ingested yet: the imported items are the queue (a folder of photos to label)
        from runtime.workspace.dataset import DatasetView, PackReader

        return DatasetView([], PackReader(ws.packs_dir))
    st = index.stat()
    stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
    cached = _VIEWS.get(ws)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    view = ws.dataset()
    view.index_stamp, view.index_path = stamp, index
    _VIEWS[ws] = (stamp, view)
    return view


@dataclass(frozen=True)
class QueueItem:
    uid: str
    item_id: str
    kind: str
    source: str
    label: str | None
    conflict: bool
    candidates: tuple[str, ...]
    split: str | None
    extra: dict[str, Any]


class LabelQueue:
    """The labeling queue over the checked-out dataset version (quarantined items excluded).

    Thread-safe in the sense of the store: every call reads the labels table afresh.
    """

    LEASE_SECONDS = 15 * 60  # how long the item a labeler has open is kept from the others

    def __init__(self, workspace: Workspace, labeler: str = "labeler", lease_seconds: float | None = None):
        self.ws = workspace
        self.store = workspace.store
        self.labeler = (labeler or "").strip()  # " ana" and "ana" are one person
        self.lease_seconds = self.LEASE_SECONDS if lease_seconds is None else lease_seconds
        self._view = None

    # -- data ---------------------------------------------------------------------------------------------

    def _dataset(self):
        if self._view is None:
            self._view = checked_out_view(self.ws)
        return self._view

    def refresh(self) -> None:
        self._view = None

    def _new_rows(self) -> list[IndexRow]:
        """Items imported after the checked-out dataset was made (data.ingest has not run since), as Label
        Studio's queue shows an import at once: they can be labeled now, and data.ingest brings them, with their
        labels, into the next version. Found again only when the item set changed (its revision token)."""
        self._since_ingest()
        return self._new

    def _gone(self) -> set[str]:
        """Items of the checked-out dataset that left the workspace since (a source removed, a dismissed
        proposal's samples): the queue hands them out no more, though the version keeps them until the next
        data.ingest (it served a dismissed proposal's samples under "unlabeled")."""
        self._since_ingest()
        return self._gone_uids

    def _since_ingest(self) -> None:
        from runtime.store.store import INGESTED_ITEMS

        token = self.store.items_token()
        view = self._dataset()
        if getattr(self, "_new_for", None) == (token, id(view)):
            return
        known = _SINCE.get(self.ws)  # another queue on this workspace found them (the panel makes one per label)
        if known is not None and known[0] == token and known[1] is view:  # the view itself: an id can be reused
            _t, _v, self._new, self._gone_uids = known
            self._new_for = (token, id(view))
            return
        # the usual case, nothing imported or removed since data.ingest laid this index out, costs a read of what
        # it recorded: the uids are compared only otherwise. (A count stood for it, and a source removed and
        # another of as many items imported kept the removed one's items in the queue, the new ones out of it.)
        self._new, self._gone_uids = [], set()
        rec = self.store.get_state(INGESTED_ITEMS) or {}
        stamp = getattr(view, "index_stamp", None)
        if rec:
            unchanged = stamp is not None and rec.get("token") == token and (
                tuple(rec.get("index") or ()) == stamp or _same_index(view, rec.get("sha256")))
        else:  # laid out before data.ingest recorded it: the count, as before, until the next data.ingest
            unchanged = self.store.item_count() == len(view.rows)
        if not unchanged:
            have = self.store.item_uids()
            added = [u for u in have if not view.has(u)]
            self._new = list(self._staged(added).values()) if added else []
            self._gone_uids = {r.uid for r in view.rows if r.uid not in have}
        # kept either way: an index known by its hash (a copied workspace) was hashed again, 50 ms, for each queue
        _SINCE[self.ws] = (token, view, self._new, self._gone_uids)
        self._new_for = (token, id(view))

    def _import_view(self, rows: list[IndexRow]) -> DatasetView:
        """A view that reads items not in data/dataset (imported since, or a proposal's) from the import's packs."""
        return DatasetView(rows, PackReader(self.ws.packs_dir))

    def classes(self) -> list[str]:
        cfg = self.ws.config()
        fixed = (cfg.labeling or {}).get("classes") or []
        if fixed:
            return list(fixed)
        from runtime.datasets import class_order, named_order
        seen = set(self._dataset().labels())
        seen.update(name for name in self.store.label_names() if name)
        seen -= set(workspace_relabel(self.ws))
        return class_order(named_order(self.ws), seen)  # the keys follow the dataset's own order, as the model does

    def suggestion(self, item_id: str) -> dict[str, Any] | None:
        """The model's guess for an item ({"label", "confidence", "model"}), where `suggest` made one; else, for a
        retrain proposal's sample, what the device's model answered for it."""
        doc = suggestions(self.ws)
        hit = (doc or {}).get("items", {}).get(item_id)
        if hit:
            return {"label": hit[0], "confidence": hit[1], "model": doc["model"]}
        from runtime.proposals import device_predictions

        return device_predictions(self.ws).get(item_id)

    def _quarantined(self) -> set[str]:
        """The checked-out version's items data.validate quarantined, but those quarantined for a label conflict
        alone: data.validate says to resolve it in this queue, which left them out, so that `--filter conflicts`
        and the panel found nothing and the conflict stayed for good."""
        version = self.ws.current_version()
        return quarantined_apart(self.store, version)[0] if version else set()

    def _proposal_order(self, proposal: str) -> list[str]:
        items = self.store.get_state(f"proposal:{proposal}:items")
        if items is None:
            raise NotFoundError(f"retrain proposal {proposal!r} does not exist")
        return list(items)

    def rows(self, filter: str = "unlabeled", order: str = "queue") -> list[QueueItem]:
        return [self._queue_item(r, st) for r, st in self._ordered(filter, order)]

    def _ordered(self, filter: str, order: str) -> Iterable[tuple[IndexRow, LabelState]]:
        """The filter's rows in `order`: "queue", or "uncertain": the items the last `suggest` was least sure of
        first (uncertainty sampling, as Label Studio's data manager sorts tasks by prediction score); items it
        made no guess for come after, in queue order."""
        if order == "queue":
            return self._matching(filter)
        if order != "uncertain":
            raise CdlError(f"unknown order {order!r} (known: {', '.join(ORDERS)})")
        doc = suggestions(self.ws)
        if not doc:
            raise CdlError("no suggestions to order by: `cdl labels suggest` first (the labeling panel's Suggest)")
        guessed = doc.get("items", {})
        rows = list(self._matching(filter))
        return sorted(rows, key=lambda rs: guessed[rs[0].id][1] if rs[0].id in guessed else 2.0)  # stable

    def _matching(self, filter: str) -> Iterator[tuple[IndexRow, LabelState]]:
        """The rows the filter shows, in queue order, each content once, with its label state."""
        states = current_states(self.store)
        gone = self._gone()
        if filter.startswith("proposal:"):
            wanted = [u for u in self._proposal_order(filter.split(":", 1)[1]) if u not in gone]
            view = self._dataset()
            staged = self._staged([u for u in wanted if not view.has(u)])
            order: Iterable[IndexRow] = [view.row(u) if view.has(u) else staged[u] for u in wanted
                                         if view.has(u) or u in staged]
        else:
            if filter not in FILTERS:
                raise CdlError(f"unknown filter {filter!r} (known: {', '.join(FILTERS)}, proposal:ID)")
            quarantined = self._quarantined() | gone
            order = itertools.chain((r for r in self._dataset().rows if r.uid not in quarantined), self._new_rows())
        seen_ids: set[str] = set()
        none = LabelState(None, False)
        for r in order:
            if r.id in seen_ids:  # duplicates share one label: show the content once
                continue
            seen_ids.add(r.id)
            st = states.get(r.id, none)
            if filter == "unlabeled" and (st.label is not None or st.conflict):
                continue
            if filter == "conflicts" and not st.conflict:
                continue
            if filter == "labeled" and st.label is None:
                continue
            # a proposal's samples left to label: a label from Label Studio (`cdl loop --labels`, labels import)
            # counts as a labeler's, as the proposal's own count has it ("65/65 labeled" while the queue still
            # handed out all 65)
            if filter.startswith("proposal:") and st.label is not None:
                continue
            yield r, st

    @staticmethod
    def _queue_item(r: IndexRow, st: LabelState) -> QueueItem:
        return QueueItem(r.uid, r.id, r.kind, r.source, st.label, st.conflict, st.candidates, r.split, {})

    def _skipped(self) -> set[str]:
        """Items this labeler skipped, or already decided (so that 'all' moves on after each label)."""
        return self.store.decided_by(self.labeler)

    def next(self, filter: str = "unlabeled", order: str = "queue") -> QueueItem | None:
        """The next item for this labeler, leased to it (as Label Studio locks a task for its annotator): other
        labelers on the same queue are handed other items until this one is labeled or skipped, this labeler
        asks for another, or the lease runs out (`lease_seconds`, 15 minutes)."""
        skipped = self._skipped()
        todo = ((r, st) for r, st in self._ordered(filter, order) if r.id not in skipped)
        # one more than the items other labelers hold is enough to find a free one: the rest need not be read
        head = {r.id: (r, st) for r, st in itertools.islice(todo, len(self.store.leased_by_others(self.labeler)) + 1)}
        if not head:
            self.store.release_lease(self.labeler)
            return None
        pick = self.store.lease_item(self.labeler, list(head), self.lease_seconds)
        if pick is None:  # others took those meanwhile: offer every remaining one
            head.update((r.id, (r, st)) for r, st in todo)
            pick = self.store.lease_item(self.labeler, list(head), self.lease_seconds)
        return self._queue_item(*head[pick]) if pick in head else None

    def _staged(self, uids: Iterable[str] | None = None) -> dict[str, IndexRow]:
        """Items imported but not yet in the checked-out dataset (a retrain proposal's samples): those with
        `uids`, or all."""
        items = self.store.items() if uids is None else self.store.items_by_uid(uids)
        return {i.uid: IndexRow(i.uid, i.id, i.kind, i.source, None, False, i.split, i.pack, i.offset, i.length,
                                i.encoding) for i in items}

    def content(self, uid: str) -> str | Any:
        """Text (decoded as the clean step does) or an image array, for display."""
        view = self._dataset()
        try:
            row = view.row(uid)
            reader = view
        except CdlError:
            staged = self._staged([uid])
            if uid not in staged:
                raise
            row = staged[uid]
            reader = self._import_view([row])
        if row.kind == "text":
            return decode_text(reader.read_bytes(row))[0]
        try:
            return reader.read_image(row)
        except Exception as exc:  # noqa: BLE001 - Pillow's errors: a corrupt file in the queue stopped labeling
            from edge_agent.proto.images import unreadable_why

            # said in words where the image would be, so that the labeler skips it (`labels next` raised a
            # traceback, and the panel stayed on its error): data.validate quarantines it
            return (f"{row.source}: this file cannot be decoded as an image ({unreadable_why(exc)}). Skip it (S, "
                    f"`cdl labels skip {uid}`); data.validate quarantines it.")

    # -- actions ------------------------------------------------------------------------------------------

    def _item_id(self, ref: str) -> str:
        view = self._dataset()
        if view.has(ref):  # a uid, as the panel and `cdl labels next` give it
            return view.row(ref).id
        found = self.store.items_by_uid([ref]) or self.store.items_by_id([ref])
        if found:
            return found[0].id
        if any(r.id == ref for r in view.rows):  # a content id of the version, no longer among the items
            return ref
        rows = list(view.rows) + list(self._staged().values())
        matches = [r for r in rows if r.id.startswith(ref) or r.uid.endswith(ref) or r.source == ref]
        if len({r.id for r in matches}) == 1:
            return matches[0].id
        if not matches:
            raise NotFoundError(f"item {ref!r} is not in the checked-out dataset version")
        # name some, as git does for a short hash: which item was meant is then one copy away
        some = sorted({r.uid for r in matches})
        raise CdlError(f"item {ref!r} is ambiguous ({len(some)} matches: {', '.join(some[:5])}"
                       f"{', …' if len(some) > 5 else ''}); give the full id")

    def _need_labeler(self) -> None:
        """A label or a skip says who gave it: an empty name made a labeler "" in the agreement table."""
        if not self.labeler:
            raise CdlError("a label needs the labeler's name (`--labeler NAME`, the labeling panel's Labeler field)")

    def set_label(self, ref: str, label: str) -> LabelRecord:
        self._need_labeler()
        fixed = (self.ws.config().labeling or {}).get("classes") or []
        if fixed and label not in fixed:
            raise CdlError(f"label {label!r} is not one of the classes in cdl.yaml: {', '.join(fixed)}")
        if not label.strip():
            raise CdlError("a label must not be empty")
        item = self._item_id(ref)
        rec = self.store.add_label(item, label, self.labeler, "manual", "label",
                                   dataset_version=self.ws.current_version())
        self.store.release_lease(self.labeler, item)
        return rec

    def skip(self, ref: str) -> LabelRecord:
        self._need_labeler()
        item = self._item_id(ref)
        rec = self.store.add_label(item, None, self.labeler, "manual", "skip",
                                   dataset_version=self.ws.current_version())
        self.store.release_lease(self.labeler, item)
        return rec

    def undo(self) -> LabelRecord | None:
        return self.store.undo_last(self.labeler)

    def item_name(self, item_id: str) -> str:
        """"proposal:p1:cam1#328 (432d183c7df2)": the uid `labels next` shows, with the id (the id alone was said)."""
        found = self.store.items_by_id([item_id])
        return f"{found[0].uid} ({item_id[:12]})" if found else item_id[:12]

    def action_text(self, rec: LabelRecord) -> str:
        """"ana's label Trouser of fm.gz#12 (4c1e…)", "ana's skip of …": a label or skip, as Undo names it."""
        what = f"{rec.action} {rec.label}" if rec.action == "label" and rec.label else rec.action
        return f"{rec.labeler}'s {what} of {self.item_name(rec.item_id)}"

    def undone_text(self, rec: LabelRecord) -> str:
        """What an undo did and what the item has now: "undid ana's label Trouser of …; it is unlabeled now"."""
        st = effective_labels(self.store.labels(item_ids=[rec.item_id])).get(rec.item_id)
        now = (f"labeled {st.label}" if st is not None and st.label is not None else
               "in conflict" if st is not None and st.conflict else "unlabeled")
        return f"undid {self.action_text(rec)}; it is {now} now"

    def _counted_rows(self) -> Iterator[IndexRow]:
        """The rows progress counts: the checked-out version's, quarantine and items gone since aside, and those
        imported since."""
        left_out = self._quarantined() | self._gone()
        yield from (r for r in self._dataset().rows if r.uid not in left_out)
        yield from self._new_rows()

    def _counted(self) -> tuple[set[str], dict[str, LabelState]]:
        """The contents progress and class_counts count, with every item's effective label."""
        return self._counted_ids()[0], current_states(self.store)

    def _counted_ids(self) -> tuple[set[str], int]:
        """(the contents counted, how many uids they come from), found again only when the checked-out index, the
        item set or the quarantine changed: `cdl labels stats` went over 70 000 rows three times for them, and the
        panel once for each item it shows."""
        view = self._dataset()
        left_out = frozenset(self._quarantined() | self._gone())
        key = (self.store.items_token(), left_out)
        known = _COUNTED.get(self.ws)
        if known is not None and known[0] is view and known[1] == key:
            return known[2]
        rows = list(self._counted_rows())
        found = ({r.id for r in rows}, len({r.uid for r in rows}))
        _COUNTED[self.ws] = (view, key, found)
        return found

    def quarantined_count(self) -> int:
        """The checked-out version's items data.validate quarantined, which progress leaves out: "total 50" beside
        data.import's 51 items said nothing of the broken image."""
        q = self._quarantined()
        return sum(r.uid in q for r in self._dataset().rows) if q else 0

    def items_counted(self) -> int:
        """How many items (uids) progress's unique contents come from: the BBC archive's 2 225 files are 2 127
        contents, a label covering every copy."""
        return self._counted_ids()[1]

    def progress(self) -> dict[str, int]:
        ids = self._counted_ids()[0]
        now = _current(self.store)
        labeled, conflicts = len(ids & now.labeled), len(ids & now.conflicts)
        return {"total": len(ids), "labeled": labeled, "conflicts": conflicts,
                "unlabeled": len(ids) - labeled - conflicts}

    def class_counts(self) -> dict[str, int]:
        """Labeled items per class (as data.import's relabel names them), every class of the queue's keys first and
        in their order, at 0 where none has it yet: how far each class has got, as Label Studio's label
        distribution shows it."""
        ids, states = self._counted()
        relabel = workspace_relabel(self.ws)
        counts = Counter(relabel.get(st.label, st.label) for i in ids
                         if (st := states.get(i)) is not None and st.label is not None)
        return {c: counts.pop(c, 0) for c in self.classes()} | dict(sorted(counts.items()))


# -- suggestions: a model's pre-annotations ----------------------------------------------------------------

SUGGESTIONS_FILE = "label-suggestions.json"


def suggest(ws: Workspace, ref: str | None = None, log=None) -> dict[str, Any]:  # noqa: ANN001
    """Pre-annotations, as a Label Studio ML backend gives them: the model (default the champion) predicts every
    item still to decide (unlabeled or in conflict) of the checked-out version; the labeling panel shows its guess
    and its confidence beside the item, and Enter takes it. Suggestions are not labels (they never count, nor
    make the data pipeline stale) and are kept in `.cdl/label-suggestions.json`, replaced by the next call."""
    import numpy as np

    from runtime.ml.preprocess import rows_under, transform_spec
    from runtime.ml.versus import predict_proba

    say = log or (lambda _m: None)
    cfg = ws.config()
    if ref is None:
        name = (cfg.steps.get("model.register") or {}).get("name") or cfg.name
        ref = f"{name}@champion"
        try:
            mv = ws.store.resolve_model(ref)
        except NotFoundError as exc:  # it said only "model ws has no version with alias 'champion'"
            raise NotFoundError(f"{exc}; suggestions come from the champion; approve a version (`cdl models review "
                                f"{name}:N --approve`, the review panel) or name one (`--model {name}:N`)") from None
    else:
        mv = ws.store.resolve_model(ref)
    q = LabelQueue(ws)
    rows = [r for f in ("unlabeled", "conflicts") for r, _ in q._matching(f)]
    out: dict[str, list[Any]] = {}
    unknown = undecodable = 0
    if rows:
        spec = transform_spec(ws, mv.transform, log=say)
        view = q._dataset()
        new = {r.uid for r in q._new_rows()}  # imported since the dataset was made: read from the import's packs
        say(f"{mv.ref} predicts {len(rows)} item(s) to decide")
        fresh = [r for r in rows if r.uid in new]
        for reader, group in ((view, [r for r in rows if r.uid not in new]), (q._import_view(fresh), fresh)):
            for start in range(0, len(group), 2048):
                chunk = group[start : start + 2048]
                try:
                    X = rows_under(reader, chunk, spec)
                except Exception:  # noqa: BLE001 - an image that does not decode: the others still get a guess
                    if spec["type"] == "text":
                        raise
                    chunk = [r for r in chunk if _decodes(reader, r)]
                    undecodable += len(group[start : start + 2048]) - len(chunk)
                    X = rows_under(reader, chunk, spec)
                # a text with no word the model knows got the model's guess for an empty text, with a confidence
                # a labeler took for a judgement ("business 0.83" on a blank item): no suggestion for it
                blank = np.asarray(X.getnnz(axis=1) == 0) if spec["type"] == "text" else np.zeros(len(chunk), bool)
                probs = predict_proba(ws, mv, X)
                for r, p, b in zip(chunk, probs, blank, strict=True):
                    if b:
                        unknown += 1
                        continue
                    j = int(np.argmax(p))
                    out[r.id] = [mv.classes[j], round(float(p[j]), 4)]
        if unknown:
            say(f"{unknown} item(s) have no word {mv.ref} knows: no suggestion for them")
        if undecodable:
            say(f"{undecodable} item(s) cannot be decoded as images: no suggestion for them (data.validate "
                "quarantines them)")
    doc = {"model": mv.ref, "created": datetime.now(UTC).isoformat(), "items": out}
    from runtime.workspace.config import atomic_write_text

    atomic_write_text(ws.root / ".cdl" / SUGGESTIONS_FILE, json.dumps(doc))
    counts = Counter(label for label, _ in out.values())
    return {"model": mv.ref, "items": len(out), "by_class": dict(counts.most_common()), "no_known_word": unknown,
            "undecodable": undecodable}


def _decodes(reader: Any, row: IndexRow) -> bool:  # noqa: ANN401
    try:
        reader.read_image(row)
    except Exception:  # noqa: BLE001 - Pillow's errors
        return False
    return True


_SUGGESTED: weakref.WeakKeyDictionary[Any, tuple[tuple[int, int], dict[str, Any]]] = weakref.WeakKeyDictionary()


def suggestions(ws: Workspace) -> dict[str, Any] | None:
    """The last `suggest`'s file, read again only when it changed."""
    path = ws.root / ".cdl" / SUGGESTIONS_FILE
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    stamp = (st.st_mtime_ns, st.st_size)
    cached = _SUGGESTED.get(ws)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    _SUGGESTED[ws] = (stamp, doc)
    return doc


# -- agreement between labelers -----------------------------------------------------------------------------


def latest_decisions(records: Iterable[LabelRecord]) -> dict[tuple[str, str], LabelRecord]:
    """Each labeler's latest label or skip of each item, {(item_id, labeler): record}; model predictions are not
    labelers' decisions and are left out."""
    out: dict[tuple[str, str], LabelRecord] = {}
    for r in records:
        key = (r.item_id, r.labeler)
        if r.source != "model" and (key not in out or r.id > out[key].id):
            out[key] = r
    return out


def workspace_relabel(ws: Workspace) -> dict[str, str]:
    """data.import's relabel as cdl.yaml says ({} where there is none)."""
    from runtime.steps.data import relabel_of

    return relabel_of(ws.config())


def agreement(store, relabel: dict[str, str] | None = None) -> dict[str, Any]:  # noqa: ANN001
    """Who labeled what, and how often labelers agree where they labeled the same item (as Label Studio's
    annotator agreement). A labeler is a person (manual labels) or an imported source (its folder names or its
    Label Studio annotators); each one's latest label of an item counts, a skip is no label, model predictions
    are not labelers. Per pair of labelers: the items both labeled, the share with the same label, and Cohen's
    kappa (agreement beyond what their label frequencies give by chance; None where it is undefined). Labels are
    read through `relabel` (data.import's): "Sport" and "sport" given to one item agree."""
    relabel = relabel or {}
    records = store.labels()
    kinds = {r.labeler: r.source for r in records if r.source != "model"}
    by_item: dict[str, dict[str, str]] = {}
    skipped: Counter[str] = Counter()
    for (item, who), r in latest_decisions(records).items():
        label = relabel.get(r.label, r.label) if r.action == "label" else None
        if label is None:
            skipped[who] += 1
        else:
            by_item.setdefault(item, {})[who] = label
    labeled: Counter[str] = Counter(who for labels in by_item.values() for who in labels)
    pairs: dict[tuple[str, str], list[tuple[str, str]]] = {}
    several = unanimous = 0
    for labels in by_item.values():
        if len(labels) < 2:
            continue
        several += 1
        unanimous += len(set(labels.values())) == 1
        for a, b in itertools.combinations(sorted(labels), 2):
            pairs.setdefault((a, b), []).append((labels[a], labels[b]))
    agree: Counter[str] = Counter()
    shared: Counter[str] = Counter()
    rows = []
    for (a, b), got in sorted(pairs.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        same = sum(x == y for x, y in got)
        for who in (a, b):
            agree[who] += same
            shared[who] += len(got)
        rows.append({"a": a, "b": b, "items": len(got), "agreement": round(same / len(got), 4),
                     "kappa": _kappa(got)})
    labelers = [{"labeler": who, "source": kinds.get(who, "manual"), "labeled": labeled[who],
                 "skipped": skipped[who], "shared": shared[who],
                 "agreement": round(agree[who] / shared[who], 4) if shared[who] else None}
                for who in sorted(set(labeled) | set(skipped), key=lambda w: (kinds.get(w) != "manual", w))]
    return {"labelers": labelers, "pairs": rows, "items_with_several": several,
            "unanimous": round(unanimous / several, 4) if several else None}


def _kappa(pairs: list[tuple[str, str]]) -> float | None:
    n = len(pairs)
    cats = sorted({c for p in pairs for c in p})
    fa = Counter(a for a, _ in pairs)
    fb = Counter(b for _, b in pairs)
    observed = sum(a == b for a, b in pairs) / n
    expected = sum(fa[c] * fb[c] for c in cats) / (n * n)
    if expected >= 1.0:
        return None  # one label only, on both sides: agreement by chance is certain, kappa is undefined
    return round((observed - expected) / (1 - expected), 4)


# -- Label Studio import / export ---------------------------------------------------------------------------


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _ls_names(ws: Workspace) -> tuple[bool, str, str]:
    """(text task?, the Label Studio control's name, the object's name) from cdl.yaml's labeling section."""
    cfg = ws.config()
    lab = cfg.labeling or {}
    is_text = cfg.task == "text"
    return (is_text, lab.get("from_name") or ("category" if is_text else "label"),
            lab.get("to_name") or ("text" if is_text else "image"))


def _rows_and_new(ws: Workspace) -> list[tuple[IndexRow, DatasetView]]:
    """The checked-out dataset's rows, then the items imported since (LabelQueue._new_rows), each with the view
    that reads it."""
    q = LabelQueue(ws)
    view = q._dataset()
    new, gone = q._new_rows(), q._gone()  # gone: a source removed, a proposal dismissed, since data.ingest
    fresh = q._import_view(new)
    return [(r, view) for r in view.rows if r.uid not in gone] + [(r, fresh) for r in new]


def label_config(is_text: bool, from_name: str, to_name: str, classes: list[str]) -> str:
    """The Label Studio labeling config (a project's Labeling Interface, as XML) that takes our export: the text or
    image under `to_name` (the task's data key), a single choice named `from_name` among `classes`, as Label
    Studio's own Text and Image Classification templates write it."""
    from xml.sax.saxutils import quoteattr

    obj = "Text" if is_text else "Image"
    inline = ' showInline="true"' if is_text else ""
    return "\n".join([
        "<View>",
        f"  <{obj} name={quoteattr(to_name)} value={quoteattr('$' + to_name)}/>",
        f'  <Choices name={quoteattr(from_name)} toName={quoteattr(to_name)} choice="single"{inline}>',
        *(f"    <Choice value={quoteattr(c)}/>" for c in classes),
        "  </Choices>",
        "</View>",
        ""])


def read_label_config(path: Path, is_text: bool) -> dict[str, Any]:
    """A Label Studio labeling config (a project's Labeling Interface, Code): {"from_name", "to_name", "classes"}
    of its one single-choice Choices over a Text (text workspace) or an Image (image workspace), the classes in the
    config's order. Anything else is refused with what is wrong, naming the file."""
    import xml.etree.ElementTree as ET

    path = Path(path)
    try:
        root = ET.fromstring(path.read_bytes())
    except OSError as exc:
        raise DataImportError(f"{path}: {exc.strerror or exc}") from None
    except ET.ParseError as exc:
        raise DataImportError(f"{path}: not a Label Studio labeling config (XML: {exc})") from None
    tags = list(root.iter())
    kind = "Text" if is_text else "Image"
    objects = {e.get("name"): e.tag for e in tags if e.tag.lower() in ("text", "image", "hypertext", "paragraphs")}
    choices = [e for e in tags if e.tag.lower() == "choices"]
    if not choices:
        raise DataImportError(f"{path}: no <Choices> in this labeling config: CDL Studio labels each item with one "
                              "class, as Label Studio's Text and Image Classification templates do")
    if len(choices) > 1:
        names = ", ".join(repr(c.get("name")) for c in choices)
        raise DataImportError(f"{path}: {len(choices)} <Choices> ({names}); CDL Studio labels each item with one "
                              "class: keep the one that holds it")
    ch = choices[0]
    from_name, to_name = ch.get("name") or "", ch.get("toName") or ""
    if not from_name or not to_name:
        raise DataImportError(f"{path}: <Choices> needs a name and a toName")
    if (ch.get("choice") or "single").lower() not in ("single", "single-radio"):
        raise DataImportError(f"{path}: <Choices name={from_name!r}> has choice={ch.get('choice')!r}; CDL Studio "
                              "labels each item with one class (choice=\"single\")")
    obj = objects.get(to_name)
    if obj is None:
        raise DataImportError(f"{path}: <Choices name={from_name!r}> labels {to_name!r}, which is no <Text> or "
                              "<Image> of this config")
    if obj.lower() != kind.lower():
        raise DataImportError(f"{path}: the config labels {'an' if obj.lower() == 'image' else 'a'} <{obj}>, but "
                              f"this is {'a text' if is_text else 'an image'} workspace ({'a <Text>' if is_text else 'an <Image>'})")
    classes: list[str] = []
    for c in ch.iter():
        if c is ch or c.tag.lower() != "choice":
            continue
        value = (c.get("value") or "").strip()
        if not value:
            raise DataImportError(f"{path}: a <Choice> of {from_name!r} has no value")
        if value in classes:
            raise DataImportError(f"{path}: the choice {value!r} is there twice")
        classes.append(value)
    if len(classes) < 2:
        raise DataImportError(f"{path}: <Choices name={from_name!r}> has {len(classes)} choice(s); a classifier "
                              "needs two classes at least")
    return {"from_name": from_name, "to_name": to_name, "classes": classes}


def import_label_config(ws: Workspace, path: Path) -> dict[str, Any]:
    """Take a Label Studio project's labeling config: its choices become cdl.yaml's `labeling.classes` (in its
    order: the labeling keys, and the model's output), its control and object names `labeling.from_name` and
    `to_name` (so that the project's exports import and our exports go back to it). A label the workspace already
    uses that the config lacks is refused, as Label Studio refuses a config that drops a choice in use; cdl.yaml is
    written atomically, or not at all."""
    cfg = ws.config()
    doc = read_label_config(path, cfg.task == "text")
    relabel = workspace_relabel(ws)
    q = LabelQueue(ws)
    labels = {r.id: r.label for r in q._dataset().rows if r.label}
    labels.update({item: st.label for item, st in current_states(ws.store).items() if st.label})  # given since
    used = Counter(relabel.get(v, v) for v in labels.values())
    missing = sorted(k for k in used if k not in doc["classes"])
    if missing:
        shown = ", ".join(f"{k!r}" + (f" ({used[k]} items)" if used[k] else "") for k in missing[:8])
        raise DataImportError(f"{path}: labels this workspace already uses are not among its choices: {shown}"
                              f"{' …' if len(missing) > 8 else ''}; add them to the config, or merge them into its "
                              "choices with data.import's relabel. cdl.yaml is unchanged")
    lab = dict(cfg.labeling or {})
    before = list(lab.get("classes") or [])
    lab.update(doc)
    cfg.labeling = lab
    ws.save_config(cfg, f"labeling: the label config of {Path(path).name}")
    return {**doc, "config": str(path), "before": before, "new": [c for c in doc["classes"] if c not in used]}


def export_label_studio(ws: Workspace, path: Path, include_unlabeled: bool = True,
                        config: Path | None = None, filter: str | None = None,  # noqa: A002
                        progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Write the checked-out dataset's items, and those imported since, with their labels, as a Label Studio JSON
    export; with `config`, also the labeling config a Label Studio project needs to import it (label_config): every
    class, and every label the export carries (Label Studio refuses an annotation whose choice its config lacks).
    `filter`: only the items a labeling queue filter shows (`cdl labels next --filter`'s: unlabeled, conflicts,
    labeled, all, proposal:ID), so that a retrain proposal's samples go to Label Studio without the whole dataset.
    `progress(done, total)`: every 2000 items read, and at the end."""
    is_text, from_name, to_name = _ls_names(ws)
    every = _rows_and_new(ws)
    if filter:
        wanted = {r.id for r, _st in LabelQueue(ws)._matching(filter)}
        every = [(r, v) for r, v in every if r.id in wanted]
    records = ws.store.labels()
    by_item: dict[str, list[LabelRecord]] = {}
    for r in records:
        by_item.setdefault(r.item_id, []).append(r)
    tasks = []
    seen: set[str] = set()
    ann_id = 0
    guessed = suggestions(ws) or {}
    guesses = guessed.get("items") or {}
    from runtime.proposals import device_predictions

    answered = device_predictions(ws)
    undecodable: list[str] = []
    now = _iso(datetime.now(UTC))  # the tasks' own times: the export's (made once, not for each of 70 000)
    for n, (row, reader) in enumerate(every, start=1):
        if progress is not None and n % 2000 == 0 and n < len(every):
            progress(n, len(every))
        if row.id in seen:
            continue
        seen.add(row.id)
        recs = by_item.get(row.id, [])
        if not recs and not include_unlabeled:
            continue
        if is_text:
            data = {to_name: decode_text(reader.read_bytes(row))[0]}
        else:
            try:
                data = {to_name: _png_data_uri(reader.read_image(row))}
            except Exception:  # noqa: BLE001 - a file that does not decode has no picture to send: left out, counted
                undecodable.append(row.uid)
                continue
        data.update({"source_file": row.source, "cdl_item": row.id, "cdl_uid": row.uid})
        annotations, predictions = [], []
        if row.id in guesses:  # `cdl labels suggest`'s guess: a Label Studio prediction, with its score
            label, score = guesses[row.id]
            predictions.append({"model_version": guessed["model"], "score": score,
                                "result": [_choice(from_name, to_name, label)], "created_at": guessed["created"]})
        elif row.id in answered:  # a retrain proposal's sample: what the device answered, as the queue suggests it
            a = answered[row.id]
            predictions.append({"model_version": a["model"], "score": a["confidence"],
                                "result": [_choice(from_name, to_name, a["label"])]})
        for r in recs:
            if r.source == "model":
                predictions.append({
                    "model_version": r.labeler,
                    "score": None,
                    "result": [_choice(from_name, to_name, r.label)],
                    "created_at": _iso(r.created),
                })
                continue
            ann_id += 1
            cancelled = r.action == "skip"
            made = _iso(r.created)
            annotations.append({
                "id": ann_id,
                "completed_by": r.labeler,
                "result": [] if cancelled else [_choice(from_name, to_name, r.label)],
                "was_cancelled": cancelled,
                "ground_truth": False,
                "created_at": made,
                "updated_at": made,
                "draft_created_at": None,
                "lead_time": None,
                "prediction": {},
                "result_count": 0 if cancelled else 1,
                "task": n,
                "parent_prediction": None,
                "parent_annotation": None,
                "meta": {"cdl_source": r.source},
            })
        tasks.append({
            "id": n,
            "annotations": annotations,
            "drafts": [],
            "predictions": predictions,
            "data": data,
            "meta": {},
            "created_at": now,
            "updated_at": now,
            "inner_id": n,
            "total_annotations": sum(not a["was_cancelled"] for a in annotations),
            "cancelled_annotations": sum(a["was_cancelled"] for a in annotations),
            "total_predictions": len(predictions),
        })
    from runtime.workspace.config import atomic_write_text

    # one task a line, each written by json's C encoder: indent=1 made json use its Python one, 20 of the 34 s
    # that Fashion-MNIST's 70 000 images took
    atomic_write_text(Path(path), "[\n" + ",\n".join(json.dumps(t, ensure_ascii=False) for t in tasks) + "\n]\n")
    if progress is not None:
        progress(len(every), len(every))
    out: dict[str, Any] = {"tasks": len(tasks), "annotations": ann_id, "left_out_undecodable": undecodable}
    if config is not None:
        used = {c for t in tasks for a in t["annotations"] + t["predictions"] for r in a["result"]
                for c in r["value"]["choices"]}
        classes = LabelQueue(ws).classes()
        classes += sorted(used - set(classes))
        atomic_write_text(Path(config), label_config(is_text, from_name, to_name, classes))
        out.update(config=str(config), classes=classes)
    return out


def _choice(from_name: str, to_name: str, label: str | None) -> dict[str, Any]:
    return {"from_name": from_name, "to_name": to_name, "type": "choices", "value": {"choices": [label]}}


def _png_data_uri(array) -> str:  # noqa: ANN001
    return "data:image/png;base64," + base64.b64encode(_png(array)).decode()


_PNG_COLOR = {1: 0, 3: 2, 4: 6}  # channels -> PNG colour type: grey, RGB, RGBA


def _png(array) -> bytes:  # noqa: ANN001
    """A PNG of a uint8 image (H, W) or (H, W, 1|3|4), written here: Pillow's save cost 160 µs an image, 11 of the
    34 s that Fashion-MNIST's 70 000 took to export (rows unfiltered, zlib at its default level; other images go
    through Pillow)."""
    import struct
    import zlib

    import numpy as np

    a = np.asarray(array)
    channels = 1 if a.ndim == 2 else (a.shape[2] if a.ndim == 3 else 0)
    if a.dtype != np.uint8 or channels not in _PNG_COLOR or 0 in a.shape:
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(a).save(buf, format="PNG")
        return buf.getvalue()
    h, w = a.shape[:2]
    rows = np.zeros((h, 1 + w * channels), np.uint8)  # each row led by its filter type, 0: none
    rows[:, 1:] = a.reshape(h, w * channels)

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, _PNG_COLOR[channels], 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows.tobytes())) + chunk(b"IEND", b""))


# how the refusal of unmatched tasks ends: the labeling panel, which has no such option, asks instead
UNMATCHED_HINT = " Import the data first, or pass --skip-unmatched"


# a task's value that is a file Label Studio holds, not a text: an upload, local storage, cloud storage, a URL
_FILE_REFS = ("/data/upload/", "/data/local-files/", "s3://", "gs://", "azure-blob://", "http://", "https://")


def import_label_studio(ws: Workspace, path: Path, skip_unmatched: bool = False,
                        media_root: Path | None = None,
                        progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Read labels from a Label Studio JSON/JSON_MIN export into the labels table, in one transaction.

    Tasks are matched to items of the checked-out dataset (and those imported since) by `data.cdl_item`, then by
    the content of the text or image, then by `source_file`, then by the path or name of a file Label Studio holds
    (an upload's name without Label Studio's prefix), where one item alone has it; a file found under media_root
    (default: the export's folder, as `data import --media-root` has it) matches by its content first, as items
    imported from it or from the same file elsewhere have it for their id. Cancelled annotations are
    recorded as skips (the task stays unlabeled); disagreeing annotations stay as they are and show up as a
    conflict. Re-importing the same file replaces what it imported before.

    `progress(done, total)`: tasks matched so far, once the file is read, every 2000 tasks and at the end (the
    labels are written after it).
    """
    import hashlib

    from runtime.steps.sources import load_label_studio, ls_task_annotations

    path = Path(path)
    if not path.exists():
        raise DataImportError(f"{path}: does not exist")
    if path.stat().st_size == 0:
        raise DataImportError(f"{path}: the file is empty")
    tasks = load_label_studio(path)
    is_text, from_name, to_name = _ls_names(ws)
    from runtime.steps.sources import check_choice_names

    if any(isinstance(t, dict) and isinstance(t.get("data"), dict) and to_name in t["data"] for t in tasks):
        check_choice_names(tasks, from_name, path)  # (tasks of another object, images here, are unmatched below)
    # data.import's relabel holds for labels that come back from Label Studio too: an export of a project whose
    # choices say "Sport" brought the spelling back that relabel had merged into "sport"
    relabel = workspace_relabel(ws)
    every = _rows_and_new(ws)
    ids = {r.id for r, _ in every}
    by_source = {}
    by_name: dict[str, set[str]] = {}  # a file's name: the items imported from files so named
    for r, _ in every:
        by_source.setdefault(r.source, r.id)
        parts = r.source.split("/")
        for k in range(1, len(parts)):
            by_source.setdefault("/".join(parts[k:]), r.id)
        by_name.setdefault(parts[-1], set()).add(r.id)
    same_name: list[str] = []  # tasks whose file has the name of several items
    rows: list[dict[str, Any]] = []
    unmatched: list[str] = []
    stats = Counter()
    touched: set[str] = set()
    prefix = f"ls:{path.name}#"
    # what each labeler's decision on each item is now, from everything but this file: an annotation of our own
    # export coming back that says the same is already here, and a second copy would only churn the labels
    # (latest_decisions' rule over the rows in force: the later a labeler's decision, the more it counts)
    standing = {(item, labeler): (action, label) for item, labeler, action, label, ref in ws.store.decision_rows()
                if not (ref or "").startswith(prefix)}
    version = ws.current_version()  # a query: once, not for each of 70 000 rows
    if progress is not None:
        progress(0, len(tasks))
    with no_collection():  # 70 000 tasks' rows and dicts, none in a cycle: the collector walked them again and again
        for i, task in enumerate(tasks):
            if progress is not None and i and i % 2000 == 0:
                progress(i, len(tasks))
            tid = task.get("id", i + 1)
            where = f"{path}: task {tid}"
            data = task.get("data", task) if isinstance(task.get("data", task), dict) else {}
            item_id = data.get("cdl_item") if data.get("cdl_item") in ids else None
            if item_id is None and isinstance(data.get(to_name), str):
                value = data[to_name]
                if value.startswith("data:image"):
                    payload = base64.b64decode(value.split(",", 1)[1])
                    cand = hashlib.sha256(payload).hexdigest()
                else:
                    cand = hashlib.sha256(value.encode("utf-8")).hexdigest()
                item_id = cand if cand in ids else None
            if item_id is None and isinstance(data.get("source_file"), str):
                item_id = by_source.get(data["source_file"])
            value = data.get(to_name)
            if item_id is None and isinstance(value, str) and value.startswith(_FILE_REFS):
                # a file Label Studio holds (an upload, local or cloud storage): the item imported from the file of
                # that path or name, where one item alone has it. The photos a user imported and uploaded to Label
                # Studio matched nothing ("/data/upload/2/3b1a989e-cat1.png" is no content here)
                from runtime.steps.sources import ls_file_names, ls_file_ref, ls_media_file

                media = ls_media_file(value, Path(media_root or path.parent))
                if media is not None:  # the file itself, here: its content is the item's id
                    cand = hashlib.sha256(media.read_bytes()).hexdigest()
                    item_id = cand if cand in ids else None
                ref = ls_file_ref(value).strip("/").split("/")  # local storage's path, from its root: a folder's
                if item_id is None:
                    item_id = next((by_source[k] for k in ("/".join(ref[j:]) for j in range(len(ref) - 1))  # whole
                                    if k in by_source), None)  # or the end of it (cats/1.png), then the name alone
                for name in ls_file_names(value, task.get("file_upload")) if item_id is None else ():
                    found = by_name.get(name, set())
                    if len(found) == 1:
                        item_id = next(iter(found))
                        break
                    if len(found) > 1 and str(tid) not in same_name:
                        same_name.append(str(tid))
            if item_id is None:
                unmatched.append(str(tid))
                continue
            labels, skips = ls_task_annotations(task, from_name, where)
            stats["relabeled"] += sum(lab in relabel for lab, _, _ in labels)
            labels = [(relabel.get(lab, lab), labeler, source) for lab, labeler, source in labels]
            ours = {str(a.get("completed_by")) for a in task.get("annotations") or []  # exported by CDL Studio
                    if isinstance(a, dict) and isinstance(a.get("meta"), dict) and "cdl_source" in a["meta"]}
            for k, (label, labeler, source) in enumerate(labels):
                if labeler in ours and standing.get((item_id, labeler)) == ("label", label):
                    stats["already"] += 1
                    continue
                rows.append({"item_id": item_id, "label": label, "labeler": labeler, "source": source,
                             "task_ref": f"{prefix}{tid}/{k}", "dataset_version": version})
            for k, labeler in enumerate(skips):
                if labeler in ours and standing.get((item_id, labeler), ("", ""))[0] == "skip":
                    stats["already"] += 1
                    continue
                rows.append({"item_id": item_id, "label": None, "labeler": labeler, "source": "import",
                             "action": "skip", "task_ref": f"{prefix}{tid}/skip{k}"})
            stats["labeled" if labels else "skipped" if skips else "unannotated"] += 1
            touched.add(item_id)
    if progress is not None:
        progress(len(tasks), len(tasks))
    if unmatched and not skip_unmatched:
        twice = [t for t in same_name if t in unmatched]
        raise DataImportError(
            f"{path}: {len(unmatched)} task(s) match no item of the checked-out dataset "
            f"(tasks {', '.join(unmatched[:10])}{'...' if len(unmatched) > 10 else ''}); nothing was imported."
            + (f" The file of task(s) {', '.join(twice[:5])} has the name of several items here (cats/1.png and "
               "dogs/1.png): give the files distinct names, or use Label Studio's local storage, whose paths "
               "are matched whole." if twice else "")
            + UNMATCHED_HINT
        )
    ws.store.replace_labels(prefix, rows)
    # the items of the file whose labels disagree now, as the queue's 'conflicts' has them: it counted the tasks
    # with two choices, also where an annotation marked ground truth (or a labeler's own) had decided
    states = current_states(ws.store)
    stats["conflicts"] = sum(1 for i in touched if (st := states.get(i)) is not None and st.conflict)
    return {"tasks": len(tasks), "labels": sum(1 for r in rows if r.get("action", "label") == "label"),
            "labeled_tasks": stats["labeled"], "skipped_tasks": stats["skipped"],
            "unannotated_tasks": stats["unannotated"], "conflicts": stats["conflicts"],
            "unmatched": len(unmatched), "already_here": stats["already"], "relabeled": stats["relabeled"]}
