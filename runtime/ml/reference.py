"""Reference statistics a bundle carries for drift checks, from the validation data.

Built from the same per-item summaries the device computes for every request
(`edge_agent.proto.preprocessing`), and from the model's own predictions on that data:

    {"kind": "text" | "image", "n": ..., "classes": [...],
     "predicted": {"counts": {class: n}},                  chi-squared against the window's predictions
     "confidence": {"sample": [...], "mean": ...},         two-sample KS against the window's confidences
     "features": {                                         PSI per feature
        "length": {"type": "continuous", "edges": [...], "fractions": [...]},
        "oov_rate": {...}, "term:<stem>": {"type": "binary", "p": ...},
        "mean_intensity": {...}, "std_intensity": {...},
        "intensity_histogram": {"type": "histogram", "fractions": [10 values]}},
     "tracked_terms": [...]}
"""

from __future__ import annotations

from typing import Any

import numpy as np

SAMPLE = 2000


def reference_half(n_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(reference items, monitoring holdout) of the test split: a seeded half each.

    The reference comes from the test split because it is the only data that neither the preprocessing (the
    vocabulary, normalisation constants), nor early stopping, nor a refit model has seen: statistics of the
    validation split are biased (its words are in the vocabulary, so its out-of-vocabulary rate is too low). The
    other half stays out of the reference, so in-distribution monitoring can be checked on data it never saw."""
    perm = np.random.default_rng(seed).permutation(n_test)
    half = max(1, n_test // 2)
    return np.sort(perm[:half]), np.sort(perm[half:])


def continuous(values: np.ndarray, bins: int = 5) -> dict[str, Any]:
    """Quantile bins of the reference (quintiles: with ten bins, PSI's sampling noise alone reaches 0.2 on
    windows of a hundred records)."""
    v = np.asarray(values, dtype=np.float64)
    edges = np.unique(np.quantile(v, np.linspace(0, 1, bins + 1)[1:-1])) if v.size else np.array([])
    counts = np.bincount(np.searchsorted(edges, v, side="right"), minlength=len(edges) + 1)
    return {"type": "continuous", "edges": [float(e) for e in edges],
            "fractions": [float(c) for c in counts / max(1, v.size)], "mean": float(v.mean()) if v.size else 0.0}


def build(kind: str, classes: list[str], summaries: dict[str, np.ndarray], idx: np.ndarray, probs: np.ndarray,
          tracked_terms: list[str], seed: int = 0) -> dict[str, Any]:
    pred = probs.argmax(axis=1)
    conf = probs.max(axis=1)
    rng = np.random.default_rng(seed)
    sample = conf if len(conf) <= SAMPLE else rng.choice(conf, SAMPLE, replace=False)
    features: dict[str, Any] = {}
    if kind == "text":
        features["length"] = continuous(summaries["length"][idx])
        features["oov_rate"] = continuous(summaries["oov_rate"][idx])
        terms = summaries["terms"][idx]
        for j, t in enumerate(tracked_terms):
            features[f"term:{t}"] = {"type": "binary", "p": float(terms[:, j].mean()) if len(idx) else 0.0}
    else:
        features["mean_intensity"] = continuous(summaries["mean"][idx])
        features["std_intensity"] = continuous(summaries["std"][idx])
        hist = summaries["hist"][idx]
        features["intensity_histogram"] = {"type": "histogram",
                                           "fractions": [float(x) for x in hist.mean(axis=0)] if len(idx) else []}
    return {
        "kind": kind,
        "n": int(len(idx)),
        "classes": classes,
        "predicted": {"counts": {c: int((pred == i).sum()) for i, c in enumerate(classes)}},
        "confidence": {"sample": [float(np.float32(x)) for x in sample], "mean": float(conf.mean()) if len(conf) else 0.0},
        "features": features,
        "tracked_terms": list(tracked_terms),
    }
