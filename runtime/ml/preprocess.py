"""Preprocessing with a transformation registry.

The training rows are the checked-out dataset version minus quarantined, unlabeled and conflicting items,
one row per content id. The spec is fitted on the training split only (vocabulary, idf, mean and std), then
train and test are transformed with the same interpreter the edge agent runs
(`edge_agent.proto.preprocessing`). Results are cached under `.cdl/artifacts/transforms/<key>/`, where key =
sha256(dataset version, its DVC hash, its quarantine, the transform spec): the second run with the same key
loads from the cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.proto.images import fit_image, image_channels
from edge_agent.proto.preprocessing import ImagePipeline, TextPipeline
from runtime.datasets import class_order, named_order
from runtime.domain.errors import CdlError, StepFailed
from runtime.workspace.dataset import DatasetView, IndexRow, decode_text
from runtime.workspace.workspace import Workspace

FORMAT = 2  # bump when the cached files change: older caches are not reused
ADDED_LATER = {"image_size": None}
MAX_SIDE = 256  # images: the longer side of the default size at most this (model.preprocess.image_size overrides)


@dataclass
class Prepared:
    key: str
    spec: dict[str, Any]
    classes: list[str]
    X_train: Any  # scipy.sparse.csr_matrix (text) or ndarray (N, H, W, C) float32 (images)
    y_train: np.ndarray
    X_test: Any
    y_test: np.ndarray
    uids_train: list[str]
    uids_test: list[str]
    reference: dict[str, Any]  # statistics of the training inputs (drift checks)
    cached: bool
    stats: dict[str, Any]
    summaries: dict[str, dict[str, np.ndarray]] = None  # per-item input summaries, "train"/"test"
    tracked_terms: list[str] = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.X_train.shape[1:])


def training_rows(ws: Workspace, version: str) -> tuple[DatasetView, dict[str, list[IndexRow]], dict[str, int]]:
    from runtime.datasets import version_view

    view = version_view(ws, version)
    quarantined = {q.item for q in ws.store.quarantine(version)}
    out: dict[str, list[IndexRow]] = {"train": [], "test": []}
    seen: set[str] = set()
    stats = {"quarantined": 0, "unlabeled": 0, "duplicates": 0}
    for r in view.rows:
        if r.uid in quarantined:
            stats["quarantined"] += 1
            continue
        if r.label is None:
            stats["unlabeled"] += 1
            continue
        if r.id in seen:
            stats["duplicates"] += 1
            continue
        seen.add(r.id)
        if r.split in out:
            out[r.split].append(r)
    return view, out, stats


def cache_key(ws: Workspace, version: str, params: dict[str, Any]) -> tuple[str, str]:
    v = ws.store.version(version)
    quarantine = sorted(q.item for q in ws.store.quarantine(version))
    # a parameter added later, at its default, keeps the caches made before it valid
    params = {k: v for k, v in params.items() if not (k in ADDED_LATER and v == ADDED_LATER[k])}
    named = named_order(ws)
    if named:  # the class order is part of what is fitted (no name: the keys made before it stay valid)
        params = {**params, "class_order": named}
    spec_hash = hashlib.sha256(json.dumps({"format": FORMAT, **params}, sort_keys=True).encode()).hexdigest()
    key = hashlib.sha256(json.dumps({"version": v.id, "dvc": v.dvc_hash, "quarantine": quarantine,
                                     "spec": spec_hash}, sort_keys=True).encode()).hexdigest()
    return key, spec_hash


def _fit_text(texts: list[str], p: dict[str, Any]) -> dict[str, Any]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer, TfidfTransformer

    spec: dict[str, Any] = {
        "type": "text",
        "lowercase": True,
        "token_pattern": r"(?u)\b[^\W\d_][^\W\d_]+\b",
        "stop_words": sorted(ENGLISH_STOP_WORDS) if p["stop_words"] else [],
        "stemmer": p["stemmer"],
        "weighting": "tfidf" if p["tfidf"] else "count",
        "sublinear_tf": bool(p["sublinear_tf"]),
        "norm": p["norm"],
        "binary": False,
    }
    tp = TextPipeline({**spec, "vocabulary": {}})
    docs = [tp.tokens(t) for t in texts]
    if not any(docs):  # scikit-learn said "empty vocabulary; perhaps the documents only contain stop words"
        raise CdlError(f"none of the {len(texts)} training texts has a word to count: a word is a run of two or "
                       "more letters (digits and punctuation split words: 'w123' and '42' are none)"
                       + (", stop words aside (model.preprocess.stop_words: false keeps them)"
                          if p["stop_words"] else ""))
    cv = CountVectorizer(analyzer=lambda d: d, max_features=p["vocab_size"], min_df=p["min_df"])
    try:
        counts = cv.fit_transform(docs)
    except ValueError as exc:  # "After pruning, no terms remain"
        raise CdlError(f"no word occurs in {p['min_df']} or more of the {len(texts)} training texts "
                       f"(model.preprocess.min_df: {p['min_df']}); lower min_df ({exc})") from None
    vocab = {t: int(i) for t, i in sorted(cv.vocabulary_.items(), key=lambda kv: kv[1])}
    spec["vocabulary"] = vocab
    if p["tfidf"]:
        tf = TfidfTransformer(smooth_idf=True, norm=None).fit(counts)
        spec["idf"] = [float(x) for x in tf.idf_]
    else:
        spec["idf"] = None
    return spec


def _texts(view: DatasetView, rows: list[IndexRow], errors: str) -> list[str]:
    return [decode_text(view.read_bytes(r), errors)[0] for r in rows]


def _text_matrix(tp: TextPipeline, texts: list[str]):  # noqa: ANN202
    from scipy.sparse import csr_matrix

    data, indices, indptr, stats = tp.counts_csr(texts)
    return csr_matrix((data, indices, indptr), shape=(len(texts), tp.size), dtype=np.float32), stats


def _text_summaries(tp: TextPipeline, texts: list[str], tracked: list[str]) -> dict[str, np.ndarray]:
    """Per-item input summaries, computed by the same code the device runs on every request."""
    rows = [tp.summarize(t, tracked) for t in texts]
    index = {t: i for i, t in enumerate(tracked)}
    terms = np.zeros((len(rows), len(tracked)), dtype=bool)
    for i, r in enumerate(rows):
        for t in r["terms"]:
            terms[i, index[t]] = True
    return {"length": np.array([r["length"] for r in rows], np.float32),
            "oov_rate": np.array([r["oov_rate"] for r in rows], np.float32), "terms": terms}


def _image_summaries(raw: np.ndarray) -> dict[str, np.ndarray]:
    """Vectorised twin of ImagePipeline.summarize (same definitions, tested against it)."""
    if len(raw) == 0:
        return {"mean": np.zeros(0, np.float32), "std": np.zeros(0, np.float32), "hist": np.zeros((0, 10), np.float32)}
    flat = raw.reshape(len(raw), -1).astype(np.float32) / 255.0
    bins = np.minimum((flat * 10).astype(np.int64), 9)
    hist = np.stack([(bins == b).mean(axis=1) for b in range(10)], axis=1).astype(np.float32)
    return {"mean": flat.mean(axis=1), "std": flat.std(axis=1), "hist": hist}


def _reference(kind: str, stats: dict[str, Any], X: Any, y: np.ndarray, classes: list[str],
               spec: dict[str, Any]) -> dict[str, Any]:
    """Reference statistics of the training inputs, for drift checks on a device's scoring data."""
    ref: dict[str, Any] = {"n": int(len(y)), "class_counts": {c: int((y == i).sum()) for i, c in enumerate(classes)}}
    if kind == "text":
        ref["length"] = _quantiles(np.asarray(stats["length"], float))
        ref["oov_rate"] = _quantiles(np.asarray(stats["oov_rate"], float))
        col = np.asarray((X > 0).sum(axis=0)).ravel()
        top = np.argsort(-col)[:20]
        inv = {i: t for t, i in spec["vocabulary"].items()}
        ref["frequent_terms"] = {inv[int(j)]: float(col[j] / max(1, X.shape[0])) for j in top}
    else:
        ref["mean_intensity"] = _quantiles(np.asarray(stats["mean"], float))
        ref["std_intensity"] = _quantiles(np.asarray(stats["std"], float))
        flat = np.asarray(stats["mean"], float)
        ref["intensity_histogram"] = np.histogram(flat, bins=10, range=(0, 1))[0].tolist()
    return ref


def _quantiles(a: np.ndarray) -> dict[str, Any]:
    if a.size == 0:
        return {"n": 0}
    edges = np.quantile(a, np.linspace(0, 1, 11)).tolist()
    return {"n": int(a.size), "mean": float(a.mean()), "std": float(a.std()), "deciles": edges}


def prepare(ws: Workspace, version: str, params: dict[str, Any], log=print) -> Prepared:  # noqa: ANN001
    """Load from the transformation registry, or fit, transform and cache."""
    key, spec_hash = cache_key(ws, version, params)
    root = ws.root / ".cdl" / "artifacts" / "transforms" / key
    rec = ws.store.get_transform(key)
    if rec is not None and _complete(root):
        log(f"cache hit: transform {key[:12]} ({version}, spec {spec_hash[:12]}) loaded from the transformation registry")
        return _load(root, key, cached=True)
    view, rows, stats = training_rows(ws, version)
    if not rows["train"]:
        raise StepFailed("model.preprocess", f"{version} has no labeled training items")
    classes = class_order(named_order(ws), {r.label for r in rows["train"]})
    known = set(classes)
    dropped = [r for r in rows["test"] if r.label not in known]
    if dropped:
        log(f"{len(dropped)} test item(s) have a class the training split lacks; they are left out")
        rows["test"] = [r for r in rows["test"] if r.label in known]
    index = {c: i for i, c in enumerate(classes)}
    y_train = np.array([index[r.label] for r in rows["train"]], np.int64)
    y_test = np.array([index[r.label] for r in rows["test"]], np.int64)
    kind = rows["train"][0].kind
    tracked: list[str] = []
    if kind == "text":
        errors = params["decode_errors"]
        train_texts = _texts(view, rows["train"], errors)
        test_texts = _texts(view, rows["test"], errors)
        spec = _fit_text(train_texts, params)  # fitted on the training split only
        tp = TextPipeline(spec)
        X_train, tstats = _text_matrix(tp, train_texts)
        X_test, _ = _text_matrix(tp, test_texts)
        df = np.asarray((X_train > 0).sum(axis=0)).ravel()
        inv = {i: t for t, i in spec["vocabulary"].items()}
        tracked = [inv[int(j)] for j in np.argsort(-df, kind="stable")[:20]]
        summaries = {"train": _text_summaries(tp, train_texts, tracked), "test": _text_summaries(tp, test_texts, tracked)}
    else:
        raw_train, (h, w, c) = _training_images(view, rows["train"], params.get("image_size"), log)
        raw_test = view.images(rows["test"], (h, w, c))
        spec = {"type": "image", "height": int(h), "width": int(w), "channels": int(c), "scale": 1.0 / 255.0,
                "mean": None, "std": None, "layout": "NHWC"}
        if params["standardize"]:
            scaled = raw_train.astype(np.float32) / 255.0
            spec["mean"], spec["std"] = float(scaled.mean()), float(scaled.std())
        ip = ImagePipeline(spec)
        X_train, tstats = ip.transform(raw_train)
        X_test = ip.transform(raw_test)[0] if len(raw_test) else np.zeros((0, h, w, c), np.float32)
        summaries = {"train": _image_summaries(raw_train), "test": _image_summaries(raw_test)}
    reference = _reference(kind, tstats, X_train, y_train, classes, spec)
    out_stats = {**stats, "train": int(len(y_train)), "test": int(len(y_test)), "classes": len(classes),
                 "features": int(np.prod(X_train.shape[1:])), "kind": kind}
    prepared = Prepared(key, spec, classes, X_train, y_train, X_test, y_test, [r.uid for r in rows["train"]],
                        [r.uid for r in rows["test"]], reference, False, out_stats, summaries, tracked)
    _save(root, prepared)
    ws.store.put_transform(key, version, spec_hash, params, str(root.relative_to(ws.root)), out_stats)
    log(f"transform {key[:12]} fitted on {len(y_train)} training items and cached")
    return prepared


def test_inputs_under(ws: Workspace, version: str, uids: list[str], fitted: Prepared, params: dict[str, Any]) -> Any:
    """The test items `uids` of dataset `version`, read from the version and transformed with another fitted
    transform (`fitted`, made with preprocess `params`): how a model trained on other data sees this test split."""
    view, rows, _ = training_rows(ws, version)
    by_uid = {r.uid: r for r in rows["test"]}
    missing = [u for u in uids if u not in by_uid]
    if missing:
        raise StepFailed("model.evaluate", f"{len(missing)} test item(s) of {version} are no longer in its test split "
                         f"(quarantined since?), e.g. {missing[0]}")
    return rows_under(view, [by_uid[u] for u in uids], fitted.spec, params.get("decode_errors", "replace"))


def rows_under(view: DatasetView, rows: list[IndexRow], spec: dict[str, Any], errors: str = "replace") -> Any:
    """The model input of dataset rows under a fitted preprocessing spec: a CSR matrix of texts, or images
    (N, H, W, C) float32."""
    if spec["type"] == "text":
        X, _ = _text_matrix(TextPipeline(spec), _texts(view, rows, errors))
        return X
    if not rows:
        return np.zeros((0, int(spec["height"]), int(spec["width"]), int(spec.get("channels", 1))), np.float32)
    shape = (int(spec["height"]), int(spec["width"]), int(spec.get("channels", 1)))
    return ImagePipeline(spec).transform(view.images(rows, shape))[0]


def has_colour(a: np.ndarray, tolerance: int = 2) -> bool:
    """Whether an image has colour: three channels or more, not all equal (to `tolerance`, a JPEG's rounding). A
    folder of grey product photos with a few saved as RGB JPEGs made every image RGB, three times the features for
    the same pictures."""
    if a.ndim != 3 or a.shape[-1] < 3:
        return False
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    if np.array_equal(r, g) and np.array_equal(g, b):  # the common case, without a copy
        return False
    return any(int(np.abs(x.astype(np.int32) - y).max(initial=0)) > tolerance for x, y in ((r, g), (g, b)))


def _training_images(view: DatasetView, rows: list[IndexRow], size: list[int] | None, log: Any
                     ) -> tuple[np.ndarray, tuple[int, int, int]]:  # noqa: ANN401
    """The training images as one (N, H, W, C) uint8 array, and that shape. Photos of many sizes and modes (a
    folder of JPEGs and PNGs) made np.stack fail ("all input arrays must have the same shape"): they are resized
    to `size` ([height, width]; by default the size at least half of them have, else the median, its longer side
    at most MAX_SIDE; images of one size keep it) and converted to RGB where any has colour (grayscale
    otherwise: an RGB picture whose channels are equal has none), and the log says how many were."""
    raw = view.raw_images(rows)
    if isinstance(raw, np.ndarray):  # npy packs (idx files): one shape by construction
        if raw.ndim == 3:
            raw = raw[..., None]
        if size is None or tuple(size) == raw.shape[1:3]:
            return raw, tuple(int(v) for v in raw.shape[1:])  # type: ignore[return-value]
        raw = list(raw)
    from collections import Counter

    sizes = Counter(a.shape[:2] for a in raw)
    c = 3 if any(has_colour(a) for a in raw) else 1
    if size is not None:
        (h, w), how = (int(v) for v in size), "model.preprocess.image_size"
    elif len(sizes) == 1:  # one size, as before: kept whatever it is
        (h, w), how = next(iter(sizes)), ""
    else:
        common, n = sizes.most_common(1)[0]
        if 2 * n >= len(raw):
            (h, w), how = common, "the most common size"
        else:  # photos of many sizes: no size is "the" size
            h, w = (int(np.median([hw[i] for hw in sizes.elements()])) for i in (0, 1))
            how = "the median size"
        if max(h, w) > MAX_SIDE:  # a 4000x3000 photo is no CNN input on a CPU; Keras resizes to 256x256
            k = MAX_SIDE / max(h, w)
            h, w, how = max(1, round(h * k)), max(1, round(w * k)), f"{how}, scaled to {MAX_SIDE} pixels a side"
        how += "; model.preprocess.image_size sets another"
    resized = sum(n for hw, n in sizes.items() if hw != (h, w))
    if resized:
        log(f"{resized} of {len(raw)} training image(s) resized to {h}x{w} ({how}; {len(sizes)} size(s) in the "
            "split); test images and devices' inputs get the same size")
    converted = sum(1 for a in raw if image_channels(a) != c)
    if converted:
        why = "" if c == 3 else " (their colour channels are equal: grey pictures saved as RGB)"
        log(f"{converted} of {len(raw)} training image(s) converted to {'RGB' if c == 3 else 'grayscale'}"
            + (why if any(image_channels(a) >= 3 for a in raw) else ""))
    return np.stack([fit_image(a, (h, w, c)) for a in raw]), (h, w, c)


def _save(root: Path, p: Prepared) -> None:
    tmp = root.with_name(f"{root.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if p.stats["kind"] == "text":
        from scipy.sparse import save_npz

        save_npz(tmp / "X_train.npz", p.X_train)
        save_npz(tmp / "X_test.npz", p.X_test)
    else:
        np.save(tmp / "X_train.npy", p.X_train)
        np.save(tmp / "X_test.npy", p.X_test)
    np.save(tmp / "y_train.npy", p.y_train)
    np.save(tmp / "y_test.npy", p.y_test)
    for split, arrays in p.summaries.items():
        np.savez(tmp / f"summaries_{split}.npz", **arrays)
    meta = {"format": FORMAT, "key": p.key, "spec": p.spec, "classes": p.classes, "uids_train": p.uids_train,
            "uids_test": p.uids_test, "reference": p.reference, "stats": p.stats, "tracked_terms": p.tracked_terms}
    (tmp / "meta.json").write_text(json.dumps(meta))
    shutil.rmtree(root, ignore_errors=True)
    try:
        tmp.rename(root)
    except OSError:  # another process (a tuning worker) saved the same transform a moment ago: same bytes
        shutil.rmtree(tmp, ignore_errors=True)


def _load(root: Path, key: str, cached: bool) -> Prepared:
    meta = json.loads((root / "meta.json").read_text())
    if meta["stats"]["kind"] == "text":
        from scipy.sparse import load_npz

        X_train, X_test = load_npz(root / "X_train.npz").astype(np.float32), load_npz(root / "X_test.npz").astype(np.float32)
    else:
        X_train, X_test = np.load(root / "X_train.npy"), np.load(root / "X_test.npy")
    summaries = {}
    for split in ("train", "test"):
        with np.load(root / f"summaries_{split}.npz") as z:
            summaries[split] = {k: z[k] for k in z.files}
    return Prepared(key, meta["spec"], meta["classes"], X_train, np.load(root / "y_train.npy"), X_test,
                    np.load(root / "y_test.npy"), meta["uids_train"], meta["uids_test"], meta["reference"],
                    cached, meta["stats"], summaries, meta.get("tracked_terms") or [])


def _complete(root: Path) -> bool:
    return (root / "meta.json").exists() and (root / "summaries_train.npz").exists()


def load_transform(ws: Workspace, key: str, log=None) -> Prepared:  # noqa: ANN001
    """A registered transform's tensors, from the cache; where `cdl gc` dropped them (or they were made by an older
    release), fitted again from the dataset version and parameters the registry recorded: the same rows and the
    same fit give the same key and the same tensors."""
    rec = ws.store.get_transform(key)
    if rec is None:
        raise StepFailed("model.preprocess", f"transform {key[:12]} is not in the transformation registry: run "
                         "model.preprocess again")
    root = ws.root / rec.path
    if _complete(root):
        return _load(root, key, cached=True)
    return rebuild_transform(ws, key, log)


def transform_spec(ws: Workspace, key: str, log=None) -> dict[str, Any]:  # noqa: ANN001
    """A registered transform's fitted preprocessing spec (vocabulary, normalisation), without loading its
    tensors where they are cached."""
    rec = ws.store.get_transform(key)
    if rec is not None and _complete(ws.root / rec.path):
        return json.loads((ws.root / rec.path / "meta.json").read_text())["spec"]
    return load_transform(ws, key, log).spec


def rebuild_transform(ws: Workspace, key: str, log=None) -> Prepared:  # noqa: ANN001
    rec = ws.store.get_transform(key)
    try:
        again, _ = cache_key(ws, rec.dataset_version, rec.spec)
    except CdlError as exc:
        raise StepFailed("model.preprocess", f"transform {key[:12]} is not cached and cannot be fitted again: "
                         f"{exc}") from None
    if again != key:
        raise StepFailed("model.preprocess", f"transform {key[:12]} is not cached and cannot be fitted again: "
                         f"dataset version {rec.dataset_version}'s data or quarantine, or the transform format, "
                         f"changed since it was made (it would now be {again[:12]}); run model.preprocess on the "
                         "version you want")
    (log or (lambda _m: None))(f"transform {key[:12]} is not cached: fitting it again from {rec.dataset_version}")
    try:
        return prepare(ws, rec.dataset_version, rec.spec, log=log or (lambda _m: None))
    except (CdlError, KeyError) as exc:
        raise StepFailed("model.preprocess", f"transform {key[:12]} is not cached and cannot be fitted again from "
                         f"{rec.dataset_version}: {exc}") from None
