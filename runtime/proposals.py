"""Retrain proposals: the scoring samples to label after drift, lowest confidence first, with their raw inputs
from the device's journal. A proposal is a data source of its own (`proposal:<id>`): its samples go into the
labeling queue at once (filter `proposal:<id>`) and, once labeled, into the next dataset version."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np

from runtime.domain.entities import Item, SourceRecord
from runtime.domain.errors import CdlError, NotFoundError
from runtime.workspace.dataset import write_bin_pack, write_npy_pack
from runtime.workspace.workspace import Workspace


def proposals(ws: Workspace) -> list[dict[str, Any]]:
    ids = ws.store.get_state("proposals", []) or []
    return [proposal(ws, p) for p in ids]


def proposal(ws: Workspace, pid: str) -> dict[str, Any]:
    doc = ws.store.get_state(f"proposal:{pid}")
    if doc is None:
        raise NotFoundError(f"retrain proposal {pid!r} does not exist")
    from runtime.labeling import effective_labels

    uids = ws.store.get_state(f"proposal:{pid}:items") or []
    items = {i.uid: i for i in ws.store.items_by_uid(uids)}
    states = effective_labels(ws.store.labels(item_ids=[i.id for i in items.values()]))
    labeled = sum(1 for u in uids if u in items and states.get(items[u].id) and states[items[u].id].label)
    return {**doc, "samples": len(uids), "labeled": labeled, "unlabeled": len(uids) - labeled}


class NothingToPropose(CdlError):
    """A drifted window with no sample to ask about. `labeled_in`: the proposal whose samples were these (the
    window's raw inputs are all labeled already), or None (the device kept no raw input in the window)."""

    def __init__(self, message: str, labeled: bool, labeled_in: dict[str, Any] | None = None):
        super().__init__(message)
        self.labeled = labeled  # the window's raw inputs are all labeled already (else it kept none)
        self.labeled_in = labeled_in


def create(ws: Workspace, check: dict[str, Any], max_samples: int = 100) -> dict[str, Any]:
    """Make a proposal from a drifted check: the window's records with a raw input, lowest confidence first.
    Raises NothingToPropose, saying why, where the window holds no raw input not labeled already."""
    from runtime.devices import scoring_store
    from runtime.monitor import bundle_manifest, window_sql

    manifest = bundle_manifest(ws, check["bundle_id"])
    sql, params = window_sql(check["device"], check["bundle_id"], check["window"].get("by", "count"),
                             check.get("window_size", 500))
    rows = scoring_store(ws).query(
        f"SELECT seq, raw_input, raw_kind, confidence, label FROM ({sql}) WHERE raw_input IS NOT NULL "
        "ORDER BY confidence ASC, seq ASC", params)
    from runtime.labeling import current_states

    known = {k for k, v in current_states(ws.store).items() if v.label is not None}
    known |= dismissed_ids(ws)  # judged not worth labeling: the same window proposes them no more
    seen: set[str] = set()
    picked = []
    for seq, raw, kind, conf, label in rows:
        h = hashlib.sha256(raw).hexdigest()
        if h in seen or h in known:  # the same content is labeled already: nothing to ask
            continue
        seen.add(h)
        picked.append((seq, bytes(raw), kind, conf, label))
        if len(picked) >= max_samples:
            break
    if not picked:
        raise _nothing(ws, check, len(rows))
    n = len(ws.store.get_state("proposals", []) or []) + 1
    pid = f"p{n}"
    name = f"proposal:{pid}"
    kind = picked[0][2]
    items: list[Item] = []
    if kind == "text":
        pack, spans = write_bin_pack(ws.packs_dir, [p[1] for p in picked])
        for (seq, raw, _, conf, label), (off, length) in zip(picked, spans, strict=True):
            items.append(Item(uid=f"{name}:{check['device']}#{seq}", id=hashlib.sha256(raw).hexdigest(), kind="text",
                              source=f"{check['device']}#seq{seq} (confidence {conf:.2f}, predicted {label})",
                              pack=pack, offset=off, length=length, encoding="bytes"))
    else:
        shape = manifest["raw_input"]["shape"][1:]
        arr = np.stack([np.frombuffer(p[1], dtype=np.uint8).reshape(shape) for p in picked])
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
        pack = write_npy_pack(ws.packs_dir, arr)
        for i, (seq, _raw, _, conf, label) in enumerate(picked):
            items.append(Item(uid=f"{name}:{check['device']}#{seq}", id=hashlib.sha256(arr[i].tobytes()).hexdigest(),
                              kind="image", source=f"{check['device']}#seq{seq} (confidence {conf:.2f}, predicted {label})",
                              pack=pack, offset=i, length=int(arr[i].size), encoding="npy"))
    ws.store.import_source(SourceRecord(name, "proposal", pid, len(items), None), items, [])
    # what the device answered for each sample: the labeling queue shows it as the item's suggestion, as Label
    # Studio shows a model's prediction (it was only in the item's source, a tooltip in the annotation panel)
    served = f"{check['model']}:{check['version']}" + (f":{manifest['variant']}" if manifest.get("variant") else "")
    ws.store.set_state(f"proposal:{pid}:predicted", {
        "model": f"{served} on {check['device']}",
        "items": {i.id: [p[4], float(p[3])] for i, p in zip(items, picked, strict=True) if p[4] is not None}})
    doc = {"id": pid, "device": check["device"], "model": check["model"], "version": check["version"],
           "bundle_id": check["bundle_id"], "created": check["time"], "status": "open",
           "drifted_tests": [t["name"] for t in check["tests"] if t["drifted"]], "window": check["window"],
           "raw_kept": len(rows)}
    ws.store.set_state(f"proposal:{pid}", doc)
    ws.store.set_state(f"proposal:{pid}:items", [i.uid for i in items])
    ws.store.set_state("proposals", [*(ws.store.get_state("proposals", []) or []), pid])
    return proposal(ws, pid)


def few_kept_line(ws: Workspace, p: dict[str, Any], max_samples: int) -> str:
    """Why a proposal has fewer samples than its drifted window had records ("3 sample(s)" from 302 records): the
    device keeps the raw input of its less confident predictions only. "" where that is not why."""
    from runtime.devices import device_folder

    n, kept = (p.get("window") or {}).get("n"), p.get("raw_kept")
    if n is None or kept is None or kept >= n or p["samples"] >= max_samples:
        return ""
    below = "raw_input_below_confidence in its agent.json"
    try:  # the setting enrolling wrote, where its folder is still here
        dev = ws.store.device(p["device"])
        below += f" ({float(json.loads((device_folder(ws, dev) / 'agent.json').read_text(encoding='utf-8-sig'))['raw_input_below_confidence']):g})"
    except (CdlError, OSError, ValueError, KeyError, TypeError):
        pass
    return (f"the device kept the raw input of {kept} of the window's {n} records, those of predictions less "
            f"confident than {below}; `cdl devices enroll {p['device']} --address {_address(ws, p['device'])} "
            "--replace --raw-below 0.9` keeps more")


def _address(ws: Workspace, device: str) -> str:
    """The device's enrolled address, for a command to copy ("HOST:PORT", which had to be looked up, where the
    device is not enrolled any more)."""
    try:
        return ws.store.device(device).address
    except CdlError:
        return "HOST:PORT"


def _nothing(ws: Workspace, check: dict[str, Any], raw: int) -> NothingToPropose:
    dev = check["device"]
    if not raw:
        return NothingToPropose(f"{dev}: drift, but the device kept no raw input in this window: it keeps those of "
                                "predictions less confident than raw_input_below_confidence in its agent.json (raise "
                                f"it: `cdl devices enroll {dev} --address {_address(ws, dev)} --replace --raw-below "
                                "0.9`)",
                                labeled=False)
    earlier = [p for p in proposals(ws) if p["device"] == dev and p["bundle_id"] == check["bundle_id"]]
    last = earlier[-1] if earlier else None
    if last is not None and last["status"] == "dismissed":
        note = f": {last['note']}" if last.get("note") else ""
        return NothingToPropose(f"{dev}: drift, but the {raw} raw input(s) its window kept are labeled already or "
                                f"were dismissed with proposal {last['id']}{note}: nothing new to label until the "
                                "device scores more", labeled=True)
    where = ""
    if last is not None:
        where = f" (proposal {last['id']}, {last['status']}" + (f": {last['note']}" if last.get("note") else "") + ")"
    return NothingToPropose(f"{dev}: drift, but the {raw} raw input(s) its window kept are labeled already{where}: "
                            "nothing new to label until the device scores more", labeled=True, labeled_in=last)


def device_predictions(ws: Workspace) -> dict[str, dict[str, Any]]:
    """What a device's model answered for each retrain proposal's sample, {item_id: {"label", "confidence",
    "model"}}; where two proposals hold an item, the newer one's."""
    out: dict[str, dict[str, Any]] = {}
    for pid in ws.store.get_state("proposals", []) or []:
        doc = ws.store.get_state(f"proposal:{pid}:predicted") or {}
        for item_id, (label, conf) in doc.get("items", {}).items():
            out[item_id] = {"label": label, "confidence": conf, "model": doc["model"]}
    return out


def open_proposal(ws: Workspace) -> dict[str, Any] | None:
    for p in reversed(proposals(ws)):
        if p["status"] == "open":
            return p
    return None


LABELED_NEXT = "a model trained on them goes to review (Run up to here on Review, or `cdl loop`)"
"""What comes next for a proposal whose samples are all labeled, as the studio's panels say it."""


def dismissed_ids(ws: Workspace) -> set[str]:
    """The content ids of samples dismissed with their proposals."""
    out: set[str] = set()
    for pid in ws.store.get_state("proposals", []) or []:
        out.update(ws.store.get_state(f"proposal:{pid}:dismissed") or [])
    return out


def dismiss(ws: Workspace, pid: str, note: str = "") -> dict[str, Any]:
    """A false alarm, or samples not worth labeling: the proposal ends "dismissed", its unlabeled samples leave the
    dataset and the labeling queue (those labeled stay: someone's work), and no later proposal asks for them again;
    new scoring data is proposed as before. Items and record change in one transaction. `cdl loop` waited for an
    open proposal's labels with no way out but labeling every sample."""
    from runtime.labeling import effective_labels

    p = proposal(ws, pid)
    if p["status"] != "open":
        raise CdlError(f"proposal {pid} is {p['status']} already: only an open proposal is dismissed")
    uids = ws.store.get_state(f"proposal:{pid}:items") or []
    items = {i.uid: i for i in ws.store.items_by_uid(uids)}
    states = effective_labels(ws.store.labels(item_ids=[i.id for i in items.values()]))
    labeled = [u for u in uids if u in items and states.get(items[u].id) and states[items[u].id].label]
    dropped = [u for u in uids if u in items and u not in labeled]
    doc = {k: v for k, v in (ws.store.get_state(f"proposal:{pid}") or {}).items()}
    doc.update(status="dismissed", note=note or "dismissed", dismissed_samples=len(dropped))
    ws.store.remove_items(f"proposal:{pid}", dropped, state={
        f"proposal:{pid}": doc, f"proposal:{pid}:items": labeled,
        f"proposal:{pid}:dismissed": sorted({items[u].id for u in dropped})})
    return {**proposal(ws, pid), "removed": len(dropped), "kept": len(labeled)}


def close(ws: Workspace, pid: str, status: str = "done", note: str = "") -> None:
    doc = ws.store.get_state(f"proposal:{pid}")
    if doc is None:
        raise NotFoundError(f"retrain proposal {pid!r} does not exist")
    ws.store.set_state(f"proposal:{pid}", {**doc, "status": status, "note": note})
