"""Packaging a model variant as a signed bundle (format: edge_agent.proto.bundle)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from edge_agent.proto.bundle import MODEL, write_bundle
from runtime.domain.errors import CdlError
from runtime.keys import signing_key
from runtime.workspace.workspace import Workspace


def built_variant(ws: Workspace, mv: Any, variant: str) -> Any:  # noqa: ANN401
    """A built variant of model version `mv` (its ONNX file: ws.artifacts.get(v.artifact)); CdlError naming why
    when it was not built (skipped or failed)."""
    v = ws.store.variant(mv.name, mv.version, variant)
    if v.status != "ok" or not v.artifact:
        raise CdlError(f"{mv.ref}:{variant} was not built ({v.status}: {v.message})")
    return v


def manifest_for(ws: Workspace, ref: str, variant: str) -> tuple[dict[str, Any], Path]:
    """The manifest (without members and signature) and the ONNX file of a variant."""
    from runtime.ml import onnx_tools
    from runtime.ml import reference as refstats
    from runtime.ml.common import validation_split
    from runtime.ml.preprocess import load_transform

    store = ws.store
    mv = store.resolve_model(ref)
    v = built_variant(ws, mv, variant)
    onnx_path = ws.artifacts.get(v.artifact)
    prep = load_transform(ws, mv.transform)
    arch = mv.extra["arch"]
    layout = arch["layout"]
    # reference statistics: a seeded half of the test split (runtime.ml.reference.reference_half says why);
    # the validation split only where there is no test split
    train = store.experiment(mv.experiment_id).summary if mv.experiment_id else {}
    seed = int(mv.params.get("seed", 42))
    kind = prep.spec["type"]
    if len(prep.y_test) >= 2:
        ref_idx, _ = refstats.reference_half(len(prep.y_test), seed)
        split, X_ref, summaries = "test (reference half)", onnx_tools.layout_input(prep.X_test[ref_idx], layout), \
            prep.summaries["test"]
    else:
        _, ref_idx = validation_split(prep.y_train, float(train.get("val_fraction", 0.2) or 0.2), seed)
        split, X_ref = "validation", onnx_tools.layout_input(prep.X_train[ref_idx], layout)
        summaries = prep.summaries["train"]
    probs = onnx_tools.predict(onnx_tools.session(onnx_path), X_ref)
    reference = refstats.build(kind, prep.classes, summaries, ref_idx, probs, prep.tracked_terms, seed)
    reference["split"] = split
    reference["seed"] = seed
    spec = dict(prep.spec)
    if kind == "image":
        spec["layout"] = layout
        raw = {"kind": "image", "datatype": "UINT8", "shape": [-1, spec["height"], spec["width"], spec["channels"]]}
        shape = [-1, *([spec["channels"], spec["height"], spec["width"]] if layout == "NCHW" else
                       [spec["height"], spec["width"], spec["channels"]] if layout == "NHWC" else
                       [spec["height"] * spec["width"] * spec["channels"]])]
    else:
        raw = {"kind": "text", "datatype": "BYTES", "shape": [-1]}
        shape = [-1, len(spec["vocabulary"])]
    dv = store.version(mv.dataset_version)
    manifest = {
        "name": mv.name,
        "version": str(mv.version),
        "variant": variant,
        # the model version's registration, not the time of packaging: a bundle packaged again from the same
        # inputs is the same bytes, so a forced run does not push the same model to every device as a new bundle
        # (whose monitoring window starts empty)
        "created": mv.created.isoformat(),
        "input": {"name": onnx_tools.INPUT, "datatype": "FP32", "shape": shape, "layout": layout},
        "output": {"name": onnx_tools.OUTPUT, "datatype": "FP32", "shape": [-1, len(prep.classes)]},
        "raw_input": raw,
        "classes": prep.classes,
        "preprocessing": spec,
        "reference": reference,
        "metrics": {**mv.metrics, **{k: v.metrics.get(k) for k in ("test_accuracy", "accuracy_delta") if k in v.metrics}},
        "lineage": {"model": mv.ref, "variant": variant, "dataset_version": dv.id, "dvc_hash": dv.dvc_hash,
                    "experiment": mv.experiment_id, "trial": mv.trial_id, "transform": mv.transform,
                    "git_commit": mv.git_commit, "git_dirty": mv.git_dirty, "framework": mv.framework,
                    "onnx_sha256": v.artifact},
    }
    return manifest, onnx_path


def package(ws: Workspace, ref: str, variant: str, out: Path) -> dict[str, Any]:
    manifest, onnx_path = manifest_for(ws, ref, variant)
    priv, _ = signing_key(ws.root, [d.name for d in ws.store.devices()])
    digest = write_bundle(Path(out), manifest, {MODEL: onnx_path}, priv)
    mv = ws.store.resolve_model(ref)
    stored = ws.artifacts.put_file(Path(out))
    assert stored == digest
    ws.store.put_variant(mv.name, mv.version, variant, bundle=digest)
    return {"variant": variant, "path": str(out), "sha256": digest, "size_bytes": Path(out).stat().st_size}


def bundle_path(ws: Workspace, ref: str, variant: str) -> Path:
    """The bundle of a variant, packaged now if it was not (or its file is gone)."""
    mv = ws.store.resolve_model(ref)
    v = ws.store.variant(mv.name, mv.version, variant)
    if v.bundle and ws.artifacts.exists(v.bundle):
        return ws.artifacts.get(v.bundle)
    out = ws.root / ".cdl" / "bundles" / f"{mv.name}-v{mv.version}-{variant}.cdlb"
    info = package(ws, ref, variant, out)
    return ws.artifacts.get(info["sha256"])


def sha256_file(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
