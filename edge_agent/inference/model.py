"""A loaded bundle: its manifest, an onnxruntime session and its preprocessing pipeline."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.proto.preprocessing import ImagePipeline, TextPipeline, pipeline


@dataclass
class Prediction:
    probabilities: np.ndarray  # (n, classes)
    labels: list[str]
    confidence: np.ndarray
    summaries: list[dict[str, Any]]
    latency_ms: float
    infer_ms: float = 0.0  # of latency_ms, onnxruntime's run; the rest is preprocessing and the summaries


def import_engines() -> None:
    """Import onnxruntime and the Porter stemmer now: about a second, which the first model a process loads
    would otherwise pay. An agent with no model active does this at start, so that a worker that follows an
    activation made by another worker loads the model in milliseconds, not in the middle of a request."""
    import onnxruntime  # noqa: F401

    try:
        from edge_agent.proto.preprocessing import _stemmer

        _stemmer("porter")
    except ImportError:  # nltk missing: a text bundle that stems will say so when it loads
        pass


class LoadedModel:
    def __init__(self, bundle_id: str, directory: Path, manifest: dict[str, Any], providers: list[str] | None = None):
        import onnxruntime as ort

        self.bundle_id = bundle_id
        self.manifest = manifest
        self.name = manifest["name"]
        self.version = str(manifest["version"])
        self.variant = manifest["variant"]
        self.classes = list(manifest["classes"])
        self.kind = manifest["raw_input"]["kind"]
        self.pipeline = pipeline(manifest["preprocessing"])
        self.tracked_terms = (manifest.get("reference") or {}).get("tracked_terms") or []
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # Requests are small and come from the event loop one at a time: onnxruntime's threads must sleep
        # between them, not spin (spinning burnt about 0.6 ms of CPU per request that gRPC needed).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        wanted = providers or ["CPUExecutionProvider"]
        self.session = ort.InferenceSession(str(Path(directory) / "model.onnx"), sess_options=opts, providers=wanted)
        self.providers = self.session.get_providers()  # what really runs, not what was asked for
        self.input_name = manifest["input"]["name"]
        self.output_name = manifest["output"]["name"]
        self.layout = manifest["input"].get("layout", "flat")
        self._warm_up()

    def _warm_up(self) -> None:
        """One prediction at load: it imports the stemmer and sizes onnxruntime's buffers, so the first request
        is not slow, and a model that cannot run fails here, before it is activated."""
        if self.kind == "text":
            self.predict_texts(["warm up"])
        else:
            p = self.pipeline
            self.predict_images(np.zeros((1, p.height, p.width, p.channels), np.uint8))

    def predict_texts(self, texts: list[str]) -> Prediction:
        assert isinstance(self.pipeline, TextPipeline)
        t0 = time.perf_counter()
        x, summaries = self.pipeline.process(texts, self.tracked_terms)
        t1 = time.perf_counter()
        probs = self.session.run([self.output_name], {self.input_name: x})[0]
        return self._result(probs, summaries, t0, time.perf_counter() - t1)

    def predict_images(self, images: np.ndarray) -> Prediction:
        assert isinstance(self.pipeline, ImagePipeline)
        t0 = time.perf_counter()
        raw = self.pipeline.check_shape(images)
        x = self.pipeline.layout(self.pipeline.normalize(raw if raw.dtype == np.uint8 else raw), self.layout)
        t1 = time.perf_counter()
        probs = self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x, np.float32)})[0]
        infer = time.perf_counter() - t1
        summaries = [self.pipeline.summarize(img if img.dtype == np.uint8 else img) for img in raw]
        return self._result(probs, summaries, t0, infer)

    def _result(self, probs: np.ndarray, summaries: list[dict[str, Any]], t0: float, infer_s: float) -> Prediction:
        idx = probs.argmax(axis=1)
        return Prediction(probs.astype(np.float32), [self.classes[i] for i in idx], probs.max(axis=1).astype(np.float32),
                          summaries, (time.perf_counter() - t0) * 1000, infer_s * 1000)

    def input_metadata(self) -> dict[str, Any]:
        raw = self.manifest["raw_input"]
        name = "text" if self.kind == "text" else "image"
        return {"name": name, "datatype": raw["datatype"], "shape": raw["shape"]}
