"""Drift checks over a window of scoring data against the reference statistics a bundle carries.

Tests (per device, on the model version it serves now):
- predicted_class: chi-squared test of homogeneity, window against reference predicted classes;
- confidence: two-sample Kolmogorov-Smirnov of the confidences;
- psi:<feature>: population stability index; text: length, oov_rate, frequent_terms; images:
  mean_intensity, std_intensity, intensity_histogram.
A p-value test drifts below alpha (divided by the number of p-value tests with the Bonferroni correction); a
PSI test drifts above its threshold (0.2). All of it is set in cdl.yaml (deploy.monitor).
"""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np

EPS = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.clip(np.asarray(expected, dtype=np.float64), EPS, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), EPS, None)
    e, a = e / e.sum(), a / a.sum()
    return float(np.sum((a - e) * np.log(a / e)))


def _binned(values: np.ndarray, edges: list[float]) -> np.ndarray:
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right")
    return np.bincount(idx, minlength=len(edges) + 1) / max(1, len(values))


def window_sql(device: str, bundle_id: str, by: str, size: float) -> tuple[str, list[Any]]:
    """The window's records: by "count" (the last `size`), "time" (the last `size` seconds) or "after" (every record
    after sequence number `size`: a canary's since it got the bundle)."""
    if by == "after":
        return ("SELECT * FROM scoring WHERE device = ? AND bundle_id = ? AND seq > ?", [device, bundle_id, int(size)])
    if by == "time":
        return ("SELECT * FROM scoring WHERE device = ? AND bundle_id = ? AND time >= ?",
                [device, bundle_id, time.time() - float(size)])
    return ("SELECT * FROM scoring WHERE device = ? AND bundle_id = ? ORDER BY seq DESC LIMIT ?",
            [device, bundle_id, int(size)])


def _lit(v: str) -> str:
    return "'" + str(v).replace("'", "''") + "'"


def window_table_sql(device: str, bundle_id: str, by: str, size: float) -> str:
    """The window as a temporary table `w` (DDL takes no parameters: values are quoted literals)."""
    if by == "after":
        return (f"CREATE OR REPLACE TEMP TABLE w AS SELECT * FROM scoring WHERE device = {_lit(device)} "
                f"AND bundle_id = {_lit(bundle_id)} AND seq > {int(size)}")
    if by == "time":
        cond = f"time >= {float(time.time() - float(size))!r}"
        return (f"CREATE OR REPLACE TEMP TABLE w AS SELECT * FROM scoring WHERE device = {_lit(device)} "
                f"AND bundle_id = {_lit(bundle_id)} AND {cond}")
    return (f"CREATE OR REPLACE TEMP TABLE w AS SELECT * FROM scoring WHERE device = {_lit(device)} "
            f"AND bundle_id = {_lit(bundle_id)} ORDER BY seq DESC LIMIT {int(size)}")


def check(con, device: str, bundle_id: str, manifest: dict[str, Any], by: str = "count", size: float = 500,
          alpha: float = 0.05, bonferroni: bool = True, psi_threshold: float = 0.2,
          min_records: int = 50) -> dict[str, Any]:  # noqa: ANN001
    """One drift check. `con` is an open DuckDB connection to the scoring store."""
    from scipy import stats

    ref = manifest.get("reference") or {}
    con.execute(window_table_sql(device, bundle_id, by, size))
    n, t_from, t_to = con.execute("SELECT COUNT(*), MIN(time), MAX(time) FROM w").fetchall()[0]
    out: dict[str, Any] = {"device": device, "model": manifest["name"], "version": str(manifest["version"]),
                           "variant": manifest.get("variant"), "bundle_id": bundle_id, "time": time.time(),
                           "window": {"by": by, "from": t_from, "to": t_to, "n": int(n)}, "tests": [],
                           "drifted": False}
    # a text with no word the model knows: none of its tokens (or none at all) in the vocabulary
    texts = con.execute("SELECT COUNT(length), COUNT(*) FILTER (WHERE length = 0 OR oov_rate >= 1) FROM w").fetchall()[0]
    if texts[0]:
        out["no_known_word"] = int(texts[1])
    if n < min_records:
        out["note"] = f"{n} record(s) in the window; at least {min_records} are needed for a check"
        return out
    tests: list[dict[str, Any]] = []
    p_tests: list[dict[str, Any]] = []
    # predicted classes: chi-squared test of homogeneity between the window and the reference (both are samples:
    # a goodness-of-fit test against the reference's proportions would ignore the reference's own noise)
    classes = list(ref.get("classes") or manifest["classes"])
    counts = dict(con.execute("SELECT label, COUNT(*) FROM w GROUP BY label").fetchall())
    observed = np.array([counts.get(c, 0) for c in classes], dtype=np.float64)
    ref_counts = np.array([(ref.get("predicted") or {}).get("counts", {}).get(c, 0) for c in classes], np.float64)
    keep = (observed + ref_counts) > 0
    table = np.vstack([observed[keep], ref_counts[keep]])
    if table.shape[1] >= 2 and ref_counts.sum() > 0:
        chi = stats.chi2_contingency(table, correction=False)
        p_tests.append({"name": "predicted_class", "statistic": float(chi.statistic), "p_value": float(chi.pvalue)})
    else:
        p_tests.append({"name": "predicted_class", "statistic": 0.0, "p_value": 1.0})
    # confidence: two-sample KS
    conf = con.execute("SELECT confidence FROM w").fetchnumpy()["confidence"]
    sample = np.asarray((ref.get("confidence") or {}).get("sample") or [], dtype=np.float64)
    if len(sample):
        # both sides at the same precision: quantized models give few distinct confidences, and a float32
        # value must not count as different from its own rounding
        ks = stats.ks_2samp(np.round(conf, 4), np.round(sample, 4))
        p_tests.append({"name": "confidence", "statistic": float(ks.statistic), "p_value": float(ks.pvalue)})
    m = len(p_tests) if bonferroni else 1
    for t in p_tests:
        t["threshold"] = alpha / m
        t["drifted"] = bool(t["p_value"] < t["threshold"])
        tests.append(t)
    feats = ref.get("features") or {}

    def add_psi(name: str, value: float) -> None:
        if not math.isfinite(value):
            value = 10.0
        tests.append({"name": f"psi:{name}", "statistic": value, "p_value": None, "threshold": psi_threshold,
                      "drifted": bool(value > psi_threshold)})

    for name, col in (("length", "length"), ("oov_rate", "oov_rate"), ("mean_intensity", "mean_intensity"),
                      ("std_intensity", "std_intensity")):
        f = feats.get(name)
        if not f or f.get("type") != "continuous":
            continue
        vals = con.execute(f"SELECT {col} FROM w WHERE {col} IS NOT NULL").fetchnumpy()[col]
        if len(vals):
            add_psi(name, psi(np.asarray(f["fractions"]), _binned(np.asarray(vals, dtype=np.float64), f["edges"])))
    terms = ref.get("tracked_terms") or []
    if terms and any(k.startswith("term:") for k in feats):
        present = dict(con.execute("SELECT t, COUNT(*) FROM (SELECT unnest(terms) AS t FROM w) GROUP BY t").fetchall())
        e = np.array([feats[f"term:{t}"]["p"] for t in terms], dtype=np.float64)
        a = np.array([present.get(t, 0) / n for t in terms], dtype=np.float64)
        add_psi("frequent_terms", psi(e, a) if a.sum() > 0 else 10.0)
    h = feats.get("intensity_histogram")
    if h and h.get("fractions"):
        k = len(h["fractions"])
        row = con.execute(f"SELECT {', '.join(f'AVG(intensity_hist[{i + 1}])' for i in range(k))} FROM w "
                          "WHERE intensity_hist IS NOT NULL").fetchall()[0]
        if row[0] is not None:
            add_psi("intensity_histogram", psi(np.asarray(h["fractions"]), np.asarray(row, dtype=np.float64)))
    out["tests"] = tests
    out["drifted"] = any(t["drifted"] for t in tests)
    return out


def unknown_line(check: dict[str, Any]) -> str:
    """"12 of 31 texts had no word the model knows (39 %)" for a check whose window had such texts, else "". An
    empty text, or one of words the model never saw, is answered with the model's guess for an empty text and a
    confidence like any other (a client sending empty strings went unnoticed): no drift test says so, since an
    empty text's out-of-vocabulary rate is 0."""
    k, n = check.get("no_known_word") or 0, check["window"]["n"]
    if not k:
        return ""
    return (f"{k} of {n} text(s) had no word the model knows ({100 * k / n:.0f} %): their answers are its guess "
            "for an empty text")


def report_lines(checks: list[dict[str, Any]]) -> list[str]:
    """`cdl monitor`'s report: per device, what it served, the window, and each test's statistic, p-value or PSI
    threshold and result (it printed only the step's line, "DRIFT in predicted_class, …", and the figures were in
    --json alone)."""
    from datetime import datetime

    def when(t: float | None) -> str:
        return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M:%S") if t else "?"

    lines: list[str] = []
    for c in checks:
        served = f"{c['model']}:{c['version']}" + (f":{c['variant']}" if c.get("variant") else "")
        w = c["window"]
        span = f"{w['n']} record(s)" + (f", {when(w['from'])} to {when(w['to'])}" if w["n"] else "")
        if not c["tests"]:
            lines.append(f"{c['device']}  {served}  {span}: no verdict ({c.get('note') or 'no test ran'})")
        else:
            lines.append(f"{c['device']}  {served}  {span}: {'DRIFT' if c['drifted'] else 'no drift'}")
            lines.append(f"  {'test':<26}{'statistic':>11}{'p-value':>11}{'threshold':>11}  result")
            for t in c["tests"]:
                p = "-" if t["p_value"] is None else f"{t['p_value']:.3g}"
                lines.append(f"  {t['name']:<26}{t['statistic']:>11.4g}{p:>11}{t['threshold']:>11.4g}  "
                             f"{'drift' if t['drifted'] else 'ok'}")
        unknown = unknown_line(c)
        if unknown:
            lines.append(f"  {unknown}")
    return lines


def bundle_manifest(ws, bundle_id: str) -> dict[str, Any]:  # noqa: ANN001
    """The manifest of a bundle this workspace made (bundles are kept as artifacts, named by their sha256)."""
    import zipfile

    from runtime.domain.errors import NotFoundError

    if not ws.artifacts.exists(bundle_id):
        raise NotFoundError(f"bundle {bundle_id[:12]} was not made by this workspace: its reference statistics "
                            "are unknown")
    with zipfile.ZipFile(ws.artifacts.get(bundle_id)) as zf:
        return json.loads(zf.read("manifest.json"))


def verdict(results: list[dict[str, Any]]) -> tuple[str, str]:
    """(status, one line) for a round of checks: "drift", "no-drift", "no-verdict" (no check had enough records to
    test: too little scoring data is not a clean bill of health) or "no-data"."""
    if not results:
        return "no-data", "no scoring data yet"
    drifted = [c["device"] for c in results if c["drifted"]]
    undecided = [c for c in results if not c["tests"]]
    waiting = ("no verdict on " + ", ".join(f"{c['device']} ({c.get('note') or str(c['window']['n']) + ' record(s)'})"
                                             for c in undecided)) if undecided else ""
    if drifted:
        return "drift", "; ".join(x for x in (f"drift on {', '.join(drifted)}", waiting) if x)
    if len(undecided) == len(results):
        return "no-verdict", waiting
    decided = len(results) - len(undecided)
    return "no-drift", "; ".join(x for x in (f"no drift on {decided} device(s)", waiting) if x)


def checks(ws, devices: list[str] | None = None, **params: Any) -> list[dict[str, Any]]:  # noqa: ANN001
    """A check for every enrolled device (or those named) on the bundle it serves (as its last health said), else
    the one it served most recently; the scoring data of a device that was removed stays, unchecked. (After a
    rollback, the newest records are the rolled-back bundle's: checking those found drift in a model no longer
    serving, and deploy.maintain proposed to retrain for it.)"""
    from runtime.devices import scoring_store

    enrolled = ws.store.devices()
    devices = devices or [d.name for d in enrolled]
    serving = {d.name: ((d.last_health or {}).get("active") or {}).get("bundle_id") for d in enrolled}
    store = scoring_store(ws)
    out = []
    with store.connect() as con:
        rows = con.execute("SELECT device, arg_max(bundle_id, seq) FROM scoring GROUP BY device ORDER BY device").fetchall()
        for device, bundle_id in rows:
            if device not in devices:
                continue
            if serving.get(device) and ws.artifacts.exists(serving[device]):
                bundle_id = serving[device]
            manifest = bundle_manifest(ws, bundle_id)
            out.append(check(con, device, bundle_id, manifest, **params))
    return out
