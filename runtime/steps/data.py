"""The data pipeline (thesis Figure 4.2): collect (import), split, ingest, version, clean, validate, label."""

from __future__ import annotations

import functools
import hashlib
import re
import shutil
from collections import Counter, defaultdict
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from runtime.datasets import alike_text, relabel_hint, similar_labels
from runtime.domain.entities import CleanedEntry, Item, QuarantineEntry, SourceRecord
from runtime.domain.errors import ConfigError, DataImportError, NotFoundError, StepFailed
from runtime.domain.steps import ParamSpec, Port, Role, StepSpec
from runtime.labeling import effective_states
from runtime.steps.base import Step, StepContext, StepResult, hash_text
from runtime.steps.sources import SourceBatch, check_kind_options, content_hash, detect_kind, read_source
from runtime.store.store import INGESTED_ITEMS
from runtime.workspace.dataset import (
    INDEX_NAME,
    IndexRow,
    class_counts,
    decode_text,
    json_dumps,
    write_bin_pack,
    write_index,
    write_npy_pack,
)

SOURCE_OPTIONS = ("path", "kind", "class_names", "text_column", "label_column", "media_root", "unlabeled", "delimiter",
                  "encoding")


def normalize_source(entry: Any, where: str) -> dict[str, Any]:
    if isinstance(entry, str):
        return {"path": entry}
    if isinstance(entry, dict) and isinstance(entry.get("path"), str):
        unknown = set(entry) - set(SOURCE_OPTIONS)
        if unknown:
            raise DataImportError(f"{where}: unknown source option {sorted(unknown)[0]!r} "
                                  f"(known: {', '.join(SOURCE_OPTIONS)})")
        return dict(entry)
    raise DataImportError(f"{where}: a source is a path or a mapping with 'path', got {entry!r}")


def check_relabel(relabel: Any) -> dict[str, str]:  # noqa: ANN401
    """data.import's relabel as {label: label}; raises ConfigError naming the entry that cannot be one."""
    if not relabel:
        return {}
    if not isinstance(relabel, dict):
        raise ConfigError(f"data.import.relabel: a mapping of label to label ({{Sport: sport}}), got {relabel!r}")
    out = {}
    for k, v in relabel.items():
        if not isinstance(v, str | int) or isinstance(v, bool) or not str(v).strip() or not str(k).strip():
            raise ConfigError(f"data.import.relabel: {k!r}: {v!r} is no label (a name, as the sources spell it)")
        if str(k) == str(v):
            raise ConfigError(f"data.import.relabel: {k!r} is relabeled as itself")
        out[str(k)] = str(v)
    chained = [v for v in out.values() if v in out]
    if chained:
        first = next(k for k, v in out.items() if v == chained[0])
        if out[chained[0]] == first:
            raise ConfigError(f"data.import.relabel: {first!r} and {chained[0]!r} are relabeled as each other: keep the "
                              "entry for the spelling that goes")
        raise ConfigError(f"data.import.relabel: {chained[0]!r} is both a new name ({first!r} -> {chained[0]!r}) and "
                          f"relabeled ({chained[0]!r} -> {out[chained[0]]!r}): relabel {first!r} as "
                          f"{out[chained[0]]!r} at once")
    return out


def apply_relabel(batch: Any, relabel: dict[str, str]) -> Counter:  # noqa: ANN401
    """A source's labels (an item's label and its annotators') as relabel names them: {old label: how many}."""
    n: Counter = Counter()
    for it in batch.items:
        if it.label in relabel:
            n[it.label] += 1
            it.label = relabel[it.label]
        if it.labels:
            n.update(lab for lab, _, _ in it.labels if lab in relabel)
            it.labels = [(relabel.get(lab, lab), who, source) for lab, who, source in it.labels]
    return n


def relabel_of(cfg: Any) -> dict[str, str]:  # noqa: ANN401
    """data.import's relabel in a pipeline configuration ({} where there is none)."""
    return check_relabel(cfg.params("data.import").get("relabel")) if "data.import" in cfg.steps else {}


def _relabel(ctx: StepContext) -> dict[str, str]:
    return relabel_of(ctx.config)  # the run's, --set included


def _relabel_fp(ctx: StepContext) -> str:
    relabel = _relabel(ctx)
    return f":{hash_text(json_dumps(relabel))[:12]}" if relabel else ""


def _label_states(ctx: StepContext) -> dict[str, Any]:
    """Every item's effective label, as data.import's relabel names it. Labels given in the studio are read through
    it too: one given in a merged spelling (the labeling panel offered both while the sources had both) split the
    merged class again."""
    from dataclasses import replace

    states = effective_states(ctx.store, ctx.params.get("use_model_labels", False))
    relabel = _relabel(ctx)
    if relabel:
        for item, st in states.items():
            if st.label in relabel:
                states[item] = replace(st, label=relabel[st.label])
    return states


def file_hashes(ws: Any) -> Path:  # noqa: ANN401 - a Workspace
    """Where the sources' files' hashes are kept by size, mtime, inode and ctime (content_hash): in .cdl/, not backed up."""
    return ws.root / ".cdl" / "file-hashes.db"


def _options_hash(src: dict[str, Any]) -> str:
    return hashlib.sha256(json_dumps(src).encode()).hexdigest()[:12]


def _require_dataset(ctx: StepContext) -> None:
    if not ctx.workspace.has_dataset():
        raise StepFailed(ctx.step, "no dataset yet: run data.import, data.split and data.ingest first")


def _require_version(ctx: StepContext) -> str:
    version = ctx.workspace.current_version()
    if version is None:
        raise StepFailed(ctx.step, "no dataset version yet: run data.version first")
    return version


# -- data.import --------------------------------------------------------------------------------------------


class ImportStep(Step):
    spec = StepSpec(
        id="data.import",
        title="Collect",
        pipeline="data",
        role=Role.DATA_ENGINEER,
        outputs=(Port("items", "items"),),
        params=(
            ParamSpec("sources", "list", [], "paths (or mappings with path and options) of the data sources"),
            ParamSpec("relabel", "dict", None, "label -> label, over every source's labels: one class spelt two ways "
                      "becomes one ({Sport: sport}); data.validate names labels that look alike"),
        ),
        description="Reads every configured source (zip or folder of class folders, idx, CSV, Label Studio "
        "JSON) into the item table; each item gets its content sha256 as id.",
    )

    def check_params(self, params: dict[str, Any]) -> None:
        """Each source's shape, and its options against its kind (an option of another kind did nothing): before
        a run starts anything, in the Parameters dialog and the doctor. The kind is detected only for a source with
        options and an absolute path that exists here; the import itself checks the others."""
        for i, entry in enumerate(params.get("sources") or []):
            src = normalize_source(entry, f"data.import.sources[{i}]")
            if not any(v not in (None, False, "") for k, v in src.items() if k not in ("path", "kind")):
                continue
            path = Path(src["path"]).expanduser()
            kind = src.get("kind")
            if not kind:
                if not path.is_absolute() or not path.exists():
                    continue
                try:
                    kind = detect_kind(path)
                except DataImportError:
                    continue  # the import names what is wrong with the file
            check_kind_options(path, kind, src)

        check_relabel(params.get("relabel"))

    def _sources(self, ctx: StepContext) -> list[tuple[dict[str, Any], Path]]:
        out = []
        for i, entry in enumerate(ctx.params["sources"]):
            src = normalize_source(entry, f"cdl.yaml: steps.data.import.params.sources[{i}]")
            path = Path(src["path"]).expanduser()
            if not path.is_absolute():
                path = ctx.workspace.root / path
            out.append((src, path))
        return out

    reads = "source files"

    def fingerprint(self, ctx: StepContext) -> str:
        known = {s.name: s for s in ctx.store.sources()}
        parts = []
        for src, path in self._sources(ctx):
            if path.exists():  # a cancel stops the hashing of a new folder's files (its first full read)
                h = content_hash(path, file_hashes(ctx.workspace), progress=lambda _f, _m: ctx.check_cancelled())
            else:  # not reachable here (a CI machine, a drive not mounted): as it was when it was imported
                prev = known.get(src["path"])
                h = prev.content_hash.split(":")[0] if prev is not None and prev.content_hash else "missing"
            parts.append((json_dumps(src), h))
        relabel = ctx.params.get("relabel")
        return hash_text([*parts, json_dumps(relabel)] if relabel else parts)

    def run(self, ctx: StepContext) -> StepResult:
        sources = self._sources(ctx)
        known = {s.name: s for s in ctx.store.sources()}
        # none configured and none imported: nothing to do; the last one taken out (`cdl data remove`) goes on to
        # remove its items (it failed here, so that the only source, imported by mistake, could not be removed)
        if not sources and not any(s.kind != "proposal" for s in known.values()):
            raise StepFailed(ctx.step, "no sources configured: add one with `cdl data import SOURCE`")
        wanted = {src["path"] for src, _ in sources}
        prefixes: dict[str, str] = {}
        for src, path in sources:
            prev = prefixes.setdefault(path.name, src["path"])
            if prev != src["path"]:
                raise StepFailed(ctx.step, f"two sources are named {path.name!r} ({prev} and {src['path']}); "
                                 "rename one of them")
        missing = [src["path"] for src, path in sources if not path.exists()]
        if missing and not ctx.store.versions() and (ctx.workspace.root / "data" / "dataset.dvc").exists():
            raise StepFailed(ctx.step, f"{missing[0]}: does not exist. This looks like a fresh clone of the workspace: "
                             "its registry (.cdl/, which git does not carry) is empty, so the data pipeline would run "
                             "again from its sources, and the labels people gave live in the registry. Restore a "
                             "`cdl backup` of the workspace and `cdl data pull` (README: CI on a fresh clone), or "
                             "make the source reachable here")
        report = []
        relabel = check_relabel(ctx.params.get("relabel"))
        matched: Counter = Counter()
        for n, (src, path) in enumerate(sources):
            ctx.progress(n / len(sources), f"reading {path.name}")
            if path.exists():  # checked before "unchanged": an option recorded with the source is checked too
                check_kind_options(path, src.get("kind") or detect_kind(path), src)
            # relabel is part of what a source's items were imported with: a change reads every source again
            options = _options_hash({**src, "relabel": relabel} if relabel else src)

            def share(fraction: float, message: str, n: int = n, start: float = 0.0, part: float = 0.1) -> None:
                """This source's share of the bar: checking its files a tenth of it, reading them eight tenths, writing
                its items the last tenth."""
                ctx.progress((n + start + part * fraction) / len(sources), message)

            digest = (f"{content_hash(path, file_hashes(ctx.workspace), progress=share)}:{options}" if path.exists()
                      else None)
            prev = known.get(src["path"])
            if digest is None and prev is not None:  # its items were imported: they stay, and the log says why
                report.append({"source": src["path"], "status": "unreachable", "items": prev.items})
                ctx.log(f"{src['path']}: not reachable here; the {prev.items} items imported from it stay")
                continue
            if prev is not None and digest == prev.content_hash:
                report.append({"source": src["path"], "status": "unchanged", "items": prev.items})
                ctx.log(f"{path.name}: unchanged ({prev.items} items)")
                continue
            # how far, and the cancel's checkpoint, as its files are read (a folder of 100 000 photos sat at
            # "reading photos" with no way to stop it)
            batch = read_source(path, src.get("kind"), src, ctx.config.labeling,
                                progress=functools.partial(share, start=0.1, part=0.8))
            if relabel:
                matched.update(apply_relabel(batch, relabel))
            task = ctx.config.task
            if batch.items and batch.item_kind != task:  # the models of this workspace could not read them
                kind = "images" if task == "image" else "text"
                raise StepFailed(ctx.step, f"{src['path']}: holds {batch.item_kind} items ({batch.kind}), but this "
                                 f"workspace is for {kind} (cdl.yaml: task: {task}); nothing was imported. Make a "
                                 f"{batch.item_kind} workspace: `cdl init PATH --template "
                                 f"{batch.item_kind}-classification`")
            # sources no longer configured whose items have this one's uids (the file moved, or another of its
            # name took its place): replaced in the same transaction, not left to collide with it
            replaces = [name for name in set(known) - wanted
                        if known[name].kind != "proposal" and Path(name).name == path.name]
            # the registry's transaction and the packs: a few seconds for 70 000 items, said as it starts
            ctx.progress((n + 0.9) / len(sources), f"writing {len(batch.items)} items of {path.name}")
            n_items = self._write(ctx, src, batch, digest or "", replaces)
            for name in replaces:
                moved = prev is None and known[name].content_hash.split(":")[0] == (digest or "").split(":")[0]
                report.append({"source": name, "status": "moved" if moved else "replaced", "by": src["path"]})
                ctx.log(f"{name}: {'moved to' if moved else 'replaced by'} {src['path']}"
                        + (" (the same content)" if moved else ""))
                known.pop(name)
            for note in batch.notes:
                ctx.log(f"{path.name}: {note}")
            report.append({"source": src["path"], "kind": batch.kind, "status": "imported", "items": n_items,
                           "notes": batch.notes})
            ctx.log(f"{path.name}: imported {n_items} {batch.item_kind} items ({batch.kind})")
        # said once every source was read with it (a change of relabel reads them all): a source read alone, beside
        # unchanged ones relabeled before, would name every entry it lacks
        if relabel and report and all(r["status"] == "imported" for r in report):
            for old_label, new in relabel.items():
                if matched[old_label]:
                    ctx.log(f"relabel: {matched[old_label]} label(s) {old_label!r} read as {new!r}")
                else:
                    ctx.log(f"relabel: {old_label!r} is no label of the sources read (check the spelling: labels "
                            "differ in case, spaces and punctuation)")
        for name in set(known) - wanted:
            if known[name].kind == "proposal":
                continue  # retrain proposals are sources of their own, not configured in cdl.yaml
            ctx.store.remove_source(name)
            report.append({"source": name, "status": "removed"})
            ctx.log(f"{name}: no longer configured, its items were removed")
        ctx.progress(1.0, "imported")
        n, unique, by_label = ctx.store.item_tally()
        labels = Counter()
        for label, count in by_label.items():
            labels[label or "(unlabeled)"] += count
        return StepResult(
            summary={"sources": report, "items": n, "unique": unique, "classes": dict(sorted(labels.items()))},
            output_fp=ctx.store.items_fingerprint(),
            message=f"{n} items from {len(sources)} source(s)",
        )

    def _write(self, ctx: StepContext, src: dict[str, Any], batch: SourceBatch, digest: str,
               replaces: list[str] = ()) -> int:
        """Packs first (immutable, content-named), then one registry transaction: all or nothing."""
        ws = ctx.workspace
        prefix = Path(src["path"]).name
        items: list[Item] = []
        labels: list[tuple[str, str, str]] = []
        if batch.array is not None:
            pack = write_npy_pack(ws.packs_dir, batch.array)
            flat = batch.array.reshape(len(batch.array), -1)
            ids = [hashlib.sha256(flat[i].tobytes()).hexdigest() for i in range(len(flat))]
            spans = [(i, int(flat.shape[1])) for i in range(len(flat))]
            encoding = "npy"
        else:
            payloads = [it.payload or b"" for it in batch.items]
            pack, spans = write_bin_pack(ws.packs_dir, payloads)
            ids = [hashlib.sha256(p).hexdigest() for p in payloads]
            encoding = "bytes" if batch.item_kind == "text" else "file"
        labeler = f"import:{batch.name}"
        sep = "#" if batch.kind in ("csv", "jsonl", "parquet", "label-studio") else "/"
        for raw, item_id, (offset, length) in zip(batch.items, ids, spans, strict=True):
            items.append(Item(
                uid=f"{prefix}:{raw.key}",
                id=item_id,
                kind=batch.item_kind,
                source=f"{prefix}{sep}{raw.key}",
                source_label=raw.label,
                source_split=raw.split,
                pack=pack,
                offset=offset,
                length=length,
                encoding=encoding,
            ))
            if raw.labels:
                labels.extend((item_id, lab, who, source) for lab, who, source in raw.labels)
            elif raw.label is not None:
                labels.append((item_id, raw.label, labeler))
        uids = Counter(i.uid for i in items)
        dup = [u for u, c in uids.items() if c > 1]
        if dup:
            raise DataImportError(f"{src['path']}: item {dup[0]} appears twice")
        ctx.store.import_source(SourceRecord(src["path"], batch.kind, digest, len(items), None), items, labels,
                                options=src, replaces=replaces)
        return len(items)


# -- data.split ---------------------------------------------------------------------------------------------


def assign_splits(items: list[Item], test_fraction: float, seed: int, stratify: bool = True,
                  use_source_split: bool = True,
                  previous: Mapping[str, str] | None = None) -> tuple[dict[str, str], dict[str, Any]]:
    """Seeded, stratified, duplicate-aware split.

    Items with the same content id form one group and always land on the same side. Within each stratum
    (the source label, or "(unlabeled)"), groups are ordered by sha256(seed, id) and the first ones up to
    test_fraction of the stratum's items go to test.
    `previous` (uid -> side, the split made before with the same parameters) keeps every old item on its side:
    only new groups are placed, in that order, into test until the stratum's share is reached, then into train.
    Without it, items added to a stratum took test places in the order and pushed old test items into train,
    or, where the share grew, old train items into test, on which the champion, trained on them, was then
    compared with its challenger. A new item whose twin is an old one joins its side.
    Items the source already assigns (idx train/t10k files) keep their side when use_source_split is set; a
    group spanning both sides goes to test entirely, so nothing in test was seen in training.
    """
    groups: dict[str, list[Item]] = defaultdict(list)
    for it in items:
        groups[it.id].append(it)
    out: dict[str, str] = {}
    stats = {"groups": len(groups), "duplicate_items": sum(len(g) - 1 for g in groups.values() if len(g) > 1),
             "moved_to_test": 0, "kept": 0, "placed": 0}
    previous = previous or {}

    def kept_side(members: list[Item]) -> str | None:
        sides = {previous[m.uid] for m in members if previous.get(m.uid) in ("train", "test")}
        return ("test" if "test" in sides else "train") if sides else None

    free: dict[str, list[str]] = defaultdict(list)
    for gid, members in groups.items():
        fixed = {m.source_split for m in members if m.source_split} if use_source_split else set()
        if fixed:
            side = "test" if "test" in fixed else "train"
            if len(fixed) > 1:
                stats["moved_to_test"] += sum(1 for m in members if m.source_split != "test")
            for m in members:
                out[m.uid] = side
            continue
        labels = sorted({m.source_label or "(unlabeled)" for m in members})
        stratum = labels[0] if stratify else "*"
        free[stratum].append(gid)
    for _stratum, gids in sorted(free.items()):
        gids.sort(key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
        total = sum(len(groups[g]) for g in gids)
        target = round(total * test_fraction)
        kept = {g: side for g in gids if (side := kept_side(groups[g]))}
        taken = sum(len(groups[g]) for g, side in kept.items() if side == "test")
        for g in gids:
            if g in kept:
                side = kept[g]
                stats["kept"] += len(groups[g])
            else:
                side = "test" if taken < target and taken + len(groups[g]) / 2 <= target else "train"
                if side == "test":
                    taken += len(groups[g])
                stats["placed"] += len(groups[g])
            for m in groups[g]:
                out[m.uid] = side
    if test_fraction > 0 and "test" not in out.values():
        _take_a_test_share(groups, free, test_fraction, seed, out, stats)
    return out, stats


def _take_a_test_share(groups: dict[str, list[Item]], free: dict[str, list[str]], test_fraction: float, seed: int,
                       out: dict[str, str], stats: dict[str, Any]) -> None:
    """Every class too small for a share of its own (7 items of 4 classes at 0.2 round to none each): the test
    split was empty and model.evaluate failed after training. Take the overall share, round(n * test_fraction)
    and at least one item, one group a class in turn, never a class's last group."""
    strata = {k: list(v) for k, v in sorted(free.items()) if k != "(unlabeled)" and len(v) > 1}
    n = sum(len(groups[g]) for gids in strata.values() for g in gids)
    target, taken = max(1, round(n * test_fraction)), 0
    for gids in strata.values():
        gids.sort(key=lambda g: hashlib.sha256(f"{seed}:{g}".encode()).hexdigest())
    while taken < target and any(len(gids) > 1 for gids in strata.values()):
        for gids in strata.values():
            if taken < target and len(gids) > 1:
                for m in groups[gids.pop(0)]:
                    out[m.uid] = "test"
                    taken += 1
    stats["test_taken_across_classes"] = taken


def _small_note(stats: dict[str, Any], test_fraction: float) -> str:
    if stats.get("test_taken_across_classes"):
        return (f"; every class is too small for a {test_fraction:g} share of its own, so "
                f"{stats['test_taken_across_classes']} item(s) were held out across classes")
    return ""


SPLIT_PARAMS = ("test_fraction", "seed", "stratify", "use_source_split")
# data.import is up to date with no source (the last one removed): "run data.import first" sent the user round
NO_ITEMS = "no items: the workspace has no source; `cdl data import SOURCE` (the data panel's Import) adds one"


def _previous_split(ctx: StepContext, items: list[Item]) -> tuple[dict[str, str], str]:
    """The sides the last split gave, where it ran with these parameters (uid -> side), and otherwise what
    changed, which makes a new split ("seed 42 → 7")."""
    last = ctx.store.last_done_runs().get(ctx.step)
    old = {i.uid: i.split for i in items if i.split}
    if last is None or not old:
        return {}, ""
    before = last.params if last.params is not None else ctx.params  # None: recorded before schema 0007
    changed = [f"{k} {before.get(k)} → {ctx.params[k]}" for k in SPLIT_PARAMS if before.get(k) != ctx.params[k]]
    return ({}, "; ".join(changed)) if changed else (old, "")


class SplitStep(Step):
    spec = StepSpec(
        id="data.split",
        title="Split",
        pipeline="data",
        role=Role.DATA_ENGINEER,
        inputs=(Port("items", "items"),),
        outputs=(Port("split", "split"),),
        params=(
            ParamSpec("test_fraction", "float", 0.2, "share of items held out for the test gate", minimum=0.0,
                      maximum=0.9),
            ParamSpec("seed", "int", 42, "random seed: the same seed gives the same split"),
            ParamSpec("stratify", "bool", True, "keep class proportions on both sides"),
            ParamSpec("use_source_split", "bool", True, "keep a split the source defines (idx train/t10k)"),
        ),
        description="Seeded, stratified train/test split; exact duplicates never end up on both sides.",
    )

    reads = "items"

    def fingerprint(self, ctx: StepContext) -> str:
        return ctx.store.items_fingerprint()  # retrain proposals add items without an import

    def unmet(self, ws: Any) -> str:  # noqa: ANN401
        # a source removed and imported again: the same items, so the same fingerprint, but without their split,
        # and data.ingest failed with "some items have no split" while data.split stayed up to date
        n = ws.store.unsplit_count()
        return f"{n} item(s) have no split (imported again since it ran)" if n else ""

    def run(self, ctx: StepContext) -> StepResult:
        items = ctx.store.items()
        if not items:
            raise StepFailed(ctx.step, NO_ITEMS)
        p = ctx.params
        previous, afresh = _previous_split(ctx, items)
        splits, stats = assign_splits(items, p["test_fraction"], p["seed"], p["stratify"], p["use_source_split"],
                                      previous)
        if "train" not in splits.values() and p["use_source_split"] and any(i.source_split for i in items):
            # a test set alone (`cdl data export --split test` imported again, idx t10k files): "train 0" passed
            # with a tick, and model.preprocess failed later with "v1 has no labeled training items"
            sources = sorted({re.split(r"[/#]", i.source, maxsplit=1)[0] for i in items if i.source_split == "test"})
            raise StepFailed(ctx.step, f"every item is in the test split, as its source says ({', '.join(sources[:3])}"
                             f"{', …' if len(sources) > 3 else ''}: a test/ folder, idx t10k files, a split column), so "
                             "nothing is left to train on: import the training items too, or split these here by "
                             "test_fraction (`cdl run --set data.split.use_source_split=false --save`)")
        ctx.progress(0.5, "assigning")
        ctx.store.set_splits(splits)
        counts = Counter(splits.values())
        per: dict[str, Counter[str]] = defaultdict(Counter)
        for it in items:
            per[splits[it.uid]][it.source_label or "(unlabeled)"] += 1
        fp = hashlib.sha256("".join(f"{u}={s}\n" for u, s in sorted(splits.items())).encode()).hexdigest()
        return StepResult(
            summary={"splits": dict(sorted(counts.items())), "per_class": {k: dict(sorted(v.items())) for k, v in per.items()},
                     **stats},
            output_fp=fp,
            message=f"train {counts.get('train', 0)}, test {counts.get('test', 0)}"
            # "0 duplicates kept with their twins" on every dataset without any
            + (f"; {stats['duplicate_items']} duplicates kept with their twins" if stats["duplicate_items"] else "")
            + _small_note(stats, p["test_fraction"])
            + (f"; {stats['placed']} new item(s) placed, the other {stats['kept']} kept their side"
               if stats["kept"] and stats["placed"] else "")
            + (f"; split afresh: {afresh}" if afresh else ""),
        )


# -- data.ingest --------------------------------------------------------------------------------------------


class IngestStep(Step):
    spec = StepSpec(
        id="data.ingest",
        title="Ingest",
        pipeline="data",
        role=Role.DATA_ENGINEER,
        inputs=(Port("items", "items"), Port("split", "split")),
        outputs=(Port("dataset", "dataset"),),
        params=(ParamSpec("use_model_labels", "bool", False, "count model predictions as labels"),),
        description="Lays the items, their split and their current labels out under data/dataset "
        "(index + packs), ready for DVC.",
    )

    reads = "labels"

    def fingerprint(self, ctx: StepContext) -> str:
        return ctx.store.labels_revision() + _relabel_fp(ctx)

    def unmet(self, ws: Any) -> str:  # noqa: ANN401
        # a workspace restored from a backup without data: everything stayed up to date with nothing in data/
        # (the registry keeps the items and labels, which this lays out again)
        return "" if ws.has_dataset() else "data/dataset is missing: it is laid out again from the registry's items"

    def run(self, ctx: StepContext) -> StepResult:
        ws = ctx.workspace
        token = ctx.store.items_token()  # before the items: an import between the two leaves a token that is older
        items = ctx.store.items()
        if not items:
            raise StepFailed(ctx.step, NO_ITEMS)
        if any(i.split is None for i in items):
            raise StepFailed(ctx.step, "some items have no split: run data.split first")
        states = _label_states(ctx)
        dest = ws.dataset_dir / "packs"
        dest.mkdir(parents=True, exist_ok=True)
        packs = sorted({i.pack for i in items})
        for n, pack in enumerate(packs):
            ctx.progress(0.8 * n / len(packs), f"copying {pack[:12]}")
            target = dest / pack
            if not target.exists():
                src = ws.packs_dir / pack
                if not src.exists():
                    raise StepFailed(ctx.step, f"pack {src} is missing; re-import the data")
                tmp = target.with_name(f".tmp-{pack}")
                shutil.copyfile(src, tmp)
                tmp.replace(target)
        rows = []
        for it in items:
            st = states.get(it.id)
            rows.append(IndexRow(
                uid=it.uid, id=it.id, kind=it.kind, source=it.source,
                label=st.label if st else None, conflict=bool(st and st.conflict), split=it.split,
                pack=it.pack, offset=it.offset, length=it.length, encoding=it.encoding,
            ))
        write_index(ws.dataset_dir / INDEX_NAME, rows)
        st = (ws.dataset_dir / INDEX_NAME).stat()
        fp = hashlib.sha256((ws.dataset_dir / INDEX_NAME).read_bytes()).hexdigest()
        # the index's stamp, and its hash for where the stamp changes with the same bytes (the workspace copied,
        # restored, cloned: a new inode)
        ctx.store.set_state(INGESTED_ITEMS, {"token": token, "index": [st.st_ino, st.st_mtime_ns, st.st_size],
                                             "sha256": fp})
        for p in dest.iterdir():
            if p.name not in packs:
                p.unlink()
        classes, splits, _ = class_counts(rows)
        labeled = sum(1 for r in rows if r.label is not None)
        conflicts = sum(1 for r in rows if r.conflict)
        return StepResult(
            summary={"items": len(rows), "labeled": labeled, "conflicts": conflicts,
                     "unlabeled": len(rows) - labeled - conflicts, "classes": classes, "splits": splits,
                     "packs": len(packs)},
            output_fp=fp,
            message=f"{len(rows)} items in data/dataset ({labeled} labeled)",
        )


# -- data.version -------------------------------------------------------------------------------------------


class VersionStep(Step):
    spec = StepSpec(
        id="data.version",
        title="Version",
        pipeline="data",
        role=Role.DATA_ENGINEER,
        inputs=(Port("dataset", "dataset"),),
        outputs=(Port("version", "dataset_version"),),
        params=(ParamSpec("message", "str", "", "a note for the git commit"),),
        description="Tracks data/dataset with DVC, commits the .dvc file to git and records the version; "
        "unchanged data makes no new version.",
    )

    def unmet(self, ws: Any) -> str:  # noqa: ANN401
        # DVC's cache lost the checked-out version (a backup without data, restored where no DVC remote has it):
        # adding data/dataset again puts it back, as the same version where nothing changed
        version = ws.current_version()
        try:
            v = ws.store.version(version) if version else None
        except NotFoundError:  # the state names a version the registry lacks: nothing to check here
            v = None
        if v is not None and v.dvc_hash and ws.dvc.missing(v.dvc_hash):
            return f"DVC's cache lacks {version}'s files: data/dataset goes into it again"
        return ""

    def run(self, ctx: StepContext) -> StepResult:
        ws = ctx.workspace
        _require_dataset(ctx)
        ctx.progress(0.1, "dvc add data/dataset")
        md5, dvc_text = ws.dvc.add("data/dataset")
        existing = ctx.store.version_by_hash(md5)
        if existing is not None:
            ctx.store.set_state("dataset_version", existing.id)
            ctx.log(f"unchanged: data/dataset is {existing.id} ({md5})")
            return StepResult(
                summary={"version": existing.id, "new": False, "dvc_hash": md5, "items": existing.items},
                output_fp=md5,
                message=f"unchanged ({existing.id})",
            )
        rows = ws.dataset().rows
        classes, splits, per = class_counts(rows)
        ctx.progress(0.6, "git commit")
        n_next = len(ctx.store.versions()) + 1
        msg = f"data: version v{n_next} ({len(rows)} items)"
        if ctx.params["message"]:
            msg += f"\n\n{ctx.params['message']}"
        paths = ["data/dataset.dvc"] + (["data/.gitignore"] if (ws.root / "data/.gitignore").exists() else [])
        commit = ws.git.commit(msg, *paths) or ws.git.head()
        version = ctx.store.add_version(md5, commit, len(rows), classes, splits, per, dvc_text)
        ctx.store.set_state("dataset_version", version.id)
        ctx.log(f"new dataset version {version.id}: {len(rows)} items, DVC {md5}, git {str(commit)[:10]}")
        return StepResult(
            summary={"version": version.id, "new": True, "dvc_hash": md5, "git_commit": commit,
                     "items": len(rows), "classes": classes, "splits": splits},
            output_fp=md5,
            message=f"new version {version.id}",
        )


# -- data.clean ---------------------------------------------------------------------------------------------


class CleanStep(Step):
    spec = StepSpec(
        id="data.clean",
        title="Clean",
        pipeline="data",
        role=Role.DATA_ENGINEER,
        inputs=(Port("version", "dataset_version"),),
        outputs=(Port("cleaned", "cleaning_report"),),
        params=(
            ParamSpec("decode_errors", "str", "replace", "text that is not UTF-8: replace, ignore, or "
                      "strict (leave it to validation, which quarantines it)", choices=("replace", "ignore", "strict")),
        ),
        description="Repairs what can be repaired (text decoding with replacement, line endings) and records "
        "every repair per item.",
    )

    def run(self, ctx: StepContext) -> StepResult:
        version = _require_version(ctx)
        _require_dataset(ctx)
        view = ctx.workspace.dataset()
        entries: list[CleanedEntry] = []
        text_rows = [r for r in view.rows if r.kind == "text"]
        errors = ctx.params["decode_errors"]
        for n, row in enumerate(text_rows):
            if n % 500 == 0:
                ctx.progress(n / max(1, len(text_rows)), "decoding text")
            try:
                _, actions = decode_text(view.read_bytes(row), errors)
            except ValueError:
                continue  # strict: validation quarantines it
            for a in actions:
                entries.append(CleanedEntry(version, row.uid, row.id, row.source, a))
        ctx.store.replace_cleaned(version, entries)
        for e in entries[:20]:
            ctx.log(f"cleaned {e.source}: {e.action}")
        fp = hash_text(version, errors, [(e.item, e.action) for e in entries])
        return StepResult(
            summary={"version": version, "checked": len(text_rows), "cleaned": len(entries),
                     "items": sorted({e.source for e in entries})[:50]},
            output_fp=fp,
            message=f"{len(entries)} repair(s) recorded",
        )


# -- data.validate ------------------------------------------------------------------------------------------


IMAGE_MODES = ("L", "RGB", "RGBA")  # what _image_mode names (and data.validate.image_mode may ask for)


def _image_mode(arr: np.ndarray) -> str:
    if arr.ndim == 2:
        return "L"
    return {1: "L", 3: "RGB", 4: "RGBA"}.get(arr.shape[-1], f"{arr.shape[-1]}-channel")


class ValidateStep(Step):
    spec = StepSpec(
        id="data.validate",
        title="Validate",
        pipeline="data",
        role=Role.DATA_ENGINEER,
        inputs=(Port("cleaned", "cleaning_report"),),
        outputs=(Port("validated", "validation_report"),),
        params=(
            ParamSpec("min_length", "int", 20, "text: minimum characters after cleaning", minimum=0),
            ParamSpec("max_length", "int", None, "text: maximum characters (empty: no limit)", nullable=True),
            ParamSpec("allowed_extensions", "list", [".txt"], "text files: allowed file extensions"),
            ParamSpec("decode_errors", "str", "replace", "must match data.clean: strict quarantines "
                      "text that is not UTF-8", choices=("replace", "ignore", "strict")),
            ParamSpec("image_shape", "list", None, "images: expected [height, width] (empty: any)", nullable=True),
            ParamSpec("image_mode", "str", None, "images: expected mode, L or RGB (empty: any)", nullable=True),
            ParamSpec("allowed_labels", "list", None, "labels must be one of these (empty: any)", nullable=True),
            ParamSpec("label_conflicts", "bool", True, "quarantine items whose labels disagree"),
        ),
        description="Checks every item against the rules in cdl.yaml; items that fail go to the quarantine "
        "with the rule and the reason. Nothing is dropped silently.",
    )

    def check_params(self, params: dict[str, Any]) -> None:
        """Rules that would quarantine every item, or fail on the first image, for a reason in the rule itself."""
        shape = params.get("image_shape")
        if shape and (len(shape) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape)):
            raise ConfigError(f"data.validate.image_shape: expected [height, width], two whole numbers of at least 1 "
                              f"(empty: any), got {shape!r}")
        mode = params.get("image_mode")
        if mode and mode not in IMAGE_MODES:
            close = [m for m in IMAGE_MODES if m.lower() == str(mode).lower()]
            raise ConfigError(f"data.validate.image_mode: {mode!r} is not an image mode"
                              + (f" (did you mean {close[0]!r}?)" if close else "")
                              + f"; expected {', '.join(IMAGE_MODES)} (empty: any)")
        low, high = params.get("min_length"), params.get("max_length")
        if high is not None and low is not None and high < low:
            raise ConfigError(f"data.validate.max_length: {high} is below min_length {low}: every text would be "
                              "quarantined")
        for i, label in enumerate(params.get("allowed_labels") or []):
            if not isinstance(label, str) or not label.strip():
                raise ConfigError(f"data.validate.allowed_labels[{i}]: expected a class name, got {label!r}")

    def run(self, ctx: StepContext) -> StepResult:
        version = _require_version(ctx)
        _require_dataset(ctx)
        view = ctx.workspace.dataset()
        p = ctx.params
        if p["allowed_labels"]:  # a rule naming no item's label is likely a typo ("Sport"): it quarantines a class
            present = {r.label for r in view.rows if r.label is not None}
            unused = [x for x in p["allowed_labels"] if x not in present]
            if unused and present:
                ctx.log(f"allowed_labels: {', '.join(map(repr, unused))} matches no item's label (labels here: "
                        f"{', '.join(sorted(present))}): check the spelling; items with a label not in "
                        "allowed_labels are quarantined")
        similar = similar_labels(view.rows)
        for group in similar:
            ctx.log(f"labels {alike_text(group)} differ only in case, "
                    f"spaces or punctuation: one class split in two? (data.import's relabel makes them one: "
                    f"{relabel_hint([group])}; or list the right one in data.validate.allowed_labels to quarantine "
                    "the other)")
        allowed_ext = {e.lower() if e.startswith(".") else f".{e.lower()}" for e in p["allowed_extensions"] or []}
        out: list[QuarantineEntry] = []

        def bad(row: IndexRow, rule: str, reason: str) -> None:
            out.append(QuarantineEntry(version, row.uid, row.id, row.source, rule, reason))

        states = functools.cache(lambda: _label_states(ctx))  # read once, where an item is in conflict

        def states_of(row: IndexRow) -> tuple[str, ...]:  # the labels that disagree
            st = states().get(row.id)
            return st.candidates if st is not None and st.candidates else ("labels given since",)

        rows = view.rows
        npy_checked: dict[str, tuple[tuple[int, ...], str]] = {}
        for n, row in enumerate(rows):
            if n % 1000 == 0:
                ctx.progress(n / max(1, len(rows)), "checking")
            if p["allowed_labels"] and row.label is not None and row.label not in p["allowed_labels"]:
                bad(row, "allowed_labels", f"label {row.label!r} is not one of {', '.join(p['allowed_labels'])}")
            if p["label_conflicts"] and row.conflict:
                bad(row, "label_conflicts", f"its labels disagree ({' and '.join(states_of(row))}); resolve the "
                    "conflict in the labeling queue (`cdl labels next --filter conflicts`)")
            if row.kind == "text":
                key = row.uid.split(":", 1)[-1]
                ext = PurePosixPath(key).suffix.lower() if "#" not in key and "/" in key else None
                if allowed_ext and ext is not None and ext not in allowed_ext:
                    bad(row, "allowed_extensions", f"extension {ext or '(none)'} is not one of {', '.join(sorted(allowed_ext))}")
                    continue
                try:
                    text, _ = decode_text(view.read_bytes(row), p["decode_errors"])
                except ValueError as exc:
                    bad(row, "decode_errors", str(exc))
                    continue
                length = len(text.strip())
                if length < p["min_length"]:
                    bad(row, "min_length", f"{length} characters, the minimum is {p['min_length']}")
                elif p["max_length"] is not None and length > p["max_length"]:
                    bad(row, "max_length", f"{length} characters, the maximum is {p['max_length']}")
                continue
            # images
            if row.encoding == "npy":
                if row.pack not in npy_checked:
                    arr = view.read_image(row)
                    npy_checked[row.pack] = (tuple(arr.shape[:2]), _image_mode(arr))
                shape, mode = npy_checked[row.pack]
            else:
                try:
                    arr = view.read_image(row)
                except Exception as exc:  # Pillow raises many types for broken files
                    from edge_agent.proto.images import unreadable_why

                    bad(row, "decodable", f"cannot be decoded as an image: {unreadable_why(exc)}")
                    continue
                shape, mode = tuple(arr.shape[:2]), _image_mode(arr)
            if p["image_shape"] and list(shape) != list(p["image_shape"]):
                bad(row, "image_shape", f"shape {shape[0]}x{shape[1]}, expected {p['image_shape'][0]}x{p['image_shape'][1]}")
            elif p["image_mode"] and mode != p["image_mode"]:
                bad(row, "image_mode", f"mode {mode}, expected {p['image_mode']}")
        ctx.store.replace_quarantine(version, out)
        by_rule = Counter(q.rule for q in out)
        for q in out[:20]:
            ctx.log(f"quarantined {q.source}: {q.rule}: {q.reason}")
        fp = hash_text(version, json_dumps(p), [(q.item, q.rule) for q in out])
        split = "; labels that look alike: " + ", ".join(" and ".join(map(repr, g)) for g in similar) if similar else ""
        return StepResult(
            summary={"version": version, "checked": len(rows), "quarantined": len(out), "valid": len(rows) - len({q.item for q in out}),
                     "by_rule": dict(sorted(by_rule.items())), "similar_labels": similar},
            output_fp=fp,
            message=f"{len(out)} item(s) quarantined of {len(rows)}{split}",
        )



# -- data.label ---------------------------------------------------------------------------------------------


class LabelStep(Step):
    spec = StepSpec(
        id="data.label",
        title="Label",
        pipeline="data",
        role=Role.LABELER,
        inputs=(Port("validated", "validation_report"),),
        outputs=(Port("labels", "labels"),),
        params=(ParamSpec("use_model_labels", "bool", False, "count model predictions as labels"),),
        description="Labels per item (import, manual, model), conflicts and the labeling queue; labels made "
        "since the version was taken are reported, and go into the next version.",
    )

    reads = "labels"

    def fingerprint(self, ctx: StepContext) -> str:
        return ctx.store.labels_revision() + _relabel_fp(ctx)

    def run(self, ctx: StepContext) -> StepResult:
        version = _require_version(ctx)
        _require_dataset(ctx)
        view = ctx.workspace.dataset()
        states = _label_states(ctx)
        from runtime.labeling import quarantined_apart

        # quarantined for a conflict alone: still to decide in the labeling queue, and counted (it said "0
        # conflicts" while data.validate said to resolve them there); the output's fingerprint leaves them out
        left_out, in_conflict = quarantined_apart(ctx.store, version)
        counted = [r for r in view.rows if r.uid not in left_out]
        rows = [r for r in counted if r.uid not in in_conflict]
        by_class: Counter[str] = Counter()
        by_source: Counter[str] = Counter()
        unlabeled = conflicts = changed = 0
        for r in counted:
            st = states.get(r.id)
            if st is None or (st.label is None and not st.conflict):
                unlabeled += 1
            elif st.conflict:
                conflicts += 1
            else:
                by_class[st.label] += 1
                by_source[st.source or "?"] += 1
            if (st.label if st else None) != r.label:
                changed += 1
        if changed:
            ctx.log(f"{changed} item(s) have labels newer than {version}: run data.ingest and data.version "
                    "to put them into a new version")
        fp = hash_text(version, sorted((r.id, states[r.id].label if r.id in states else None) for r in rows))
        return StepResult(
            summary={"version": version, "items": len(counted), "labeled": sum(by_class.values()),
                     "unlabeled": unlabeled, "conflicts": conflicts, "classes": dict(sorted(by_class.items())),
                     "by_source": dict(sorted(by_source.items())), "changed_since_version": changed},
            output_fp=fp,
            message=f"{sum(by_class.values())} labeled, {unlabeled} unlabeled, {conflicts} conflicts"
            + (" (`cdl labels next --filter conflicts`, or the labeling panel's conflicts filter, decides them)"
               if conflicts else ""),
        )


STEPS = [ImportStep, SplitStep, IngestStep, VersionStep, CleanStep, ValidateStep, LabelStep]


def source_kind(path: Path) -> str:
    return detect_kind(path)
