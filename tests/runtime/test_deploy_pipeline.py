"""Export, compression, revision and bundles on small real subsets (PyTorch and Keras, text and images)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from edge_agent.proto.bundle import BundleError, verify_bytes
from runtime.jobs import Runner
from runtime.registry import review
from runtime.steps.deploy import variants_json
from tests.conftest import make_fashion_subset

ALL_METHODS = [
    "dynamic_int8",
    {"static_int8": {"calibration_samples": 64}},
    {"prune": {"sparsity": 0.5, "finetune_epochs": 1}},
    {"distill": {"epochs": 2}},
    {"lowrank": {"rank": 0.25, "finetune_epochs": 1}},
    "qat",
    "tensorrt",
]


def _to_package(ws, framework: str = "torch", extra_train: dict | None = None, logs: list | None = None):
    """Through deploy.package with every method; `logs` collects deploy.compress's lines."""
    from runtime.domain.events import EventKind
    from runtime.jobs.bus import EventBus

    bus = EventBus()
    if logs is not None:
        bus.subscribe(lambda ev: logs.append(ev.message) if ev.kind == EventKind.LOG and ev.step == "deploy.compress"
                      else None)
    cfg = ws.config()
    cfg.steps["deploy.compress"]["methods"] = ALL_METHODS
    cfg.steps["deploy.revise"].update({"runs_b1": 10, "runs_b64": 3})
    cfg.steps["model.train"].update({"framework": framework, **(extra_train or {})})
    cfg.save()
    res = Runner(ws).run(until="model.evaluate", overrides={"model.evaluate": {"threshold": 0.3}})
    assert res.ok, [o.error for o in res.steps]
    review(ws.store, f"{ws.config().name}:1", True, "ok", "tester")
    return Runner(ws, bus=bus).run(until="deploy.package", overrides={"model.evaluate": {"threshold": 0.3}})


def _epoch_lines(logs: list[str], method: str, total: int) -> None:
    """A method that trains says so after each epoch (a distillation on 60 000 images ran a minute and more without
    a line)."""
    lines = [m for m in logs if m.startswith(f"{method}: epoch ")]
    assert [m.split(" (")[0] for m in lines] == [f"{method}: epoch {e} of {total}" for e in range(1, total + 1)], logs


def test_torch_variants_revision_and_bundles(small_bbc, tmp_path):
    ws = small_bbc
    logs: list[str] = []
    res = _to_package(ws, logs=logs)
    assert res.ok, [o.error for o in res.steps]
    for method, total in (("prune", 1), ("distill", 2), ("lowrank", 1)):
        _epoch_lines(logs, method, total)
    doc = json.loads(subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "models", "variants",
                                     "ws:1", "--json"], capture_output=True, text=True, check=True).stdout)
    v = {x["name"]: x for x in doc["variants"]}
    assert set(v) == {"fp32", "dynamic_int8", "static_int8", "prune", "distill", "lowrank", "qat", "tensorrt"}
    for name in ("fp32", "dynamic_int8", "static_int8", "prune", "distill", "lowrank"):
        x = v[name]
        assert x["status"] == "ok"
        assert set(x["latency_ms"]) == {"b1_p50", "b1_p95", "b64_p50", "b64_p95"}
        assert x["size_bytes"] > 0 and 0 <= x["test_accuracy"] <= 1 and isinstance(x["slower_than_fp32"], bool)
        assert x["providers"] == ["CPUExecutionProvider"]
        assert x["slower_than_fp32"] == bool(x["details"]["slower_at"]) and set(x["details"]["slower_at"]) <= {"b1", "b64"}
        assert set(x["details"]["vs_fp32"]) == {"b1", "b64"} and all(r > 0 for r in x["details"]["vs_fp32"].values())
    # a slower variant's line says at which batch and by how much
    text_out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "models", "variants", "ws:1"],
                              capture_output=True, text=True, check=True).stdout
    for line in text_out.splitlines()[1:]:
        name = line.split()[0]
        if name in v and v[name]["status"] == "ok":
            assert ("SLOWER than fp32 at batch " in line) == v[name]["slower_than_fp32"], line
    assert v["fp32"]["accuracy_delta"] == 0
    assert v["fp32"]["size_bytes"] / v["static_int8"]["size_bytes"] > 3.0
    assert abs(v["static_int8"]["accuracy_delta"]) < 0.1
    assert v["prune"]["details"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    # `cdl models predict ws:1 ws:1:fp32 ws:champion:dynamic_int8`: the checkpoint and the variants side by side
    # (a variant was "model ws has no version with alias '1:dynamic_int8'"); fp32's ONNX answers as the checkpoint
    text = "Shares fell on the stock market after the bank raised interest rates"
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "models", "predict", "ws:1",
                          "ws:1:fp32", "ws@champion:dynamic_int8", "--text", text, "--json"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    got = {ref: p[0] for ref, p in json.loads(out.stdout)["predictions"].items()}
    for c, p in got["ws:1"]["probabilities"].items():
        assert got["ws:1:fp32"]["probabilities"][c] == pytest.approx(p, abs=1e-4)
    import onnxruntime as ort

    from edge_agent.proto.bundle import read_manifest_unverified
    from edge_agent.proto.preprocessing import TextPipeline
    from runtime.bundles import bundle_path

    q = ws.store.variant("ws", 1, "dynamic_int8")
    sess = ort.InferenceSession(str(ws.artifacts.get(q.artifact)), providers=["CPUExecutionProvider"])
    x, _ = TextPipeline(read_manifest_unverified(bundle_path(ws, "ws:1", "dynamic_int8"))["preprocessing"]).transform(
        [text])
    probs = sess.run(["probabilities"], {"input": x})[0][0]
    classes = ws.store.model_version("ws", 1).classes
    assert [got["ws@champion:dynamic_int8"]["probabilities"][c] for c in classes] == pytest.approx(probs, abs=1e-6)
    # static INT8 keeps its softmax in float: its probabilities came in 256 steps (every sure answer 0.992157)
    st = ort.InferenceSession(str(ws.artifacts.get(ws.store.variant("ws", 1, "static_int8").artifact)),
                              providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    xs = (np.abs(rng.normal(size=(200, x.shape[1]))) * (rng.random((200, x.shape[1])) < 0.05)).astype(np.float32)
    xs /= np.linalg.norm(xs, axis=1, keepdims=True) + 1e-9
    sp = st.run(["probabilities"], {"input": xs})[0]
    assert len(np.unique(sp)) > 300 and np.allclose(sp.sum(axis=1), 1, atol=1e-5), len(np.unique(sp))
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "models", "predict", "ws:1:tensorrt",
                          "--text", text], capture_output=True, text=True)
    assert out.returncode == 2 and "ws:1:tensorrt was not built (skipped: TensorRT unavailable" in out.stderr
    assert v["distill"]["details"]["params_student"] < v["distill"]["details"]["params_teacher"]
    assert v["lowrank"]["details"]["factorized_layers"]
    assert v["lowrank"]["message"].endswith("factorized, fine-tuned 1 epoch(s)"), v["lowrank"]["message"]
    assert v["qat"]["status"] == "skipped" and "Keras" in v["qat"]["message"]
    assert v["tensorrt"]["status"] == "skipped" and v["tensorrt"]["message"].startswith("TensorRT unavailable: ")
    # the export's parity check
    export = ws.store.last_step_run("deploy.export").summary
    assert export["parity_max_abs_diff"] < 1e-4 and export["parity_samples"] > 0
    # the bundles: signed, hashed, no code
    bundles = ws.store.last_step_run("deploy.package").summary["bundles"]
    assert {b["variant"] for b in bundles} == {"fp32", "dynamic_int8", "static_int8", "prune", "distill", "lowrank"}
    path = next(b["path"] for b in bundles if b["variant"] == "static_int8")
    with zipfile.ZipFile(path) as zf:
        assert sorted(zf.namelist()) == ["manifest.json", "manifest.sig", "model.onnx"]
    pub = (ws.root / ".cdl" / "keys" / "bundle-signing.pub.pem").read_bytes()
    data = open(path, "rb").read()
    m = verify_bytes(data, [pub])
    assert (m["name"], m["version"], m["variant"]) == ("ws", "1", "static_int8")
    assert m["raw_input"]["kind"] == "text" and m["preprocessing"]["stemmer"] == "porter"
    assert len(m["preprocessing"]["vocabulary"]) == m["input"]["shape"][1]
    assert m["classes"] == ["business", "entertainment", "politics", "sport", "tech"]
    ref = m["reference"]
    assert ref["n"] > 0 and sum(ref["predicted"]["counts"].values()) == ref["n"] and ref["confidence"]["sample"]
    assert {"length", "oov_rate"} <= set(ref["features"]) and ref["tracked_terms"]
    assert m["lineage"]["dataset_version"] == "v1" and m["lineage"]["git_commit"]
    assert m["members"]["model.onnx"]["sha256"] == ws.store.variant("ws", 1, "static_int8").artifact
    with pytest.raises(BundleError, match="wrong signature"):
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        other = Ed25519PrivateKey.generate().public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        verify_bytes(data, [other])
    # cdl package writes one bundle to a file
    out = tmp_path / "one.cdlb"
    subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "package", "ws:1:dynamic_int8", "-o",
                    str(out)], check=True, capture_output=True)
    assert verify_bytes(out.read_bytes(), [pub])["variant"] == "dynamic_int8"
    said = json.loads(subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "package", "ws:latest",
                                      "-o", str(out), "--json"], check=True, capture_output=True, text=True).stdout)
    assert said == {"ref": "ws:1", "variant": "fp32", "path": str(out), "size_bytes": out.stat().st_size,
                    "sha256": hashlib.sha256(out.read_bytes()).hexdigest()}
    # a variant deploy.package's variants names that was not built: named with those that were
    res = Runner(ws).run(steps=["deploy.package"], overrides={"deploy.package": {"variants": ["fp33", "fp32"]}})
    assert not res.ok and "no such built variant of ws:1: fp33 (built: fp32, dynamic_int8, static_int8, prune, " \
        "distill, lowrank; deploy.package's variants names them)" in res.steps[-1].error, res.steps[-1].error


@pytest.mark.parametrize(("entry", "said"), [
    ({"prune": {"sparsty": 0.8}}, "methods[0].prune: prune has no option 'sparsty' (did you mean 'sparsity'?); its "
     "options: sparsity, finetune_epochs, lr, name"),
    ({"prune": {"sparsity": 80}}, "methods[0].prune.sparsity: expected a number above 0 and at most 0.99, got 80"),
    ({"lowrank": {"rank": 2.5}}, "methods[0].lowrank.rank: expected a share of each layer's smaller side"),
    ({"static_int8": {"calibration_samples": "256"}}, "static_int8.calibration_samples: expected a whole number"),
    ({"distill": {"alpha": 1.5}}, "methods[0].distill.alpha: expected a number at least 0 and at most 1, got 1.5"),
    ({"dynamic_int8": {"per_channel": True}}, "dynamic_int8 has no option 'per_channel'; its options: name only"),
    ({"tensorrt": {"precision": "fp8"}}, "methods[0].tensorrt.precision: expected fp16 or int8, got 'fp8'"),
])
def test_a_compression_option_that_would_be_ignored_or_fail_is_refused(text_ws, entry, said):
    """A misspelt option ({prune: {sparsty: 0.8}}) was ignored, and the variant built with the default; a value of
    the wrong kind failed mid-step, after the methods before it had run. Both are refused before the run starts."""
    from runtime.domain.errors import CdlError

    cfg = text_ws.config()
    cfg.steps["deploy.compress"]["methods"] = ["dynamic_int8", entry]
    cfg.save()
    with pytest.raises(CdlError) as err:
        Runner(text_ws).run(until="deploy.compress")
    assert said.replace("methods[0]", "methods[1]") in str(err.value)
    assert text_ws.store.last_step_runs() == {}


@pytest.mark.tensorflow
def test_keras_variants(small_bbc):
    logs: list[str] = []
    res = _to_package(small_bbc, "keras", {"use_tuned": False, "epochs": 6, "patience": 0}, logs=logs)
    assert res.ok, [o.error for o in res.steps]
    for method, total in (("prune", 1), ("qat", 1), ("distill", 2), ("lowrank", 1)):
        _epoch_lines(logs, method, total)
    v = {x["name"]: x for x in variants_json(small_bbc.store, "ws:1")["variants"]}
    for name in ("fp32", "dynamic_int8", "static_int8", "prune", "qat", "distill", "lowrank"):
        assert v[name]["status"] == "ok", (name, v[name]["message"])
    assert small_bbc.store.last_step_run("deploy.export").summary["exporter"].startswith("tf2onnx")
    assert v["prune"]["details"]["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert v["qat"]["test_accuracy"] > 0.5
    # its weights stored as INT8: it was the size of FP32 (1.00), float weights beside QDQ nodes
    assert v["qat"]["details"]["int8_weights"] >= 2, v["qat"]["details"]
    assert v["qat"]["size_bytes"] < 0.35 * v["fp32"]["size_bytes"], (v["qat"]["size_bytes"], v["fp32"]["size_bytes"])
    assert "weight tensor(s) stored as INT8" in v["qat"]["message"]
    # lowrank's finetune_epochs was ignored for Keras models
    assert v["lowrank"]["message"].endswith("factorized, fine-tuned 1 epoch(s)"), v["lowrank"]["message"]


def test_image_model_through_an_agent(tmp_path, agent_factory):
    import tritonclient.grpc as tc
    from tritonclient.utils import InferenceServerException

    from runtime.api import add_source
    from runtime.devices import deploy
    from runtime.workspace import Workspace

    ws = Workspace.init(tmp_path / "fm", "image-classification")
    add_source(ws, make_fashion_subset(tmp_path / "fm-src", 1000, 200), {"class_names": "fashion-mnist"})
    cfg = ws.config()
    cfg.steps["model.tune"].update({"n_trials": 1, "max_epochs": 1})
    cfg.steps["model.train"].update({"epochs": 2, "use_tuned": False})
    cfg.steps["model.evaluate"]["threshold"] = 0.3
    cfg.steps["deploy.compress"]["methods"] = [{"static_int8": {"calibration_samples": 64}}]
    cfg.steps["deploy.revise"].update({"runs_b1": 5, "runs_b64": 3})
    cfg.save()
    first = Runner(ws).run(until="model.evaluate")
    assert first.ok, [(o.step, o.error) for o in first.steps if o.error]
    review(ws.store, "fm:1", True, "ok", "tester")
    res = Runner(ws).run(until="deploy.package")
    assert res.ok, [o.error for o in res.steps]
    agent = agent_factory(ws)
    deploy(ws, "fm:1", "static_int8", "dev1")
    from runtime.bundles import bundle_path
    from runtime.serve import _example_body  # `cdl serve --http`'s curl line: the shape of the pixels to send

    assert _example_body(bundle_path(ws, "fm:1", "static_int8")) == (
        '{"inputs": [{"name": "image", "shape": [1, 28, 28, 1], "datatype": "UINT8", "data": [...784 pixel values '
        '0-255...]}]}')
    view = ws.dataset()
    rows = [r for r in view.rows if r.split == "test"][:16]
    images = view.images(rows)
    client = tc.InferenceServerClient(agent.address, ssl=True, root_certificates=str(ws.root / ".cdl/pki/ca.crt"))
    meta = client.get_model_metadata("fm")
    assert meta.inputs[0].datatype == "UINT8" and list(meta.inputs[0].shape) == [-1, 28, 28, 1]
    config = client.get_model_config("fm").config  # Triton's model configuration says the same
    from tritonclient.grpc import model_config_pb2 as mc

    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("image", mc.TYPE_UINT8, [-1, 28, 28, 1])]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["variant"] == "static_int8" and params["preprocessing"] == "image"
    assert params["image_files"] == "BYTES [N] (PNG, JPEG, ...; resized to 28x28)"
    inp = tc.InferInput("image", list(images.shape), "UINT8")
    inp.set_data_from_numpy(images)
    r = client.infer("fm", [inp])
    labels = [b.decode() for b in r.as_numpy("label")]
    # the same variant in a local onnxruntime
    import onnxruntime as ort

    v = ws.store.variant("fm", 1, "static_int8")
    sess = ort.InferenceSession(str(ws.artifacts.get(v.artifact)), providers=["CPUExecutionProvider"])
    x = (images.astype(np.float32) / 255.0)[:, None, :, :]
    expected = sess.run(["probabilities"], {"input": x})[0]
    np.testing.assert_allclose(r.as_numpy("probabilities"), expected, atol=1e-5)
    classes = ws.store.model_version("fm", 1).classes
    assert labels == [classes[i] for i in expected.argmax(1)]
    flat = tc.InferInput("image", [16, 784], "UINT8")  # flattened pixels: refused, naming the shape that was sent
    flat.set_data_from_numpy(images.reshape(16, 784))
    with pytest.raises(InferenceServerException) as err:
        client.infer("fm", [flat])
    assert "shape [16, 784] is not a batch of 28x28x1 images: send [N, 28, 28, 1]" in str(err.value), err.value
    # image files as BYTES, as a camera app has them: decoded and fitted on the device as training fitted them (a
    # client had to resize to 28x28 grayscale pixels itself)
    import io as _io

    from PIL import Image

    from edge_agent.proto.images import decode_image, fit_image

    def encoded(a: np.ndarray, fmt: str) -> bytes:
        buf = _io.BytesIO()
        Image.fromarray(a).save(buf, format=fmt)
        return buf.getvalue()

    big = np.repeat(np.repeat(images[1].reshape(28, 28), 3, axis=0), 3, axis=1)  # 84x84, in colour, as a JPEG
    sent = [encoded(images[0].reshape(28, 28), "PNG"), encoded(np.stack([big, big // 2, big], -1), "JPEG")]
    files_in = tc.InferInput("image", [2], "BYTES")
    files_in.set_data_from_numpy(np.array(sent, dtype=np.object_))
    r = client.infer("fm", [files_in])
    fitted = np.stack([fit_image(decode_image(b), (28, 28, 1)) for b in sent])
    assert np.array_equal(fitted[0], images[0].reshape(28, 28, 1))
    x = (fitted.astype(np.float32) / 255.0).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(r.as_numpy("probabilities"), sess.run(["probabilities"], {"input": x})[0], atol=1e-5)
    np.testing.assert_allclose(r.as_numpy("probabilities")[0], expected[0], atol=1e-5)
    bad = tc.InferInput("image", [2], "BYTES")
    bad.set_data_from_numpy(np.array([sent[0], b"not an image"], dtype=np.object_))
    with pytest.raises(InferenceServerException, match=r"input image: file 1 is not an image this device can read "
                       r"\(no image format Pillow reads\); over REST, send image files as binary data"):
        client.infer("fm", [bad])
    two = tc.InferInput("image", [1, 2], "BYTES")
    two.set_data_from_numpy(np.array([sent], dtype=np.object_))
    with pytest.raises(InferenceServerException, match=r"2 image file\(s\) for shape \[1, 2\]; send image files as "
                       r"BYTES of shape \[N\]"):
        client.infer("fm", [two])
    client.close()
    # the same files over the REST binding with the stock tritonclient.http, which sends BYTES as binary data (the
    # protocol's JSON holds BYTES as strings); it was checked by hand only
    import json
    import ssl

    import tritonclient.http as th

    folder = agent.data_dir
    (folder / "agent.json").write_text(json.dumps({**json.loads((folder / "agent.json").read_text()),
                                                   "http_listen": "127.0.0.1:0"}))
    agent.stop()
    agent.start()
    ca = str(ws.root / ".cdl/pki/ca.crt")
    rest = th.InferenceServerClient(agent.rest_url.split("//")[1].removesuffix("/v2"), ssl=True,
                                    ssl_context_factory=lambda: ssl.create_default_context(cafile=ca))
    files_in = th.InferInput("image", [2], "BYTES")
    files_in.set_data_from_numpy(np.array(sent, dtype=np.object_))  # binary_data=True, tritonclient's default
    r = rest.infer("fm", [files_in])
    np.testing.assert_allclose(r.as_numpy("probabilities"), sess.run(["probabilities"], {"input": x})[0], atol=1e-5)
    pixels = th.InferInput("image", list(images.shape), "UINT8")
    pixels.set_data_from_numpy(images, binary_data=False)  # pixels as JSON numbers
    np.testing.assert_allclose(rest.infer("fm", [pixels]).as_numpy("probabilities"), expected, atol=1e-5)
    rest.close()
    # `cdl models predict fm:1:static_int8 --file IMAGE`: the variant in onnxruntime, as the device answered
    from runtime.ml.predict import predict_items

    files = []
    for k in range(3):
        files.append(tmp_path / f"img{k}.png")
        Image.fromarray(images[k].reshape(28, 28)).save(files[-1])
    got = predict_items(ws, "fm:1", files=files, variant="static_int8")
    np.testing.assert_allclose([[g["probabilities"][c] for c in classes] for g in got], expected[:3], atol=1e-5)
    from runtime.ml.predict import predict_source  # `--input FOLDER`: the same, a folder at a time

    (tmp_path / "pngs").mkdir()
    for f in files:
        f.rename(tmp_path / "pngs" / f.name)
    got = predict_source(ws, "fm:1", tmp_path / "pngs", variant="static_int8")  # img0-2.png, in name order
    np.testing.assert_allclose([[g["probabilities"][c] for c in classes] for g in got], expected[:3], atol=1e-5)
    files = [tmp_path / "pngs" / f.name for f in files]
    ckpt = predict_items(ws, "fm:1", files=files)  # the checkpoint, beside it
    assert [g["label"] for g in ckpt] == [g["label"] for g in predict_items(ws, "fm:1", files=files, variant="fp32")]
    ws.close()


def test_a_new_champion_with_the_same_weights_gets_its_own_variants(packaged):
    """A version trained again on the same data with the same seed has byte-identical weights, so its ONNX export
    was the one before: deploy.compress, revise and package stayed "up to date", the new champion had fp32 alone
    ("ws:2 has no variant 'dynamic_int8' (built: fp32)"), and deploy.push of its int8 variant failed."""
    from runtime.jobs import Runner
    from runtime.registry import review

    ws = packaged
    assert Runner(ws).run(steps=["model.train", "model.register", "model.evaluate"]).ok  # as it trained ws:1
    review(ws.store, "ws:2", True, "same again", "tester")
    assert Runner(ws).run(until="deploy.package").ok
    fp32 = {v: ws.store.variant("ws", v, "fp32").artifact for v in (1, 2)}
    assert fp32[1] == fp32[2]  # the same export: the case at hand
    built = {v.variant for v in ws.store.variants("ws", 2) if v.status == "ok"}
    assert {"fp32", "dynamic_int8", "static_int8"} <= built, built
    assert (ws.root / ".cdl" / "bundles" / "ws-v2-dynamic_int8.cdlb").exists()


def test_a_bundle_packaged_again_from_the_same_inputs_is_the_same_file(packaged, tmp_path):
    """Packaging stamped the time into the manifest and every zip member: `cdl run --force` made new bundles of
    the same models, and deploy.push pushed them to every device as new bundles, whose monitoring windows started
    empty."""
    from runtime.bundles import package
    from runtime.jobs import Runner

    ws = packaged
    one = package(ws, "ws:1", "dynamic_int8", tmp_path / "a.cdlb")
    two = package(ws, "ws:1", "dynamic_int8", tmp_path / "b.cdlb")
    assert one["sha256"] == two["sha256"]
    before = ws.store.last_step_run("deploy.package").output_fp
    assert Runner(ws).run(steps=["deploy.package"], force=True).ok
    assert ws.store.last_step_run("deploy.package").output_fp == before  # deploy.push stays up to date


def test_the_champions_variants_while_a_challenger_waits_for_its_review(small_bbc):
    """A new candidate waiting for its review stops every run at model.review, and `cdl models variants` of the
    champion gave `cdl run --until deploy.revise --set deploy.export.model=ws:1`, which stopped there too: an
    engineer could not build the champion's bundles until somebody reviewed the challenger. The hint now says so and
    gives the steps one at a time, which work."""
    ws = small_bbc
    cfg = ws.config()
    cfg.steps["model.tune"]["n_trials"] = 1
    cfg.steps["deploy.compress"]["methods"] = ["dynamic_int8"]
    cfg.save()
    assert Runner(ws).run(until="model.evaluate").ok
    review(ws.store, "ws:1", True, "first", "vera")
    cfg = ws.config()
    cfg.steps["model.train"].update({"seed": 7, "use_tuned": False})
    cfg.save()
    assert Runner(ws).run(until="model.evaluate").ok

    def cdl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), *args], capture_output=True,
                              text=True, timeout=600)

    plain = cdl("models", "variants", "ws:1")
    assert plain.returncode == 0 and "ws:1 has no variants" in plain.stderr and "waits" not in plain.stderr, plain
    r = cdl("run", "--until", "deploy.revise", "--set", "deploy.export.model=ws:1")
    assert r.returncode == 1 and "⏸ model.review: ws:2 awaits review" in r.stderr, r.stderr[-2000:]
    # the reviewer is told how the candidate compares with the champion, on the same test split
    two = ws.store.model_version("ws", 2)
    mine, theirs = two.metrics["test_accuracy"], two.evaluation["champion"]["test_accuracy"]
    sign = ">" if mine > theirs else "=" if mine == theirs else "<"
    assert (f"ws:2 awaits review (test_accuracy {mine:.4f} {sign} champion ws:1 {theirs:.4f} (both on this test "
            "split)): `cdl models review ws:2") in r.stderr, r.stderr[-2000:]
    assert ws.store.variants("ws", 1) == []  # what the hint gave did nothing for ws:1
    said = cdl("models", "variants", "ws:1").stderr
    assert ("; but model.review waits for ws:2's review, and that run stops there: review it first (`cdl models "
            "review ws:2 --approve|--reject --comment TEXT --reviewer NAME`), or run the three steps on their own: "
            "`cdl run deploy.export --set deploy.export.model=ws:1`, then `cdl run deploy.compress` and "
            "`cdl run deploy.revise`") in said, said
    packaged = cdl("package", "ws:1", "-o", str(ws.root / "b.cdlb"))
    assert packaged.returncode == 2 and "model.review waits for ws:2's review" in packaged.stderr, packaged.stderr
    # the steps it gives make ws:1's variants, the challenger still waiting
    for step in (["deploy.export", "--set", "deploy.export.model=ws:1"], ["deploy.compress"], ["deploy.revise"]):
        done = cdl("run", *step)
        assert done.returncode == 0, done.stderr[-2000:]
    assert [v["name"] for v in variants_json(ws.store, "ws:1")["variants"]] == ["fp32", "dynamic_int8"]
    assert ws.store.variants("ws", 2) == [] and not ws.store.reviews("ws", 2)
    # once the challenger is reviewed, nothing waits, and the hint for it is the plain one
    review(ws.store, "ws:2", False, "not better", "vera")
    assert "waits" not in cdl("models", "variants", "ws:2").stderr


class _LoadedSession:
    """An onnxruntime session's stand-in whose every call takes `ms`, times the machine's load at the moment: the
    load climbs as another job starts, as it did while deploy.revise timed FP32 and then, later, a pruned model."""

    clock = [0]

    def __init__(self, ms: float):
        self.ms = ms

    def run(self, outputs, feed):  # noqa: ANN001, ANN201
        import time

        _LoadedSession.clock[0] += 1
        load = 1.0 + _LoadedSession.clock[0] / 200  # up by half every hundred calls
        time.sleep(self.ms * load / 1000)


def test_a_variant_is_slower_than_fp32_only_when_timed_in_turns_with_it():
    """deploy.revise marked a pruned model (dense storage: FP32's work exactly) "slower" at 1.054 of FP32's median,
    and at 1.09 while another job ran: each was timed on its own, FP32 first. The mark now compares the two timed
    in turns (base, variant, variant, base, ...), so that the machine's load weighs on both."""
    import numpy as np

    from runtime.ml import onnx_tools
    from runtime.steps.deploy import slower_at

    X = np.zeros((4, 3), np.float32)
    fp32, prune = _LoadedSession(1.0), _LoadedSession(1.0)
    alone = [onnx_tools.interleaved_latency({"x": s}, X, 1, 60, warmup=0)["x"]["p50"] for s in (fp32, prune)]
    assert alone[1] / alone[0] > 1.1  # timed one after the other: the later one looks slower
    t = onnx_tools.interleaved_latency({"fp32": fp32, "prune": prune, "slow": _LoadedSession(1.5)}, X, 1, 60,
                                       warmup=0)
    same, slow = t["prune"]["p50"] / t["fp32"]["p50"], t["slow"]["p50"] / t["fp32"]["p50"]
    assert 0.95 < same < 1.05, same
    assert 1.35 < slow < 1.65, slow
    assert slower_at({"b1": same, "b64": same}, 1.05) == []
    assert slower_at({"b1": 0.9, "b64": slow}, 1.05) == ["b64"]


def test_the_slower_mark_says_at_which_batch_and_by_how_much():
    """A static INT8 model faster than FP32 at batch 1 and slower at 64 read "SLOWER than fp32" alone, in the log,
    `models variants` and the compression panel: it looked wrong."""
    from runtime.steps.deploy import slower_at, slower_words

    ratios = {"b1": 0.95, "b64": 1.0688}
    where = slower_at(ratios, 1.05)
    assert where == ["b64"]
    assert slower_words(where, ratios) == "SLOWER than fp32 at batch 64 (1.07× its median)"
    both = {"b1": 6.034, "b64": 10.58}
    assert slower_words(slower_at(both, 1.05), both) == (
        "SLOWER than fp32 at batch 1 (6.03× its median) and 64 (10.58× its median)")
    assert slower_words(None, both) == "SLOWER than fp32"  # a revision made before `slower_at` was kept
