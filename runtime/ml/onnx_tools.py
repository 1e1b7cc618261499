"""ONNX export, onnxruntime sessions, INT8 quantization, latency and accuracy measurement.

Every ONNX model CDL Studio makes takes the preprocessed tensor as input `input` (batch first) and gives
class probabilities as output `probabilities`. Sessions report the providers that really ran
(`session.get_providers()`): onnxruntime-gpu silently falls back to the CPU when CUDA or TensorRT is missing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

INPUT = "input"
OUTPUT = "probabilities"


def _tmp(suffix: str = ".onnx") -> Path:
    fd, path = tempfile.mkstemp(suffix=suffix, prefix="cdl-")
    os.close(fd)
    return Path(path)


@contextlib.contextmanager
def removed_on_failure(*paths: Path) -> Iterator[None]:
    """An export or a quantization that fails leaves no file behind in the system's temp folder (each failed one
    left its model there, 200 KiB to megabytes, for good): the caller takes the file only where it succeeded."""
    try:
        yield
    except BaseException:
        for p in paths:
            p.unlink(missing_ok=True)
            Path(str(p) + ".data").unlink(missing_ok=True)
        raise


# -- export -------------------------------------------------------------------------------------------------


def export_torch(model, example: np.ndarray) -> tuple[Path, str]:  # noqa: ANN001
    """(path, exporter used). The dynamo exporter first (torch's default), the TorchScript one as fallback."""
    import logging

    import torch

    wrapped = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval().cpu()
    x = torch.from_numpy(np.ascontiguousarray(example[:2], dtype=np.float32))
    out = _tmp()
    for name in ("torch.onnx", "torch.onnx._internal.exporter._registration"):
        logging.getLogger(name).setLevel(logging.ERROR)  # "torchvision is not installed" is not our concern
    with removed_on_failure(out):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                import io

                with contextlib.redirect_stdout(io.StringIO()):
                    torch.onnx.export(wrapped, (x,), str(out), input_names=[INPUT], output_names=[OUTPUT],
                                      dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), dynamo=True,
                                      external_data=False, opset_version=18)
            _check_single_file(out)
            return out, "torch.onnx (dynamo)"
        except Exception as exc:  # noqa: BLE001 - fall back, and say so
            first = f"{type(exc).__name__}: {exc}"[:300]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapped, (x,), str(out), input_names=[INPUT], output_names=[OUTPUT],
                              dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, dynamo=False,
                              opset_version=17)
    return out, f"torch.onnx (TorchScript; dynamo failed: {first})"


def _check_single_file(path: Path) -> None:
    import onnx

    m = onnx.load(str(path), load_external_data=True)
    for t in m.graph.initializer:
        if t.data_location == onnx.TensorProto.EXTERNAL:
            onnx.save_model(m, str(path), save_as_external_data=False)
            break
    for extra in path.parent.glob(path.name + ".data"):
        extra.unlink()


def export_keras(model, example: np.ndarray) -> tuple[Path, str]:  # noqa: ANN001
    from runtime.ml.common import load_tensorflow

    tf = load_tensorflow()
    import tf2onnx
    import tf_keras

    x = tf_keras.Input(shape=example.shape[1:], name=INPUT)
    y = tf_keras.layers.Softmax(name=OUTPUT)(model(x))
    wrapped = tf_keras.Model(x, y)
    spec = (tf.TensorSpec((None, *example.shape[1:]), tf.float32, name=INPUT),)
    out = _tmp()
    with removed_on_failure(out):
        tf2onnx.convert.from_keras(wrapped, input_signature=spec, opset=17, output_path=str(out))
        _rename_output(out)
    return out, f"tf2onnx {tf2onnx.__version__}"


def _rename_output(path: Path) -> None:
    """tf2onnx names outputs after the layer ('probabilities' or 'probabilities/Softmax:0'); normalise it."""
    import onnx

    m = onnx.load(str(path))
    old = m.graph.output[0].name
    if old == OUTPUT:
        return
    for node in m.graph.node:
        node.output[:] = [OUTPUT if o == old else o for o in node.output]
    m.graph.output[0].name = OUTPUT
    old_in = m.graph.input[0].name
    if old_in != INPUT:
        for node in m.graph.node:
            node.input[:] = [INPUT if i == old_in else i for i in node.input]
        m.graph.input[0].name = INPUT
    onnx.save(m, str(path))


# -- sessions -----------------------------------------------------------------------------------------------


def session(path: Path, providers: list[str] | None = None, provider_options: list[dict] | None = None,
            threads: int | None = None, spinning: bool = True):  # noqa: ANN201
    """spinning False: the session's threads sleep between calls instead of busy-waiting, so that several sessions
    timed in turns (`interleaved_latency`) do not slow one another (FP32 came out 1.1 ms at batch 64 beside five
    spinning sessions, 0.64 ms alone and beside five that did not spin)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers or ["CPUExecutionProvider"],
                                provider_options=provider_options)


def predict(sess, X: Any, batch: int = 256) -> np.ndarray:  # noqa: ANN001
    out = []
    for i in range(0, X.shape[0], batch):
        xb = X[i : i + batch]
        xb = xb.toarray() if hasattr(xb, "toarray") else np.asarray(xb)
        out.append(sess.run([OUTPUT], {INPUT: np.ascontiguousarray(xb, dtype=np.float32)})[0])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def layout_input(X: Any, layout: str) -> Any:
    """The cached tensors (N, H, W, C) or CSR rows, in the model's input layout."""
    if hasattr(X, "toarray"):
        return X
    X = np.asarray(X)
    if layout == "NCHW" and X.ndim == 4:
        return np.ascontiguousarray(X.transpose(0, 3, 1, 2))
    if layout == "flat":
        return X.reshape(len(X), -1)
    return X


def _batch_feed(X: Any, batch: int) -> dict[str, np.ndarray]:  # noqa: ANN401
    xb = X[:batch]
    xb = xb.toarray() if hasattr(xb, "toarray") else np.asarray(xb)
    if len(xb) < batch:  # repeat rows to fill the batch
        reps = int(np.ceil(batch / max(1, len(xb))))
        xb = np.concatenate([xb] * reps)[:batch]
    return {INPUT: np.ascontiguousarray(xb, dtype=np.float32)}


def interleaved_latency(sessions: dict[str, Any], X: Any, batch: int, runs: int,  # noqa: ANN401
                        warmup: int = 5) -> dict[str, dict[str, float]]:
    """{name: {"p50", "p95"}} in ms for several sessions timed in turns, one call each per round, the order turning
    round by round, so that what else the machine does meanwhile weighs on all alike. Each timed on its own, one
    after the other, the first (FP32) came out twice as slow as a pruned copy of itself at batch 64, and a pruned
    model was marked "slower" than FP32 at 1.09 of its median while another job ran."""
    feed = _batch_feed(X, batch)
    names = list(sessions)
    for _ in range(warmup):
        for n in names:
            sessions[n].run([OUTPUT], feed)
    times: dict[str, list[float]] = {n: [] for n in names}
    for i in range(runs):
        k = i % len(names)
        for n in names[k:] + names[:k]:
            t0 = time.perf_counter()
            sessions[n].run([OUTPUT], feed)
            times[n].append((time.perf_counter() - t0) * 1000)
    return {n: {"p50": float(np.percentile(t, 50)), "p95": float(np.percentile(t, 95))} for n, t in times.items()}


# -- quantization -------------------------------------------------------------------------------------------


def _preprocessed(src: Path) -> Path:
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out = _tmp()
    with removed_on_failure(out):
        try:
            quant_pre_process(str(src), str(out), skip_symbolic_shape=False)
        except Exception:  # noqa: BLE001 - symbolic shape inference is optional
            quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    return out


def quantize_dynamic_int8(src: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    pre = _preprocessed(src)
    out = _tmp()
    try:
        with removed_on_failure(out):
            quantize_dynamic(str(pre), str(out), weight_type=QuantType.QInt8, per_channel=False)
    finally:
        pre.unlink(missing_ok=True)
    return out


def _on_int8_grid(w: np.ndarray) -> tuple[np.ndarray, np.ndarray, int | None] | None:
    """(int8 values, scale, axis or None) where every value of `w` is a multiple of one scale (per tensor, or per
    slice along the first or last axis) between -127 and 127 of it, as quantization-aware training leaves weights
    (symmetric, narrow range); None where they are not."""

    def fit(scale: np.ndarray, values: np.ndarray) -> np.ndarray | None:
        steps = values / scale
        whole = np.round(steps)
        return whole if np.all(np.abs(steps - whole) < 1e-3) and np.all(np.abs(whole) <= 127) else None

    top = float(np.max(np.abs(w)))
    if top == 0:
        return None
    scale = np.array(top / 127, np.float32)
    whole = fit(scale, w)
    if whole is not None:
        return whole.astype(np.int8), scale, None
    for axis in sorted({0, w.ndim - 1}):
        rows = np.moveaxis(w, axis, 0)
        flat = rows.reshape(rows.shape[0], -1)
        tops = np.max(np.abs(flat), axis=1)
        scales = np.where(tops > 0, tops / 127, 1).astype(np.float32)
        whole = fit(scales[:, None], flat)
        if whole is not None:
            return np.moveaxis(whole.reshape(rows.shape), 0, axis).astype(np.int8), scales, axis
    return None


def pack_fake_quant_weights(src: Path, min_size: int = 1024) -> tuple[Path, int]:
    """A quantization-aware-trained model as tf2onnx exports it keeps its weights in float32, each already a
    multiple of its quantization scale (the weight FakeQuant folded into a constant): its file was the size of
    FP32's. Each such weight of a MatMul, Gemm or Conv is stored as INT8 with a DequantizeLinear before its use,
    which gives the same float values (to the float32 rounding of the scale, worked out from the values): the same
    outputs, a quarter of the size. (path, weights packed)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    users: dict[str, list[tuple[Any, int]]] = {}
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            users.setdefault(name, []).append((node, k))
    dequantize = []
    for init in list(model.graph.initializer):
        uses = users.get(init.name, [])
        if init.data_type != TensorProto.FLOAT or not uses or not all(
                n.op_type in ("MatMul", "Gemm", "Conv") and k == 1 for n, k in uses):
            continue
        w = numpy_helper.to_array(init)
        grid = _on_int8_grid(w) if w.size >= min_size else None
        if grid is None:
            continue
        q, scale, axis = grid
        names = [f"{init.name}_int8", f"{init.name}_scale", f"{init.name}_zero_point", f"{init.name}_dequantized"]
        model.graph.initializer.remove(init)
        model.graph.initializer.extend([numpy_helper.from_array(q, names[0]), numpy_helper.from_array(scale, names[1]),
                                        numpy_helper.from_array(np.zeros(scale.shape, np.int8), names[2])])
        dequantize.append(helper.make_node("DequantizeLinear", names[:3], [names[3]], name=f"{init.name}_Dequantize",
                                           **({} if axis is None else {"axis": axis})))
        for node, k in uses:
            node.input[k] = names[3]
    if not dequantize:
        return src, 0
    nodes = dequantize + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    out = _tmp()
    with removed_on_failure(out):
        onnx.save(model, str(out))
    return out, len(dequantize)


def _softmax_nodes(path: Path) -> list[str]:
    """The Softmax nodes of the model: left in float by static quantization, since a uint8 output of a softmax is
    a probability in 256 steps (a confidence of 0.992157 for every sure answer, 29 values over a test split), which
    the confidence drift test, the raw-input threshold and top-k answers all read."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return [n.name for n in model.graph.node if n.op_type in ("Softmax", "LogSoftmax") and n.name]


def quantize_static_int8(src: Path, calibration: np.ndarray, per_channel: bool = True) -> Path:
    """QDQ static quantization, calibrated on training samples (MinMax); the softmax stays in float."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self, data: np.ndarray):
            self.data = data
            self.i = 0

        def get_next(self):  # noqa: ANN202
            if self.i >= len(self.data):
                return None
            x = self.data[self.i : self.i + 16]
            self.i += 16
            return {INPUT: np.ascontiguousarray(x, dtype=np.float32)}

        def rewind(self) -> None:
            self.i = 0

    import logging

    pre = _preprocessed(src)
    out = _tmp()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # per-channel quantization warns about 1-D weights (layer norm): harmless
    try:
        with removed_on_failure(out):
            quantize_static(str(pre), str(out), Reader(calibration), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
                            nodes_to_exclude=_softmax_nodes(pre))
    finally:
        root.setLevel(level)
        pre.unlink(missing_ok=True)
    return out


# -- TensorRT -----------------------------------------------------------------------------------------------


_PROBE = r"""
import json, onnx, onnxruntime as ort
from onnx import TensorProto, helper
graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
model.ir_version = min(model.ir_version, 9)
out = []
for p in ort.get_available_providers():
    try:
        chain = [p] if p == "CPUExecutionProvider" else [p, "CPUExecutionProvider"]
        sess = ort.InferenceSession(model.SerializeToString(), providers=chain)
    except Exception:
        continue
    if sess.get_providers()[0] == p:
        out.append(p)
print(json.dumps(out))
"""


def providers_that_run() -> list[str]:
    """The execution providers onnxruntime really runs a model on here. `get_available_providers()` lists every
    provider the wheel was built with (onnxruntime-gpu lists CUDA and TensorRT on a machine without a GPU, then
    falls back to the CPU, logging its failure to stderr), so a one-node model is opened with each, in a process
    of its own whose log is kept out of the user's terminal, and the session is asked what it runs on."""
    import json
    import subprocess
    import sys

    try:
        r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120)
        found = json.loads(r.stdout.strip().splitlines()[-1]) if r.returncode == 0 and r.stdout.strip() else []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        found = []
    return found or ["CPUExecutionProvider"]


def tensorrt_status() -> tuple[bool, str]:
    """(available, reason). Available needs the tensorrt package, a CUDA GPU, and onnxruntime's TensorRT
    execution provider."""
    try:
        import tensorrt  # noqa: F401
    except Exception as exc:  # noqa: BLE001
        return False, f"the tensorrt package is not installed ({type(exc).__name__}: {exc}); it is the optional extra cdl-studio[tensorrt]"
    import onnxruntime as ort

    if "TensorrtExecutionProvider" not in ort.get_available_providers():
        return False, "onnxruntime has no TensorrtExecutionProvider in this installation"
    try:
        import torch

        if not torch.cuda.is_available():
            return False, "no CUDA GPU"
    except ImportError:
        pass
    return True, "ok"


def tensorrt_session(path: Path, cache_dir: Path, fp16: bool = True, int8: bool = False,  # noqa: ANN201
                     spinning: bool = True):
    cache_dir.mkdir(parents=True, exist_ok=True)
    opts = {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache_dir), "trt_fp16_enable": fp16,
            "trt_int8_enable": int8}
    sess = session(path, ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                   [opts, {}, {}], spinning=spinning)
    return sess
