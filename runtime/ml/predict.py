"""Predictions of registered model versions straight from their checkpoints (`cdl models predict`, the review
panel's Try…), as `mlflow models predict` does: a candidate can be tried before it is exported, packaged or
served. Each version applies its own fitted preprocessing, the same the bundle would carry to a device."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from runtime.domain.errors import CdlError
from runtime.workspace.workspace import Workspace


def predict_items(ws: Workspace, ref: str, texts: list[str] = (), files: list[Path] = (),
                  variant: str | None = None, log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Texts and text files (a text model), or image files (an image model: converted and resized to its input)
    through model version `ref`: [{"input", "label", "confidence", "probabilities": {class: p}}], one per input.
    With `variant` (fp32, dynamic_int8, ...), through that ONNX variant in onnxruntime instead of the checkpoint,
    with the same preprocessing, as a device would run it. log: what takes time, a transform `cdl gc` dropped
    fitted again (ten seconds for Fashion-MNIST, without a word)."""
    from edge_agent.proto.preprocessing import TextPipeline, pipeline
    from runtime.ml.preprocess import transform_spec

    mv, onnx = _version(ws, ref, variant)
    if not texts and not files:
        raise CdlError("nothing to predict: give --text TEXT or --file PATH")
    for f in files:
        if not Path(f).is_file():
            raise CdlError(f"{f}: no such file")
    pipe = pipeline(transform_spec(ws, mv.transform, log))
    if isinstance(pipe, TextPipeline):
        items = [*texts, *(_text_file(mv.ref, Path(f)) for f in files)]
        names = [t[:60] for t in texts] + [str(f) for f in files]
        X, stats = pipe.transform(items)
        return _known_words(_answers(mv, names, _probabilities(ws, mv, onnx, X)), stats)
    else:
        if texts:
            raise CdlError(f"{mv.ref} is an image model: give image files with --file, not --text")
        from runtime.serve import read_images

        names = [str(f) for f in files]
        X = _image_input(pipe, mv, onnx, read_images(list(files), pipe.height, pipe.width, pipe.channels))
    return _answers(mv, names, _probabilities(ws, mv, onnx, X))


def _version(ws: Workspace, ref: str, variant: str | None) -> tuple[Any, Path | None]:
    """The model version, and its variant's ONNX file where one is named."""
    mv = ws.store.resolve_model(ref)
    if variant is None:
        return mv, None
    from runtime.bundles import built_variant

    return mv, ws.artifacts.get(built_variant(ws, mv, variant).artifact)


def _image_input(pipe: Any, mv: Any, onnx: Path | None, raw: np.ndarray) -> np.ndarray:  # noqa: ANN401
    """Fitted (N, H, W, C) uint8 images as the checkpoint's input, or the ONNX variant's: normalized, then the
    exported model's layout."""
    if onnx is None:
        return pipe.transform(raw)[0]
    from runtime.ml.onnx_tools import layout_input

    return layout_input(pipe.normalize(pipe.check_shape(raw)), mv.extra["arch"]["layout"])


def _probabilities(ws: Workspace, mv: Any, onnx: Path | None, X: np.ndarray) -> np.ndarray:  # noqa: ANN401
    if onnx is not None:
        from runtime.ml import onnx_tools

        return onnx_tools.predict(onnx_tools.session(onnx), X)
    from runtime.ml.versus import predict_proba

    return np.asarray(predict_proba(ws, mv, X))


def _known_words(answers: list[dict[str, Any]], stats: dict[str, Any]) -> list[dict[str, Any]]:
    """Each text's answer with `known_words`: how many of its words (after the model's tokenizing and stemming) are
    in the model's vocabulary. An empty text, or one of words the model never saw, was given a class with a
    confidence (business 0.83 for "") like any article: with 0 known words the answer is the model's guess for
    nothing, which callers now say."""
    for a, k in zip(answers, _known(stats), strict=True):
        a["known_words"] = k
    return answers


def _known(stats: dict[str, Any]) -> list[int]:
    return [int(round(n * (1.0 - oov))) for n, oov in zip(stats["length"], stats["oov_rate"], strict=True)]


def known_words(ws: Workspace, ref: str, texts: list[str]) -> list[int] | None:
    """How many words of each text model version `ref` (NAME:VERSION; its variants share its preprocessing) knows;
    None for an image model. For answers that came from elsewhere (an agent)."""
    from edge_agent.proto.preprocessing import TextPipeline, pipeline
    from runtime.ml.preprocess import transform_spec

    mv = ws.store.resolve_model(ref)
    pipe = pipeline(transform_spec(ws, mv.transform))
    if not isinstance(pipe, TextPipeline):
        return None
    return _known(pipe.transform(list(texts))[1])


def unknown_texts(preds: list[dict[str, Any]]) -> int:
    """How many answers were for a text with no word the model knows."""
    return sum(p.get("known_words") == 0 for p in preds)


NO_KNOWN_WORD = "no word the model knows: its guess for an empty text"


def _answers(mv: Any, names: list[str], probs: np.ndarray) -> list[dict[str, Any]]:  # noqa: ANN401
    return [{"input": name, "label": mv.classes[int(p.argmax())], "confidence": float(p.max()),
             "probabilities": {c: float(p[i]) for i, c in enumerate(mv.classes)}} for name, p in zip(names, probs,
                                                                                                  strict=True)]


BATCH = 2048  # items a model call: the model is loaded each call, and a batch of texts is (BATCH, vocabulary)


def predict_source(ws: Workspace, ref: str, path: Path, options: dict[str, Any] | None = None,
                   variant: str | None = None, progress: Any = None,  # noqa: ANN401
                   note: Callable[[str], None] | None = None,
                   log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Every item of a data file or folder, as `mlflow models predict -i FILE` scores a file: a CSV or JSON Lines
    file's text column (found as data.import finds it, or `text_column`), every file of a folder or zip (text
    files, or images converted and resized to the model's input), idx files, a Label Studio export. Read by
    data.import's own readers, labels and all: each answer also has `given` (the item's label in the file, or
    None). In batches of BATCH; progress(done, total) after each; note(text) for what the reader left out or
    read so, as data.import logs it (a folder's notes.txt beside its images was left out without a word); log as
    predict_items' log."""
    from edge_agent.proto.preprocessing import TextPipeline, pipeline
    from runtime.ml.preprocess import transform_spec
    from runtime.serve import image_input
    from runtime.steps.sources import check_kind_options, detect_kind, folder_classes, read_source
    from runtime.workspace.dataset import decode_text

    mv, onnx = _version(ws, ref, variant)
    cfg = ws.config()
    kind = detect_kind(Path(path))
    check_kind_options(Path(path), kind, options or {})  # --text-column on a folder did nothing
    batch = read_source(Path(path), kind, {**_source_options(ws, cfg, Path(path)), **(options or {}),
                                           "unlabeled": True}, cfg.labeling)
    if note is not None:
        for n in batch.notes:
            note(n)
    pipe = pipeline(transform_spec(ws, mv.transform, log))
    text = isinstance(pipe, TextPipeline)
    if text != (batch.item_kind == "text"):
        raise CdlError(f"{path}: {'images' if text else 'texts'} ({batch.kind}), but {mv.ref} is "
                       f"{'a text' if text else 'an image'} model")
    out: list[dict[str, Any]] = []
    items = batch.items
    if text and "folder" in batch.kind:  # a photo among the articles was scored as one ("sport 0.879")
        binary = {it.key for it in items if _not_text(it.payload) is not None}
        if binary and note is not None:
            note(f"ignored {len(binary)} file(s) that are no text (an image or a binary file): "
                 f"{', '.join(sorted(binary)[:3])}{', …' if len(binary) > 3 else ''}")
        items = [it for it in items if it.key not in binary]
        if not items:
            raise CdlError(f"{path}: no text file to score: {mv.ref} is a text model")
    # a folder's or zip's class folders, as data.import reads them labeled
    classes = folder_classes([it.key for it in items if "/" in it.key])[0] if "folder" in batch.kind else {}
    for start in range(0, len(items), BATCH):
        chunk = items[start:start + BATCH]
        stats = None
        if text:
            X, stats = pipe.transform([decode_text(it.payload)[0] for it in chunk])
        else:
            size = (pipe.height, pipe.width, pipe.channels)
            raw = [image_input(batch.array[start + k] if batch.array is not None else it.payload, size,
                               f"{path}: {it.key}") for k, it in enumerate(chunk)]
            X = _image_input(pipe, mv, onnx, np.stack(raw))
        answers = _answers(mv, [it.key for it in chunk], _probabilities(ws, mv, onnx, X))
        if stats is not None:
            _known_words(answers, stats)
        for it, a in zip(chunk, answers, strict=True):
            a["given"] = it.label if it.label is not None else classes.get(it.key, (None,))[0]
        out += answers
        if progress is not None:
            progress(len(out), len(items))
    return out


def _text_file(ref: str, path: Path) -> str:
    """A text file's text. An image or other binary file (NUL bytes, or an image's magic number) was decoded as
    text and given a class with a confidence, as if it were an article."""
    from runtime.workspace.dataset import decode_text

    data = path.read_bytes()
    if (what := _not_text(data)) is not None:
        raise CdlError(f"{path}: {what}, not text: {ref} is a text model (--file takes text files here)")
    return decode_text(data)[0]


def _not_text(data: bytes) -> str | None:
    """"an image" or "a binary file" (an image's magic number, or NUL bytes), None for text."""
    image = data[:8].startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")) or (
        data[:4] in (b"RIFF",) and data[8:12] == b"WEBP")
    utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")  # its NUL bytes are text: decode_text reads it
    if image or (b"\x00" in data[:8192] and not utf16):
        return "an image" if image else "a binary file"
    return None


def agreement(preds: list[dict[str, Any]]) -> dict[str, Any]:
    """How predict_source's answers agree with the labels the input gives: {"items", "labeled" (labels that are
    classes of the model), "agree", "accuracy" (None without labels), "other_labels": {label: count}}."""
    from collections import Counter

    classes = set(preds[0]["probabilities"]) if preds else set()
    given = [p for p in preds if p.get("given") in classes]
    agree = sum(p["label"] == p["given"] for p in given)
    other = Counter(p["given"] for p in preds if p.get("given") is not None and p["given"] not in classes)
    return {"items": len(preds), "labeled": len(given), "agree": agree,
            "accuracy": agree / len(given) if given else None, "other_labels": dict(other.most_common())}


def _source_options(ws: Workspace, cfg: Any, path: Path) -> dict[str, Any]:  # noqa: ANN401
    """The options cdl.yaml gives the same source (its class_names, text_column, ...): Fashion-MNIST's idx
    labels are class numbers, which its class_names name."""
    from runtime.steps.data import normalize_source

    want = path.expanduser().resolve()
    for i, entry in enumerate(cfg.params("data.import")["sources"]):
        src = normalize_source(entry, f"sources[{i}]")
        p = Path(src["path"]).expanduser()
        if (p if p.is_absolute() else ws.root / p).resolve() == want:
            return {k: v for k, v in src.items() if k not in ("path", "kind", "unlabeled")}
    return {}


def write_predictions(rows: list[dict[str, Any]], dest: Path) -> None:
    """Predictions as CSV (.csv, .tsv) or JSON Lines (anything else): model, input, the file's label where it had
    one, label, confidence and each class's probability, and a text model's known_words (0: no word the model
    knows, the answer is its guess for an empty text). Written whole or not at all (a temporary file renamed)."""
    import csv
    import io
    import json

    from runtime.workspace.config import atomic_write_bytes

    dest = Path(dest)
    classes = list(dict.fromkeys(c for r in rows for c in r["probabilities"]))
    given = any(r.get("given") is not None for r in rows)
    known = any("known_words" in r for r in rows)
    if dest.suffix.lower() in (".csv", ".tsv"):
        buf = io.StringIO()
        w = csv.writer(buf, delimiter="\t" if dest.suffix.lower() == ".tsv" else ",")
        w.writerow(["model", "input", *(["given"] if given else []), "label", "confidence", *classes,
                    *(["known_words"] if known else [])])
        for r in rows:
            w.writerow([r["model"], r["input"], *([r.get("given") or ""] if given else []), r["label"],
                        f"{r['confidence']:.6f}", *(f"{r['probabilities'].get(c, 0.0):.6f}" for c in classes),
                        *([r.get("known_words", "")] if known else [])])
        data = buf.getvalue()
    else:
        data = "".join(json.dumps(r) + "\n" for r in rows)
    atomic_write_bytes(dest, data.encode("utf-8"))
