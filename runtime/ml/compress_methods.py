"""The compression methods of deploy.compress, for PyTorch and Keras models. Each returns an ONNX file that
takes the same input and gives class probabilities, or raises Skipped with the reason it cannot run here."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.ml import onnx_tools


class Skipped(Exception):
    """The method does not apply here (framework, hardware); the message says why."""


@dataclass
class Output:
    path: Path
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    message: str = ""


def _data(ctx, mv, seed: int):  # noqa: ANN001, ANN202
    from runtime.ml.common import validation_split
    from runtime.ml.preprocess import load_transform

    prep = load_transform(ctx.workspace, mv.transform, log=ctx.log)
    tr, _ = validation_split(prep.y_train, 0.2, seed)
    return prep, tr


def run(ctx, mv, fp32, method: str, opts: dict[str, Any], seed: int) -> Output:  # noqa: ANN001
    src = ctx.workspace.artifacts.get(fp32.artifact)
    layout = mv.extra["arch"]["layout"]
    if method == "dynamic_int8":
        return Output(onnx_tools.quantize_dynamic_int8(src), {"weight_type": "int8"},
                      message="weights INT8, activations quantized at run time")
    if method == "static_int8":
        prep, tr = _data(ctx, mv, seed)
        n = int(opts.get("calibration_samples", 256))
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(tr, size=min(n, len(tr)), replace=False))
        X = onnx_tools.layout_input(prep.X_train, layout)
        calib = X[pick]
        calib = calib.toarray() if hasattr(calib, "toarray") else np.asarray(calib)
        return Output(onnx_tools.quantize_static_int8(src, calib, bool(opts.get("per_channel", True))),
                      {"calibration_samples": len(pick), "format": "QDQ"},
                      message=f"QDQ, calibrated on {len(pick)} training samples")
    if method == "tensorrt":
        ok, reason = onnx_tools.tensorrt_status()
        if not ok:
            raise Skipped(f"TensorRT unavailable: {reason}")
        precision = opts.get("precision", "fp16")
        cache = ctx.workspace.root / ".cdl" / "trt-cache" / fp32.artifact[:16]
        sess = onnx_tools.tensorrt_session(src, cache, fp16=precision == "fp16", int8=precision == "int8")
        prov = sess.get_providers()
        if prov[0] != "TensorrtExecutionProvider":
            raise Skipped(f"TensorRT unavailable: onnxruntime ran on {prov}")
        out = Path(str(src) + ".trt.onnx")
        out.write_bytes(src.read_bytes())
        return Output(out, {"precision": precision, "engine_cache": str(cache)}, {"providers": prov},
                      message=f"TensorRT {precision} engine cached in {cache}")
    if method == "qat" and mv.framework != "keras":
        raise Skipped("quantization-aware training is built for Keras models (tfmot); this model is PyTorch")
    prep, tr = _data(ctx, mv, seed)
    X = prep.X_train
    example = onnx_tools.layout_input(prep.X_test[:4] if len(prep.y_test) else prep.X_train[:4], layout)
    example = example.toarray() if hasattr(example, "toarray") else np.asarray(example)
    hp = mv.extra["arch"]["hyperparameters"]
    # fine-tuning a trained model: a tenth of its learning rate (a fresh Adam at full rate undoes training);
    # a distilled student starts from scratch and takes the full rate
    lr = float(opts.get("lr", hp["lr"] if method == "distill" else hp["lr"] * 0.1))
    from runtime.steps.deploy import export_native, native_model

    teacher = native_model(ctx.workspace, mv)
    began = time.monotonic()

    def epochs_of(total: int):  # noqa: ANN202
        """After each training epoch: a line (a distillation on 60 000 images ran a minute and more without
        one) and the cancel's checkpoint."""
        def done(epoch: int) -> None:
            took = time.monotonic() - began
            ctx.log(f"{method}: epoch {epoch} of {total} ({took:.1f} s)" if took < 10 else
                    f"{method}: epoch {epoch} of {total} ({took:.0f} s)")
            ctx.check_cancelled()
        return done

    if mv.framework == "torch":
        from runtime.ml import compress_torch as ct

        before = ct.param_count(teacher)
        if method == "prune":
            amount = float(opts.get("sparsity", 0.5))
            n = int(opts.get("finetune_epochs", 1))
            model, reached = ct.prune(teacher, X, prep.y_train, tr, mv.extra["arch"], amount, n, lr, seed,
                                      on_epoch=epochs_of(n))
            path, exporter = export_native(mv, model, example)
            return Output(path, {"sparsity_target": amount}, {"sparsity": reached},
                          message=f"{reached:.1%} of weights are zero (dense storage: the ONNX file does not shrink)")
        if method == "distill":
            hidden = int(opts.get("student_hidden", max(8, hp["hidden"] // 4)))
            n = int(opts.get("epochs", 5))
            model, _ = ct.distill(teacher, X, prep.y_train, tr, mv.extra["arch"], hidden, n, lr,
                                  float(opts.get("temperature", 4.0)), float(opts.get("alpha", 0.7)), seed,
                                  on_epoch=epochs_of(n))
            path, _ = export_native(mv, model, example)
            after = ct.param_count(model)
            return Output(path, {"student_hidden": hidden}, {"params_teacher": before, "params_student": after},
                          message=_student_note(mv, hidden, before, after))
        if method == "lowrank":
            rank = opts.get("rank", 0.25)
            model, layers = ct.factorize(teacher, rank)
            if not layers:
                raise Skipped(f"no linear layer gets smaller at rank {rank}")
            epochs = int(opts.get("finetune_epochs", 0))
            if epochs:
                from runtime.ml import torch_backend as tb

                tb.fine_tune(model, X, prep.y_train, tr, mv.extra["arch"]["layout"], epochs, lr, hp["batch_size"], seed,
                             on_epoch=epochs_of(epochs))
            path, _ = export_native(mv, model, example)
            return Output(path, {"rank": rank, "finetune_epochs": epochs}, {"factorized_layers": layers,
                          "params_before": before, "params_after": ct.param_count(model)},
                          message=f"{len(layers)} linear layer(s) factorized"
                          + (f", fine-tuned {epochs} epoch(s)" if epochs else ""))
        raise Skipped(f"method {method} is not built for PyTorch models")
    # Keras
    from runtime.ml import compress_keras as ck

    before = ck.param_count(teacher)
    if method == "prune":
        amount = float(opts.get("sparsity", 0.5))
        n = max(1, int(opts.get("finetune_epochs", 1)))
        model, reached = ck.prune(teacher, X, prep.y_train, tr, mv.extra["arch"], amount, n, lr, seed,
                                  on_epoch=epochs_of(n))
        path, _ = export_native(mv, model, example)
        return Output(path, {"sparsity_target": amount}, {"sparsity": reached},
                      message=f"{reached:.1%} of weights are zero (tfmot; dense storage)")
    if method == "qat":
        n = max(1, int(opts.get("finetune_epochs", 1)))
        model = ck.qat(teacher, X, prep.y_train, tr, mv.extra["arch"], n, lr, seed, on_epoch=epochs_of(n))
        exported, _ = export_native(mv, model, example)
        # its weights, float multiples of their scales in the export, stored as INT8 (the file was FP32's size)
        with onnx_tools.removed_on_failure(exported):
            path, packed = onnx_tools.pack_fake_quant_weights(exported)
        if path != exported:
            exported.unlink(missing_ok=True)
        return Output(path, {"finetune_epochs": int(opts.get("finetune_epochs", 1))}, {"int8_weights": packed},
                      message="quantization-aware training (tfmot), exported with QDQ nodes; "
                      + (f"{packed} weight tensor(s) stored as INT8" if packed else "weights left in float"))
    if method == "distill":
        hidden = int(opts.get("student_hidden", max(8, hp["hidden"] // 4)))
        n = max(1, int(opts.get("epochs", 5)))
        model, _ = ck.distill(teacher, X, prep.y_train, tr, mv.extra["arch"], hidden, n, lr,
                              float(opts.get("temperature", 4.0)), float(opts.get("alpha", 0.7)), seed,
                              on_epoch=epochs_of(n))
        path, _ = export_native(mv, model, example)
        after = ck.param_count(model)
        return Output(path, {"student_hidden": hidden}, {"params_teacher": before, "params_student": after},
                      message=_student_note(mv, hidden, before, after))
    if method == "lowrank":
        rank = opts.get("rank", 0.25)
        model, layers = ck.factorize(teacher, rank)
        if not layers:
            raise Skipped(f"no dense layer gets smaller at rank {rank}")
        epochs = int(opts.get("finetune_epochs", 0))
        if epochs:  # it was ignored for Keras models: the factorized model went out untuned
            ck.fine_tune(model, X, prep.y_train, tr, mv.extra["arch"], epochs, lr, seed, on_epoch=epochs_of(epochs))
        path, _ = export_native(mv, model, example)
        return Output(path, {"rank": rank, "finetune_epochs": epochs}, {"factorized_layers": layers,
                      "params_before": before, "params_after": ck.param_count(model)},
                      message=f"{len(layers)} dense layer(s) factorized"
                      + (f", fine-tuned {epochs} epoch(s)" if epochs else ""))
    raise Skipped(f"method {method} is not built for Keras models")


def _student_note(mv: Any, hidden: int, before: int, after: int) -> str:  # noqa: ANN401
    """What distill says: the student's size; where it is no smaller, why (a src: model's build_model that does not
    read params["hidden"] builds the teacher's size whatever student_hidden says)."""
    note = f"student with hidden {hidden}: {after} parameters (teacher {before})"
    if after >= before:
        note += (f"; no smaller: {mv.template}'s build_model does not size the model by params['hidden']"
                 if mv.template.startswith("src:") else "; no smaller: lower student_hidden")
    return note
