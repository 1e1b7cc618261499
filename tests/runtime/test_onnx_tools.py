"""onnx_tools on small ONNX graphs made here: the INT8 storage of quantization-aware-trained weights; no file left
in the system's temp folder by an export or a quantization that fails."""

from __future__ import annotations

import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from runtime.ml import onnx_tools
from runtime.ml.onnx_tools import pack_fake_quant_weights


def _graph(tmp_path, dense: np.ndarray, kernel: np.ndarray, other: np.ndarray):  # noqa: ANN202
    """input [N, 1, 8, 8] -> Conv(kernel) -> Flatten -> MatMul(dense) -> MatMul(other) -> output."""
    nodes = [helper.make_node("Conv", ["input", "kernel"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("MatMul", ["f", "dense"], ["d"]),
             helper.make_node("MatMul", ["d", "other"], ["probabilities"])]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 1, 8, 8])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, other.shape[1]])],
        [numpy_helper.from_array(kernel, "kernel"), numpy_helper.from_array(dense, "dense"),
         numpy_helper.from_array(other, "other")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    return path


def _run(path, x):  # noqa: ANN001, ANN202
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


@pytest.fixture
def temp_folder(tmp_path, monkeypatch):  # noqa: ANN201
    """The system's temp folder, for onnx_tools, is a folder of this test's own (what is left in it can be seen)."""
    folder = tmp_path / "system-temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def test_weights_on_an_int8_grid_are_stored_as_int8_with_the_same_outputs(tmp_path, temp_folder):
    """A QAT model as tf2onnx exports it had its weights in float32 (each a multiple of its scale), its file the
    size of FP32's. Stored as INT8 and dequantized before use, the outputs are the same and the file a quarter."""
    rng = np.random.default_rng(0)
    dense = (rng.integers(-127, 128, (16 * 64, 40)) * np.float32(0.0123)).astype(np.float32)  # per tensor
    scales = (rng.random(16) * 0.05 + 0.01).astype(np.float32)  # per output channel, as tfmot's Conv2D
    steps = rng.integers(-127, 128, (16, 1, 3, 3))
    steps[:, 0, 0, 0] = 127  # tfmot's scale is a channel's largest magnitude over 127: one step stands at 127
    kernel = (steps * scales[:, None, None, None]).astype(np.float32)
    other = rng.normal(size=(40, 1100)).astype(np.float32)  # float weights, on no grid: left alone
    src = _graph(tmp_path, dense, kernel, other)
    x = rng.random((5, 1, 8, 8), dtype=np.float32)
    out, packed = pack_fake_quant_weights(src, min_size=100)
    assert packed == 2
    model = onnx.load(str(out))
    kinds = {i.name: i.data_type for i in model.graph.initializer}
    assert kinds["dense_int8"] == kinds["kernel_int8"] == TensorProto.INT8 and kinds["other"] == TensorProto.FLOAT
    axis = next(a.i for n in model.graph.node if n.name == "kernel_Dequantize" for a in n.attribute if a.name == "axis")
    assert axis == 0
    # the same values, to the float32 rounding of a scale worked out from them (a QAT export's came out exact)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    np.testing.assert_allclose(inits["dense_int8"] * inits["dense_scale"], dense, rtol=1e-6)
    np.testing.assert_allclose(inits["kernel_int8"] * inits["kernel_scale"][:, None, None, None], kernel, rtol=1e-6)
    want = _run(src, x)
    np.testing.assert_allclose(_run(out, x), want, rtol=0, atol=1e-5 * np.abs(want).max())
    assert out.stat().st_size < src.stat().st_size - 0.74 * dense.nbytes  # a byte a weight, where it took four
    assert out.parent == temp_folder
    out.unlink()  # the caller's to move into the artifact store (this test left one in /tmp each run)
    # nothing on a grid: the file is given back as it is
    plain = _graph(tmp_path, rng.normal(size=(1024, 40)).astype(np.float32), kernel + 1e-4, other)
    assert pack_fake_quant_weights(plain, min_size=100) == (plain, 0)


def ours(folder) -> list[str]:  # noqa: ANN001
    """onnx_tools' files in the folder (torch keeps a compile cache of its own there)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("cdl-"))


def test_a_quantization_or_export_that_fails_leaves_no_file_in_the_temp_folder(tmp_path, temp_folder):
    """Each failed export or quantization left its half-made model in /tmp for good."""
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx model")
    with pytest.raises(Exception):  # noqa: B017, PT011 - onnx's own error, whatever its type
        onnx_tools.quantize_dynamic_int8(broken)
    with pytest.raises(Exception):  # noqa: B017, PT011
        onnx_tools.quantize_static_int8(broken, np.zeros((4, 1, 8, 8), np.float32))
    torch = pytest.importorskip("torch")

    class Unexportable(torch.nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN202
            raise RuntimeError("no graph here")

    with pytest.raises(RuntimeError, match="no graph here"):
        onnx_tools.export_torch(Unexportable(), np.zeros((2, 3), np.float32))
    assert ours(temp_folder) == []
    # and one that succeeds leaves its model there for the caller (the reason the folder is checked at all)
    rng = np.random.default_rng(1)
    src = _graph(tmp_path, rng.normal(size=(1024, 40)).astype(np.float32), rng.normal(size=(16, 1, 3, 3)).astype(
        np.float32), rng.normal(size=(40, 10)).astype(np.float32))
    made = onnx_tools.quantize_dynamic_int8(src)
    assert ours(temp_folder) == [made.name]
    made.unlink()
