"""The bundle's preprocessing, as data, and its reference interpreter.

A bundle carries a preprocessing spec (JSON, no code). The runtime fits it (vocabulary, idf weights,
normalisation constants) and transforms its training data with this same interpreter, and the edge agent
applies it to every request: so a model sees on a device exactly what it saw in training. Needs numpy and,
for Porter stemming, nltk (pure Python, no downloads).

Text spec:
    {"type": "text", "lowercase": true, "token_pattern": "(?u)\\b\\w\\w+\\b", "stop_words": [...],
     "stemmer": "porter" | null, "vocabulary": {"term": index, ...}, "weighting": "count" | "tfidf",
     "idf": [...] | null, "sublinear_tf": false, "norm": "l2" | "l1" | null, "binary": false}
Image spec:
    {"type": "image", "height": 28, "width": 28, "channels": 1, "scale": 0.00392156862745098,
     "mean": null | float, "std": null | float, "layout": "NHWC" | "NCHW" | "flat"}
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

STEMMERS = ("porter", None)


@lru_cache(maxsize=4)
def _stemmer(name: str):  # noqa: ANN202
    if name == "porter":
        from nltk.stem import PorterStemmer

        return PorterStemmer()
    raise ValueError(f"unknown stemmer {name!r} (known: porter)")


class TextPipeline:
    def __init__(self, spec: dict[str, Any]):
        if spec.get("type") != "text":
            raise ValueError("not a text preprocessing spec")
        self.spec = spec
        self._re = re.compile(spec.get("token_pattern") or r"(?u)\b\w\w+\b")
        self._stop = frozenset(spec.get("stop_words") or ())
        self._lower = bool(spec.get("lowercase", True))
        self._stem_name = spec.get("stemmer")
        self._stem_cache: dict[str, str] = {}
        self.vocabulary: dict[str, int] = dict(spec.get("vocabulary") or {})
        idf = spec.get("idf")
        self._idf = np.asarray(idf, dtype=np.float32) if idf is not None else None

    @property
    def size(self) -> int:
        return len(self.vocabulary)

    def tokens(self, text: str) -> list[str]:
        if self._lower:
            text = text.lower()
        toks = [t for t in self._re.findall(text) if t not in self._stop]
        if not self._stem_name:
            return toks
        stem = _stemmer(self._stem_name).stem
        cache = self._stem_cache
        out = []
        for t in toks:
            s = cache.get(t)
            if s is None:
                s = stem(t)
                cache[t] = s
            out.append(s)
        return out

    def counts_csr(self, texts: Sequence[str], token_lists: Sequence[list[str]] | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """(data, indices, indptr) of the weighted matrix, plus per-text stats (length, out-of-vocabulary
        rate) that drift checks use. token_lists: the texts' tokens, when the caller has them already."""
        vocab = self.vocabulary
        data: list[float] = []
        indices: list[int] = []
        indptr = [0]
        lengths, oov = [], []
        for n, text in enumerate(texts):
            toks = token_lists[n] if token_lists is not None else self.tokens(text)
            row: dict[int, float] = {}
            miss = 0
            for t in toks:
                j = vocab.get(t)
                if j is None:
                    miss += 1
                    continue
                row[j] = row.get(j, 0.0) + 1.0
            lengths.append(len(toks))
            oov.append(miss / len(toks) if toks else 0.0)
            cols = np.fromiter(sorted(row), dtype=np.int32, count=len(row))
            vals = np.array([row[c] for c in cols], dtype=np.float32)
            vals = self._weight(cols, vals)
            indices.extend(cols.tolist())
            data.extend(vals.tolist())
            indptr.append(len(indices))
        return (np.asarray(data, np.float32), np.asarray(indices, np.int32), np.asarray(indptr, np.int64),
                {"length": lengths, "oov_rate": oov})

    def _weight(self, cols: np.ndarray, vals: np.ndarray) -> np.ndarray:
        s = self.spec
        if s.get("binary"):
            vals = np.minimum(vals, 1.0)
        if s.get("sublinear_tf"):
            vals = 1.0 + np.log(vals)
        if s.get("weighting") == "tfidf" and self._idf is not None and len(cols):
            vals = vals * self._idf[cols]
        norm = s.get("norm")
        if norm and len(vals):
            n = float(np.sqrt((vals * vals).sum())) if norm == "l2" else float(np.abs(vals).sum())
            if n > 0:
                vals = vals / n
        return vals.astype(np.float32)

    def summarize(self, text: str, tracked_terms: Sequence[str] = (), tokens: list[str] | None = None) -> dict[str, Any]:
        """What a scoring record keeps of a text (drift checks compare it with the bundle's reference):
        token count, out-of-vocabulary rate, which tracked frequent terms occur."""
        toks = tokens if tokens is not None else self.tokens(text)
        present = set(toks)
        oov = sum(1 for t in toks if t not in self.vocabulary) / len(toks) if toks else 0.0
        return {"length": len(toks), "oov_rate": round(oov, 4), "terms": [t for t in tracked_terms if t in present]}

    def process(self, texts: Sequence[str], tracked_terms: Sequence[str] = ()) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """The model's input and each text's summary, tokenizing every text once (what a device does per request)."""
        token_lists = [self.tokens(t) for t in texts]
        x, stats = self.transform(texts, token_lists)  # its counts already give each text's length and OOV rate
        summaries = []
        for toks, n, oov in zip(token_lists, stats["length"], stats["oov_rate"], strict=True):
            present = set(toks)
            summaries.append({"length": n, "oov_rate": round(oov, 4), "terms": [t for t in tracked_terms if t in present]})
        return x, summaries

    def transform(self, texts: Sequence[str], token_lists: Sequence[list[str]] | None = None
                  ) -> tuple[np.ndarray, dict[str, Any]]:
        """Dense float32 (n, vocabulary size): what the model's input takes."""
        data, indices, indptr, stats = self.counts_csr(texts, token_lists)
        out = np.zeros((len(texts), self.size), dtype=np.float32)
        for i in range(len(texts)):
            a, b = indptr[i], indptr[i + 1]
            out[i, indices[a:b]] = data[a:b]
        return out, stats


class ImagePipeline:
    def __init__(self, spec: dict[str, Any]):
        if spec.get("type") != "image":
            raise ValueError("not an image preprocessing spec")
        self.spec = spec
        self.height = int(spec["height"])
        self.width = int(spec["width"])
        self.channels = int(spec.get("channels", 1))

    def check_shape(self, arr: np.ndarray) -> np.ndarray:
        """Accept (H, W), (H, W, C), (N, H, W) or (N, H, W, C); returns (N, H, W, C)."""
        arr = np.asarray(arr)
        sent = list(arr.shape)
        if arr.ndim == 2:
            arr = arr[None, :, :, None]
        elif arr.ndim == 3:
            arr = arr[None] if arr.shape[-1] == self.channels and arr.shape[:2] == (self.height, self.width) \
                else arr[..., None]
        if arr.ndim != 4 or arr.shape[1:] != (self.height, self.width, self.channels):
            h, w, c = self.height, self.width, self.channels
            raise ValueError(f"shape {sent} is not a batch of {h}x{w}x{c} images: send [N, {h}, {w}, {c}]"
                             + (f", [N, {h}, {w}]" if c == 1 else "") + f" or one image [{h}, {w}, {c}]")
        return arr

    def normalize(self, nhwc: np.ndarray) -> np.ndarray:
        x = nhwc.astype(np.float32) * np.float32(self.spec.get("scale", 1.0))
        mean, std = self.spec.get("mean"), self.spec.get("std")
        if mean is not None and std:
            x = (x - np.float32(mean)) / np.float32(std)
        return x

    def layout(self, x: np.ndarray, layout: str | None = None) -> np.ndarray:
        layout = layout or self.spec.get("layout", "NHWC")
        if layout == "NCHW":
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        if layout == "flat":
            return x.reshape(len(x), -1)
        return x

    def summarize(self, image: np.ndarray) -> dict[str, Any]:
        """What a scoring record keeps of an image: mean and standard deviation of intensity in [0, 1], and a
        10-bin intensity histogram (fractions)."""
        a = np.asarray(image, dtype=np.float32)
        if a.max(initial=0) > 1.0:
            a = a / 255.0
        hist = np.histogram(a, bins=10, range=(0.0, 1.0))[0] / max(1, a.size)
        return {"mean": round(float(a.mean()), 5), "std": round(float(a.std()), 5),
                "hist": [round(float(h), 5) for h in hist]}

    def transform(self, images: np.ndarray) -> tuple[np.ndarray, dict[str, Any]]:
        raw = self.check_shape(images)
        x = self.layout(self.normalize(raw))
        flat = raw.reshape(len(raw), -1).astype(np.float32) / 255.0
        stats = {"mean": flat.mean(axis=1).tolist(), "std": flat.std(axis=1).tolist()}
        return x, stats


def pipeline(spec: dict[str, Any]) -> TextPipeline | ImagePipeline:
    if spec.get("type") == "text":
        return TextPipeline(spec)
    if spec.get("type") == "image":
        return ImagePipeline(spec)
    raise ValueError(f"unknown preprocessing type {spec.get('type')!r}")
