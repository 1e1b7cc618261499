"""Predictions of registered model versions straight from their checkpoints (`cdl models predict`, the review
panel's Try…), as `mlflow models predict` does: a candidate can be tried before it is exported, packaged or
served. Each version applies its own fitted preprocessing, the same the bundle would carry to a device."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from runtime.domain.errors import CdlError
from runtime.workspace.workspace import Workspace


def predict_items(ws: Workspace, ref: str, texts: list[str] = (), files: list[Path] = (),
                  variant: str | None = None) -> list[dict[str, Any]]:
    """Texts and text files (a text model), or image files (an image model: converted and resized to its input)
    through model version `ref`: [{"input", "label", "confidence", "probabilities": {class: p}}], one per input.
    With `variant` (fp32, dynamic_int8, ...), through that ONNX variant in onnxruntime instead of the checkpoint,
    with the same preprocessing, as a device would run it."""
    from edge_agent.proto.preprocessing import TextPipeline, pipeline
    from runtime.ml.preprocess import transform_spec
    from runtime.ml.versus import predict_proba

    mv = ws.store.resolve_model(ref)
    onnx = None
    if variant is not None:
        from runtime.bundles import built_variant

        onnx = ws.artifacts.get(built_variant(ws, mv, variant).artifact)
    if not texts and not files:
        raise CdlError("nothing to predict: give --text TEXT or --file PATH")
    for f in files:
        if not Path(f).is_file():
            raise CdlError(f"{f}: no such file")
    pipe = pipeline(transform_spec(ws, mv.transform))
    if isinstance(pipe, TextPipeline):
        items = [*texts, *(_text_file(mv.ref, Path(f)) for f in files)]
        names = [t[:60] for t in texts] + [str(f) for f in files]
        X, _ = pipe.transform(items)
    else:
        if texts:
            raise CdlError(f"{mv.ref} is an image model: give image files with --file, not --text")
        from runtime.serve import read_images

        names = [str(f) for f in files]
        raw = read_images(list(files), pipe.height, pipe.width, pipe.channels)
        if onnx is not None:  # NHWC, normalized, then the exported model's layout
            from runtime.ml.onnx_tools import layout_input

            X = layout_input(pipe.normalize(pipe.check_shape(raw)), mv.extra["arch"]["layout"])
        else:
            X, _ = pipe.transform(raw)
    if onnx is not None:
        from runtime.ml import onnx_tools

        probs = onnx_tools.predict(onnx_tools.session(onnx), X)
    else:
        probs = np.asarray(predict_proba(ws, mv, X))
    return [{"input": name, "label": mv.classes[int(p.argmax())], "confidence": float(p.max()),
             "probabilities": {c: float(p[i]) for i, c in enumerate(mv.classes)}} for name, p in zip(names, probs,
                                                                                                  strict=True)]


def _text_file(ref: str, path: Path) -> str:
    """A text file's text. An image or other binary file (NUL bytes, or an image's magic number) was decoded as
    text and given a class with a confidence, as if it were an article."""
    from runtime.workspace.dataset import decode_text

    data = path.read_bytes()
    image = data[:8].startswith((b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")) or (
        data[:4] in (b"RIFF",) and data[8:12] == b"WEBP")
    utf16 = data[:2] in (b"\xff\xfe", b"\xfe\xff")  # its NUL bytes are text: decode_text reads it
    if image or (b"\x00" in data[:8192] and not utf16):
        raise CdlError(f"{path}: {'an image' if image else 'a binary file'}, not text: {ref} is a text model "
                       "(--file takes text files here)")
    return decode_text(data)[0]
