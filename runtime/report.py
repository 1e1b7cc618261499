"""A model version's report (`cdl models report NAME:VERSION -o FILE.html`, the models panel's Report…): one
self-contained HTML page a reviewer can read, file or send, as a model card. What it was made from (data, code,
trial, parameters), how it did (test metrics, the gate, per class, the confusion matrix, the champion on the same
test split, the training curves), what was made of it (variants with size, latency and accuracy) and what happened
to it (reviews, aliases, deployments). No scripts, no files beside it: the curves are inline SVG."""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runtime.ml.versus import flattered
from runtime.workspace.workspace import Workspace

PALETTE = ("#2563eb", "#dc2626")
CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1000px; color: #111827; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #e5e7eb; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { border: 1px solid #d1d5db; padding: 3px 8px; }
th { background: #f3f4f6; text-align: left; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #4b5563; } .bad { color: #b91c1c; } .good { color: #15803d; }
svg { background: #fff; border: 1px solid #e5e7eb; margin-right: 1em; }
"""


def _e(v: Any) -> str:  # noqa: ANN401
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.3g}"
    return html.escape(str(v))


def _table(head: list[str] | None, rows: list[list[Any]], numeric: set[int] = frozenset()) -> str:
    out = ["<table>" + ("<tr>" + "".join(f"<th>{_e(h)}</th>" for h in head) + "</tr>" if head else "")]
    for r in rows:
        out.append("<tr>" + "".join(f"<td class='n'>{_e(v)}</td>" if i in numeric else f"<td>{_e(v)}</td>"
                                    for i, v in enumerate(r)) + "</tr>")
    return "".join(out) + "</table>"


def _svg(title: str, series: dict[str, list[tuple[float, float]]], w: int = 440, h: int = 240) -> str:
    """A line chart of (epoch, value) series, inline SVG."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y1 = y0 + 1e-6
    left, right, top, bottom = 50, 10, 28, 30

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * (w - left - right)

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * (h - top - bottom)

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}' role='img'>",
             f"<text x='{left}' y='18' font-size='13'>{html.escape(title)}</text>",
             f"<line x1='{left}' y1='{h - bottom}' x2='{w - right}' y2='{h - bottom}' stroke='#9ca3af'/>",
             f"<line x1='{left}' y1='{top}' x2='{left}' y2='{h - bottom}' stroke='#9ca3af'/>",
             f"<text x='{left - 4}' y='{sy(y1) + 4}' text-anchor='end' font-size='10'>{y1:.3g}</text>",
             f"<text x='{left - 4}' y='{sy(y0) + 4}' text-anchor='end' font-size='10'>{y0:.3g}</text>",
             f"<text x='{sx(x0)}' y='{h - bottom + 14}' text-anchor='middle' font-size='10'>{x0:g}</text>",
             f"<text x='{sx(x1)}' y='{h - bottom + 14}' text-anchor='middle' font-size='10'>{x1:g}</text>",
             f"<text x='{(left + w - right) / 2}' y='{h - 4}' text-anchor='middle' font-size='10'>epoch</text>"]
    for i, (name, s) in enumerate(series.items()):
        if not s:
            continue
        color = PALETTE[i % len(PALETTE)]
        line = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s)
        parts.append(f"<polyline fill='none' stroke='{color}' stroke-width='2' points='{line}'><title>"
                     f"{html.escape(name)}</title></polyline>")
        parts.append(f"<text x='{w - right - 90 + 50 * i}' y='18' font-size='11' fill='{color}'>"
                     f"{html.escape(name)}</text>")  # the legend, on the title's line: clear of the lines
    return "".join(parts) + "</svg>"


def model_report(ws: Workspace, ref: str) -> str:
    """The report's HTML."""
    from runtime.devices import history_json as deployments_json
    from runtime.registry import (
        failed_gate,
        history_json,
        lineage,
        passed_over_by,
        review_text,
        started_from,
        tuned_by,
    )
    from runtime.steps.deploy import variants_json

    store = ws.store
    mv = store.resolve_model(ref)
    lin = lineage(store, mv.ref)
    hist = history_json(store, mv.name)
    ev = mv.evaluation or {}
    reviews = [r for r in hist["reviews"] if r["version"] == mv.version]
    verdict = review_text(reviews[-1] if reviews else None, passed_over_by(store, mv, bool(reviews)), failed_gate(mv))
    dv = lin["dataset_version"]
    out = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{_e(mv.ref)}: model report</title>"
           f"<style>{CSS}</style></head><body>",
           f"<h1>{_e(mv.ref)}</h1>",
           f"<p class='note'>{_e(', '.join(mv.aliases) or 'no alias')}; {_e(verdict)}; {_e(mv.framework)} "
           f"{_e(mv.template)}; registered {_e(mv.created.isoformat()[:19])} UTC; report made "
           f"{_e(datetime.now(UTC).isoformat()[:19])} UTC in {_e(ws.root)}</p>",
           "<h2>Made from</h2>",
           _table(None, [
               ["dataset version", f"{dv['id']} ({dv['items']} items, DVC {dv['dvc_hash']}, git {dv['git_commit']})"],
               ["code", f"{lin['code']['git_commit']}{' (dirty: uncommitted changes)' if lin['code']['dirty'] else ''}"],
               ["experiment", f"{lin['experiment']['name']} (#{lin['experiment']['id']})" if lin["experiment"] else None],
               ["trial", lin["trial"]], ["tuning experiment", tuned_by(ws.store, lin)],
               ["transform", lin["transform"]], ["warm start from", started_from(lin)],
               ["classes", ", ".join(mv.classes)]]),
           "<h3>Parameters</h3>",
           _table(["parameter", "value"], [[k, v] for k, v in sorted(mv.params.items())], {1}),
           "<h2>How it did</h2>",
           _table(["metric", "value"], [[k, v] for k, v in sorted(mv.metrics.items())], {1})]
    gate = ev.get("gate")
    if gate:
        cls = "good" if gate.get("passed") else "bad"
        out.append(f"<p class='{cls}'>gate: {_e(gate.get('metric'))} {_e(gate.get('value'))} "
                   f"{'≥' if gate.get('passed') else '<'} {_e(gate.get('threshold'))}: "
                   f"{'passed' if gate.get('passed') else 'FAILED'} ({_e(ev.get('n'))} test items)</p>")
    champ = ev.get("champion") or {}
    if champ.get("test_accuracy") is not None:
        where = "the same test split" if champ.get("same_test_set") else (
            f"this version's test split (it was trained on {champ.get('dataset_version')})")
        note = f"; {flattered(seen, 'these test items', 'its')}" if (seen := champ.get("seen_in_training")) else ""
        out.append(f"<p>Against champion {_e(champ['ref'])} on {_e(where)}: test_accuracy "
                   f"{_e(champ['test_accuracy'])} (this version {_e(mv.metrics.get('test_accuracy'))}), macro-F1 "
                   f"{_e(champ.get('macro_f1'))} (this version {_e(mv.metrics.get('macro_f1'))}){_e(note)}</p>")
    elif champ.get("error"):
        out.append(f"<p class='note'>The champion {_e(champ['ref'])} could not be measured on this test split: "
                   f"{_e(champ['error'])}</p>")
    per_class = ev.get("per_class") or {}
    if per_class:
        out += ["<h3>Per class</h3>", _table(["class", "precision", "recall", "f1", "support"],
                                             [[c, d["precision"], d["recall"], d["f1"], d["support"]]
                                              for c, d in per_class.items()], {1, 2, 3, 4})]
    cm, classes = ev.get("confusion_matrix"), ev.get("classes") or mv.classes
    if cm:
        top = max(max(r) for r in cm) or 1
        rows = []
        for c, r in zip(classes, cm, strict=False):
            cells = "".join(f"<td class='n' style='background: rgba(37,99,235,{v / top * 0.6:.2f})'>{v}</td>"
                            for v in r)
            rows.append(f"<tr><th>{_e(c)}</th>{cells}</tr>")
        out += ["<h3>Confusion matrix (rows: true, columns: predicted)</h3>",
                "<table><tr><th></th>" + "".join(f"<th>{_e(c)}</th>" for c in classes) + "</tr>" + "".join(rows)
                + "</table>"]
    epochs = store.metrics(mv.trial_id) if mv.trial_id else []
    if epochs:
        out.append("<h3>Training</h3><p>")
        for kind in ("accuracy", "loss"):
            out.append(_svg(f"{kind} per epoch", {split: [(m["epoch"], m[f"{split}_{kind}"]) for m in epochs
                                                          if m.get(f"{split}_{kind}") is not None]
                                                  for split in ("train", "val")}))
        out.append("</p>")
    variants = variants_json(store, mv.ref)["variants"]
    if variants:
        rows = []
        for v in variants:
            lat = v.get("latency_ms") or {}
            rows.append([v["name"], v["status"], v["size_bytes"], lat.get("b1_p50"), lat.get("b64_p50"),
                         v["test_accuracy"], v["accuracy_delta"], "slower than fp32" if v["slower_than_fp32"] else ""])
        out += ["<h2>Variants</h2>", _table(["variant", "status", "bytes", "latency b1 p50 ms", "latency b64 p50 ms",
                                             "test_accuracy", "change", ""], rows, {2, 3, 4, 5, 6})]
    out.append("<h2>History</h2>")
    events = [[a["since"][:19], f"{a['alias']} from", a["reason"]] for a in hist["aliases"] if a["version"] == mv.version]
    events += [[a["until"][:19], f"{a['alias']} until", ""] for a in hist["aliases"]
               if a["version"] == mv.version and a["until"]]
    events += [[r["created"][:19], r["decision"] + (" (automatic)" if r["automatic"] else ""),
                f"{r['reviewer']}: {r['comment']}"] for r in reviews]
    events += [[d["time"][:19], f"{d['action']} on {d['device']}", f"{d['ref']}: {d['status']}, {d['message']}"]
               for d in deployments_json(ws)["deployments"]
               if d["model"] == mv.name and str(d["version"]) == str(mv.version)]
    out.append(_table(["when (UTC)", "what", ""], sorted(events)) if events else "<p class='note'>nothing yet</p>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(ws: Workspace, ref: str, path: Path) -> dict[str, Any]:
    from runtime.workspace.config import atomic_write_text

    text = model_report(ws, ref)
    atomic_write_text(Path(path), text)
    return {"model": ws.store.resolve_model(ref).ref, "path": str(path), "bytes": len(text.encode())}
