"""Dataset versions as users see them: list, report, diff, checkout, and their backup on a DVC remote."""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from runtime.domain.errors import NotFoundError, WorkspaceError
from runtime.workspace.dataset import INDEX_NAME, UNLABELED, DatasetView, IndexRow, PackReader, read_index
from runtime.workspace.workspace import DATASET_DIR, Workspace

# What brings a dataset version's data back where no DVC remote has it and DVC's cache lost it (a backup without
# data of a workspace without a remote): the registry keeps every item's content (.cdl/packs) and label
REBUILD = "`cdl run --until data.version` lays the registry's items and labels out again as a dataset version"


def versions_json(ws: Workspace) -> dict[str, Any]:
    """Every version; `on_remote`: whether the default DVC remote holds its data (None without a remote)."""
    url = next(iter(ws.dvc.remotes().values()), None)
    lacking = set(not_on_remote(ws, url)) if url else set()
    out = []
    for v in ws.store.versions():
        out.append({
            "id": v.id,
            "items": v.items,
            "classes": v.classes,
            "splits": v.splits,
            "split_classes": v.split_classes,
            "dvc_hash": v.dvc_hash,
            "git_commit": v.git_commit,
            "created": v.created.isoformat(),
            "checked_out": v.id == ws.current_version(),
            "on_remote": None if url is None else v.id not in lacking,
        })
    return {"versions": out, "remote": url}


def report_json(ws: Workspace, version: str | None = None, checked_out: DatasetView | None = None) -> dict[str, Any]:
    """checked_out: the checked-out dataset (data/dataset) where the caller has read it already, used where
    `version` is the checked-out one: the data panel read Fashion-MNIST's 70 000-row index twice, 0.65 s each."""
    current = ws.current_version()
    version = version or current
    if version is None:
        return {"version": None, "similar_labels": [], "quarantined": [], "cleaned": [], "checked": {}}
    ws.store.version(version)  # raises if unknown
    view = checked_out if checked_out is not None and version == current else version_view(ws, version)
    return {
        "version": version,
        "similar_labels": similar_labels(view.rows),
        "quarantined": [{"item": q.item, "source": q.source, "rule": q.rule, "reason": q.reason}
                        for q in ws.store.quarantine(version)],
        "cleaned": [{"item": c.item, "source": c.source, "action": c.action} for c in ws.store.cleaned(version)],
        # whether data.clean and data.validate ran on this version: empty lists said nothing either way
        "checked": {step: _checked_on(ws, step, version) for step in ("data.clean", "data.validate")},
    }


def _checked_on(ws: Workspace, step: str, version: str) -> dict[str, Any] | None:
    """The newest run of `step` that finished on `version` ({"finished", "items"}), or None where none did."""
    for run in ws.store.step_runs(step, limit=500):
        if run.status == "done" and (run.summary or {}).get("version") == version:
            return {"finished": run.finished.isoformat() if run.finished else None,
                    "items": run.summary.get("checked")}
    return None


_FINDS = {"data.clean": "repaired", "data.validate": "quarantined"}


def checked_text(doc: dict[str, Any]) -> str:
    """"data.clean checked 200 item(s) (2026-12-07 08:14); data.validate checked 200 item(s) (…)", or what has not
    run on it and what that means: the quarantine and the repairs are empty because nothing looked, not because all
    is fine."""
    from runtime.domain.text import local_time

    said, missing = [], []
    for step in ("data.clean", "data.validate"):
        run = (doc.get("checked") or {}).get(step)
        if run is None:
            missing.append(step)
        else:
            said.append(f"{step} checked {run['items']} item(s) ({local_time(run['finished'], seconds=False)})")
    if missing:
        said.append(f"{' and '.join(missing)} {'have' if len(missing) > 1 else 'has'} not run on {doc['version']}: "
                    f"nothing is known to be {' or '.join(_FINDS[m] for m in missing)} (`cdl run --until {missing[-1]}`)")
    return "; ".join(said)


def label_key(label: str) -> str:
    """What two spellings of one class share: "Sport" and "sport", "sci-fi" and "Sci Fi"."""
    return re.sub(r"[\W_]+", "", label.casefold()) or label


def similar_labels(rows: list[IndexRow]) -> list[dict[str, int]]:
    """Labels that are one class spelt two ways ("Sport" and "sport", "sci-fi" and "sci fi"), each with its item
    count: a model would learn them as two classes, and nothing else flags them when allowed_labels is empty."""
    counts = Counter(r.label for r in rows if r.label is not None)
    groups: dict[str, dict[str, int]] = {}
    for label, n in sorted(counts.items()):
        groups.setdefault(label_key(label), {})[label] = n
    return [g for g in groups.values() if len(g) > 1]


def relabel_for(group: dict[str, int]) -> dict[str, str]:
    """The relabel that merges one group of look-alike labels into its most used spelling (the first, on a tie)."""
    keep = max(group, key=lambda k: (group[k], -list(group).index(k)))
    return {k: keep for k in group if k != keep}


def relabel_hint(groups: list[dict[str, int]]) -> str:
    """`cdl run --set 'data.import.relabel={Sport: sport}' --save`: the command that merges every group."""
    import json

    merged = {k: v for g in groups for k, v in relabel_for(g).items()}
    body = ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in merged.items())
    return f"`cdl run --set 'data.import.relabel={{{body}}}' --save`"


def alike_text(group: dict[str, int]) -> str:
    """'Sport' (2 items) and 'sport' (6 items)"""
    return " and ".join(f"{k!r} ({n} item{'' if n == 1 else 's'})" for k, n in group.items())


def named_order(ws: Workspace) -> list[str]:
    """The class order the workspace names: cdl.yaml's labeling.classes, then each source's class_names (a list or
    a preset, in the dataset's own order: Fashion-MNIST's 0 is "T-shirt/top", AG News' 0 is "World")."""
    from runtime.steps.sources import CLASS_NAME_PRESETS

    cfg = ws.config()
    order = [str(c) for c in (cfg.labeling or {}).get("classes") or []]
    for src in (cfg.steps.get("data.import") or {}).get("sources") or []:
        names = src.get("class_names") if isinstance(src, dict) else None
        names = CLASS_NAME_PRESETS.get(names, []) if isinstance(names, str) else names or []
        order += [str(c) for c in names]
    return list(dict.fromkeys(order))


def class_order(named: list[str], present: set[str]) -> list[str]:
    """The model's classes (its output's order): the named ones first, in their order, then the rest
    alphabetically. They were all alphabetical: a client reading probabilities by the dataset's class numbers
    (Fashion-MNIST's, a Hugging Face ClassLabel's) read the wrong ones."""
    first = [c for c in named if c in present]
    return first + sorted(present - set(first))


def version_rows(ws: Workspace, version: str) -> list[IndexRow]:
    """The index of any version, read from DVC's cache (no checkout needed)."""
    v = ws.store.version(version)
    return read_index(ws.dvc.open_member(v.dvc_hash, INDEX_NAME))


def version_view(ws: Workspace, version: str) -> DatasetView:
    """Any version's items and payloads: the checked-out one from data/dataset, another from DVC's cache (no
    checkout needed, nothing in data/ changes)."""
    if version == ws.current_version() and ws.has_dataset():
        return ws.dataset()
    v = ws.store.version(version)
    listing = ws.dvc.listing(v.dvc_hash)
    files = {rel[len("packs/"):]: ws.dvc.cache_file(md5) for rel, md5 in listing.items() if rel.startswith("packs/")}
    return DatasetView(version_rows(ws, version), PackReader(ws.dataset_dir / "packs", files))


def diff_json(ws: Workspace, a: str, b: str) -> dict[str, Any]:
    ra = {r.uid: r for r in version_rows(ws, a)}
    rb = {r.uid: r for r in version_rows(ws, b)}
    added = sorted(set(rb) - set(ra))
    removed = sorted(set(ra) - set(rb))
    common = set(ra) & set(rb)
    changed = sorted(u for u in common if ra[u].id != rb[u].id)
    label_changes = sorted(u for u in common if ra[u].label != rb[u].label)
    split_changes = sorted(u for u in common if ra[u].split != rb[u].split)

    def classes(rows: dict[str, IndexRow]) -> dict[str, int]:
        return dict(sorted(Counter(r.label or UNLABELED for r in rows.values()).items()))

    def per_split(rows: dict[str, IndexRow]) -> dict[str, dict[str, int]]:
        out: dict[str, Counter[str]] = {}
        for r in rows.values():
            out.setdefault(r.split or "unassigned", Counter())[r.label or UNLABELED] += 1
        return {s: dict(sorted(c.items())) for s, c in sorted(out.items())}

    return {
        "from": ws.store.version(a).id,
        "to": ws.store.version(b).id,
        "added": len(added),
        "removed": len(removed),
        "changed": len(changed),
        "label_changes": len(label_changes),
        "split_changes": len(split_changes),
        "classes_before": classes(ra),
        "classes_after": classes(rb),
        "splits_before": per_split(ra),
        "splits_after": per_split(rb),
        "examples": {
            "added": added[:20],
            "removed": removed[:20],
            "changed": changed[:20],
            "label_changes": [{"item": u, "before": ra[u].label, "after": rb[u].label} for u in label_changes[:20]],
        },
    }


def checkout(ws: Workspace, version: str) -> dict[str, Any]:
    """Restore data/dataset to an earlier (or later) version with DVC; the registry remembers which."""
    v = ws.store.version(version)
    if not v.dvc_file:
        raise WorkspaceError(f"{v.id} has no recorded .dvc file")
    if ws.dvc.missing(v.dvc_hash):
        raise WorkspaceError(f"{v.id}'s data is not in the DVC cache here: `cdl data pull` fetches every version "
                             "from the DVC remote")
    ws.dvc.checkout(DATASET_DIR, v.dvc_file)
    rows = ws.dataset().rows
    if len(rows) != v.items:
        raise WorkspaceError(f"checkout of {v.id} gave {len(rows)} items, the registry says {v.items}")
    ws.store.set_state("dataset_version", v.id)
    return {"version": v.id, "items": len(rows), "dvc_hash": v.dvc_hash}


# the DVC plugin each remote scheme needs (`pip install dvc-s3`): DVC refuses such a remote only at the first push
REMOTE_PLUGINS = {"s3": "dvc-s3", "gs": "dvc-gs", "gcs": "dvc-gs", "azure": "dvc-azure", "ssh": "dvc-ssh",
                  "hdfs": "dvc-hdfs", "webhdfs": "dvc-webhdfs", "oss": "dvc-oss", "gdrive": "dvc-gdrive",
                  "webdav": "dvc-webdav", "webdavs": "dvc-webdav"}


def remote_plugin_missing(url: str) -> str | None:
    """The package a remote's URL needs and this Python lacks (dvc-s3 for s3://), or None."""
    import importlib.util

    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    package = REMOTE_PLUGINS.get(scheme)
    if package is None:
        return None
    return package if importlib.util.find_spec(package.replace("-", "_")) is None else None


def remote_name_ok(name: str) -> bool:
    """A DVC remote's name: letters, digits, - and _ (the studio's Add remote… dialog checks it as it is typed)."""
    return bool(name) and name.replace("-", "").replace("_", "").isalnum()


def remote_add(ws: Workspace, name: str, url: str, default: bool = True) -> dict[str, Any]:
    """A DVC remote for the dataset versions (a folder, s3://, ssh://, gs://, ...: whatever DVC supports and has
    its plugin installed), in .dvc/config, committed to the workspace's git."""
    if not remote_name_ok(name):
        raise WorkspaceError(f"bad remote name {name!r}: letters, digits, - and _")
    if "://" not in url:  # a folder: absolute, so the workspace finds it from anywhere
        from pathlib import Path

        folder = Path(url).expanduser().resolve()
        if folder == ws.root.resolve() or ws.root.resolve() in folder.parents:
            # DVC takes it; the remote then lies in git's way (untracked files), goes into every backup, and goes
            # with the workspace when that is lost: no remote at all
            raise WorkspaceError(f"{folder} is inside the workspace: a DVC remote there is lost with it, so it backs "
                                 "nothing up; choose a folder elsewhere (another disk, a mounted share)")
        _writable_folder(folder)
        url = str(folder)
    before = _default_remote(ws)
    ws.dvc.add_remote(name, url, default)
    ws.git.commit(f"data: DVC remote {name}", ".dvc/config")
    # a new default took the place of another without a word: `cdl data push` and the doctor now mean this one
    replaced = before if default and before not in (None, name) else None
    return {"remote": name, "url": url, "default": default, "replaced_default": replaced,
            "missing_plugin": remote_plugin_missing(url)}


def _writable_folder(folder: Any) -> None:  # noqa: ANN401 - a Path
    """A folder remote is one this machine can write: made here where it is not yet (as `dvc push` would make it).
    `/proc/nope/store` was taken, and every `cdl data push` failed after with DVC's "No such file or directory"."""
    import os

    from runtime.domain.errors import os_error_text

    if folder.exists() and not folder.is_dir():
        raise WorkspaceError(f"{folder} is a file: a DVC remote given as a path is a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WorkspaceError(f"cannot make the remote's folder: {os_error_text(exc)} (a disk not mounted yet? mount "
                             "it and add the remote again)") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise WorkspaceError(f"{folder}: this user cannot write there, so `cdl data push` could not either")


def remote_remove(ws: Workspace, name: str) -> dict[str, Any]:
    """Forget a DVC remote (`dvc remote remove`): a wrong URL, a disk that is gone. The data on it stays there. Where
    it was the default, the next remote (by name) becomes the default, so that `cdl data push` still has one."""
    _known_remote(ws, name)
    remotes = ws.dvc.remotes()
    url, was_default = remotes[name], next(iter(remotes)) == name
    others = [n for n in remotes if n != name]
    new_default = sorted(others)[0] if was_default and others else None
    ws.dvc.remove_remote(name, new_default)
    if name in ws.dvc.remotes():  # defined in .dvc/config.local, which stays out of git
        raise WorkspaceError(f"remote {name!r} is set in .dvc/config.local: remove it there (`dvc remote remove "
                             f"--local {name}`)")
    ws.git.commit(f"data: DVC remote {name} removed", ".dvc/config")
    return {"remote": name, "url": url, "was_default": was_default,
            "default": new_default if was_default else _default_remote(ws)}


def push(ws: Workspace, remote: str | None = None) -> dict[str, Any]:
    """Every dataset version's data to the DVC remote (the default one unless named): what the registry knows,
    old versions included. A version whose data is no longer in the cache here is reported, not pushed."""
    _known_remote(ws, remote)
    todo, missing = {}, []
    for v in ws.store.versions():
        if v.dvc_file and not ws.dvc.missing(v.dvc_hash):
            todo[v.id] = v.dvc_file
        elif v.dvc_file:
            missing.append(v.id)
    sent = ws.dvc.transfer("push", todo, remote)
    name = remote or _default_remote(ws)
    url = ws.dvc.remotes().get(name or "")
    if url:  # what is on which remote, for `cdl doctor` where it cannot look (s3://, ssh://, ...)
        pushed = ws.store.get_state(PUSHED_STATE) or {}
        pushed[url] = sorted(set(pushed.get(url, [])) | set(sent))
        ws.store.set_state(PUSHED_STATE, pushed)
    return {"remote": name, "pushed": sent, "not_in_cache": missing}


PUSHED_STATE = "data_pushed"  # {remote url: [dataset version ids pushed there]}


def not_on_remote(ws: Workspace, url: str) -> list[str]:
    """The dataset versions whose data the remote at `url` lacks: looked up in a folder remote, as `cdl data
    push` recorded them for the others."""
    pushed = set((ws.store.get_state(PUSHED_STATE) or {}).get(url, []))
    out = []
    for v in ws.store.versions():
        if not v.dvc_hash:
            continue
        n = ws.dvc.missing_on_remote(url, v.dvc_hash)
        if (n is None and v.id not in pushed) or n:
            out.append(v.id)
    return out


def pull(ws: Workspace, remote: str | None = None) -> dict[str, Any]:
    """Every dataset version's data from the DVC remote into the cache (data/dataset is not touched: `cdl data
    checkout V` then restores any of them); says which versions are complete here afterwards."""
    _known_remote(ws, remote)
    versions = {v.id: v.dvc_file for v in ws.store.versions() if v.dvc_file}
    got = ws.dvc.transfer("fetch", versions, remote)
    incomplete = [v.id for v in ws.store.versions() if v.dvc_file and ws.dvc.missing(v.dvc_hash)]
    return {"remote": remote or _default_remote(ws), "fetched": got, "incomplete": incomplete}


def _known_remote(ws: Workspace, remote: str | None) -> None:
    """A --remote that is not one: said by name with the remotes there are, where DVC's "config file error: remote
    'nope' doesn't exist" came after "dvc fetch of v1 failed"."""
    if remote is None:
        return
    remotes = ws.dvc.remotes()
    if remote not in remotes:
        from runtime.domain.errors import did_you_mean

        raise NotFoundError(f"no DVC remote {remote!r}{did_you_mean(remote, list(remotes))} (remotes: "
                            f"{', '.join(remotes) or 'none yet: `cdl data remote add NAME URL` adds one'})")


def _default_remote(ws: Workspace) -> str | None:
    return next(iter(ws.dvc.remotes()), None)
