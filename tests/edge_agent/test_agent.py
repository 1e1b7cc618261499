"""A real agent on 127.0.0.1: stock tritonclient inference, push/activate/rollback, crash safety, security."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import replace

import grpc
import numpy as np
import pytest

from edge_agent.proto.preprocessing import TextPipeline
from runtime.devices import DeviceClient, collect, deploy, devices_json, history_json, rollback
from runtime.domain.errors import CdlError
from tests.conftest import restart


def _test_texts(ws, n: int = 20) -> list[str]:
    from runtime.workspace.dataset import decode_text

    view = ws.dataset()
    rows = [r for r in view.rows if r.split == "test"][:n]
    return [decode_text(view.read_bytes(r))[0] for r in rows]


_CLIENTS: list = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def _triton(agent, ws):
    import tritonclient.grpc as tc

    c = tc.InferenceServerClient(agent.address, ssl=True, root_certificates=str(ws.root / ".cdl" / "pki" / "ca.crt"))
    _CLIENTS.append(c)
    return c


def _infer(client, texts: list[str], model: str = "ws", headers=None):  # noqa: ANN001
    import tritonclient.grpc as tc

    inp = tc.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    return client.infer(model, [inp], headers=headers)


def test_tritonclient_gives_the_same_output_as_onnxruntime(packaged, agent_factory):
    import onnxruntime as ort

    from edge_agent.proto.bundle import read_manifest_unverified

    ws = packaged
    agent = agent_factory(ws)
    res = deploy(ws, "ws:1", "fp32", "dev1")
    assert res["activated"]
    client = _triton(agent, ws)
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("ws", "1")
    assert not client.is_model_ready("ws", "7")
    meta = client.get_model_metadata("ws")
    assert meta.inputs[0].name == "text" and meta.inputs[0].datatype == "BYTES"
    texts = _test_texts(ws)
    r = _infer(client, texts)
    probs = r.as_numpy("probabilities")
    # the same model in a local onnxruntime, with the bundle's preprocessing
    bundle = next((ws.root / ".cdl" / "bundles").glob("ws-v1-fp32.cdlb"))
    manifest = read_manifest_unverified(bundle)
    with zipfile.ZipFile(bundle) as zf:
        model = zf.read("model.onnx")
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    x, _ = TextPipeline(manifest["preprocessing"]).transform(texts)
    expected = sess.run(["probabilities"], {"input": x})[0]
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    labels = [b.decode() for b in r.as_numpy("label")]
    assert labels == [manifest["classes"][i] for i in expected.argmax(1)]
    np.testing.assert_allclose(r.as_numpy("confidence"), expected.max(1), atol=1e-6)
    # bad requests get clear errors
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="not loaded"):
        _infer(client, texts[:1], model="other")
    import tritonclient.grpc as tc

    bad = tc.InferInput("text", [1, 4], "FP32")
    bad.set_data_from_numpy(np.zeros((1, 4), np.float32))
    with pytest.raises(InferenceServerException, match="BYTES"):
        client.infer("ws", [bad])
    # an input of another name, or texts in a shape that is not [N] or [N, 1], was taken as if right (as Triton,
    # refused: the request was likely meant for another model, and [1, 2] answered two texts to one row)
    for name, shape, says in (("txt", [1], "unknown input 'txt': ws takes one input, text"),
                              ("text", [1, 2], r"input text: shape \[1, 2\]; this model takes texts as \[N\] "
                                               r"\(or \[N, 1\]\)")):
        bad = tc.InferInput(name, shape, "BYTES")
        bad.set_data_from_numpy(np.array(texts[:int(np.prod(shape))], dtype=object).reshape(shape))
        with pytest.raises(InferenceServerException, match=says):
            client.infer("ws", [bad])
    col = tc.InferInput("text", [2, 1], "BYTES")  # a text a row, as a Triton model with batching takes them
    col.set_data_from_numpy(np.array(texts[:2], dtype=object).reshape(2, 1))
    assert [b.decode() for b in client.infer("ws", [col]).as_numpy("label").ravel()] == labels[:2]
    # Triton's classification extension (class_count): the k likeliest classes as "value:index:label", likeliest
    # first, as tritonclient's image_client example asks for them
    inp = tc.InferInput("text", [len(texts)], "BYTES")
    inp.set_data_from_numpy(np.array([t.encode() for t in texts], dtype=object))
    top = client.infer("ws", [inp], outputs=[tc.InferRequestedOutput("probabilities", class_count=3),
                                             tc.InferRequestedOutput("label")])
    ranked = top.as_numpy("probabilities")
    assert ranked.shape == (len(texts), 3) and top.as_numpy("confidence") is None
    for row, p in zip(ranked, expected, strict=True):
        want = np.argsort(-p, kind="stable")[:3]
        assert [c.decode() for c in row] == [f"{p[j]:f}:{j}:{manifest['classes'][j]}" for j in want]
    assert "classification" in client.get_server_metadata().extensions
    # an output the model does not give was left out of the answer without a word; now it is refused by name, as
    # is what the agent does not have (shared memory) and classification on an output that has no classes
    for out, says in ((tc.InferRequestedOutput("probs"), "unknown output 'probs': ws gives probabilities, label, "
                                                         "confidence"),
                      (tc.InferRequestedOutput("label", class_count=2), "output label: classification takes"),
                      (tc.InferRequestedOutput("confidence"), None)):
        if says is None:
            out.set_shared_memory("region", 64)
            says = "output confidence: the agent has no shared memory"
        with pytest.raises(InferenceServerException, match=says):
            client.infer("ws", [inp], outputs=[out])
    # a shape the texts do not fill was taken as it came (the image path checked it; Triton does)
    from tritonclient.grpc import service_pb2_grpc

    from tests.conftest import oip_text_request

    req = oip_text_request(texts[0])
    req.inputs[0].shape[:] = [3]
    stub = service_pb2_grpc.GRPCInferenceServiceStub(client._channel)
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(req)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "input text: 1 values for shape [3]"


def test_tritons_streaming_statistics_and_repository_index_from_a_stock_client(packaged, agent_factory):
    """What tritonclient also calls besides ModelInfer: ModelStreamInfer (start_stream/async_stream_infer: each
    answer as it finishes, matched by id; a bad request gets its error and the stream goes on), ModelStatistics
    (get_inference_statistics: counts and times the agent measured) and RepositoryIndex (the bundles on the
    device). They answered UNIMPLEMENTED."""
    import queue

    import tritonclient.grpc as tc

    ws = packaged
    agent = agent_factory(ws, workers=2)
    deploy(ws, "ws:1", "dynamic_int8", "dev1")
    active = deploy(ws, "ws:1", "fp32", "dev1")
    client = _triton(agent, ws)
    texts = _test_texts(ws, 30)
    expected = [b.decode() for b in _infer(client, texts).as_numpy("label")]
    got: queue.Queue = queue.Queue()
    client.start_stream(callback=lambda result, error: got.put((result, error)))
    for i, t in enumerate(texts):
        inp = tc.InferInput("text", [1], "BYTES")
        inp.set_data_from_numpy(np.array([t.encode()], dtype=object))
        client.async_stream_infer("ws", [inp], request_id=f"r{i}")
    bad = tc.InferInput("text", [1], "FP32")
    bad.set_data_from_numpy(np.zeros(1, np.float32))
    client.async_stream_infer("ws", [bad], request_id="bad")
    answers, errors = {}, []
    for _ in range(len(texts) + 1):
        result, error = got.get(timeout=60)
        if error is not None:
            errors.append(str(error))
        else:
            answers[result.get_response().id] = result.as_numpy("label")[0].decode()
    client.stop_stream()
    assert answers == {f"r{i}": label for i, label in enumerate(expected)}
    assert len(errors) == 1 and "this model takes text as BYTES, got FP32" in errors[0], errors
    # more at once than the agent answers on one stream together (STREAM_IN_FLIGHT): the rest wait, none is lost
    from edge_agent.server import STREAM_IN_FLIGHT

    n = STREAM_IN_FLIGHT + 150
    client.start_stream(callback=lambda result, error: got.put((result, error)))
    for i in range(n):
        inp = tc.InferInput("text", [1], "BYTES")
        inp.set_data_from_numpy(np.array([texts[i % len(texts)].encode()], dtype=object))
        client.async_stream_infer("ws", [inp], request_id=f"m{i}")
    many = {}
    for _ in range(n):
        result, error = got.get(timeout=120)
        assert error is None, error
        many[result.get_response().id] = result.as_numpy("label")[0].decode()
    client.stop_stream()
    assert many == {f"m{i}": expected[i % len(texts)] for i in range(n)}
    # statistics: summed over both workers, in ns as Triton's
    st = client.get_inference_statistics("ws", as_json=True)["model_stats"][0]
    inf = st["inference_stats"]
    assert (st["name"], st["version"]) == ("ws", "1")
    assert int(inf["success"]["count"]) == 1 + len(texts) + n and int(inf["fail"]["count"]) == 1, st
    assert int(st["inference_count"]) == 2 * len(texts) + n and 1 <= int(st["execution_count"]) <= 1 + len(texts) + n
    for k in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert int(inf[k].get("ns", 0)) > 0, (k, inf)
    assert int(inf["compute_infer"]["count"]) == 1 + len(texts) + n
    assert int(inf["success"]["ns"]) > int(inf["compute_infer"]["ns"]) / int(st["execution_count"])
    assert int(st["last_inference"]) / 1000 == pytest.approx(time.time(), abs=60)
    assert "statistics" in client.get_server_metadata().extensions
    # the repository: the active bundle READY, the one kept for a rollback not
    index = client.get_model_repository_index(as_json=True)["models"]
    assert sorted((m["name"], m["version"], m["state"]) for m in index) == [("ws", "1", "READY"),
                                                                         ("ws", "1", "UNAVAILABLE")], index
    assert [m for m in index if m["state"] != "READY"][0]["reason"].startswith("stored (dynamic_int8, bundle ")
    # the model's configuration (get_model_config answered UNIMPLEMENTED), in Triton's own message: the dims of
    # ModelMetadata and of the replies, batch dimension included (max_batch_size 0); the agent's own batching as
    # parameters; one instance in each of the two workers, on the CPU, where onnxruntime runs here
    assert "model_configuration" in client.get_server_metadata().extensions
    config = client.get_model_config("ws").config
    meta = client.get_model_metadata("ws")
    assert (config.name, config.platform, config.backend, config.max_batch_size) == ("ws", "onnxruntime_onnx",
                                                                                     "onnxruntime", 0)
    from tritonclient.grpc import model_config_pb2 as mc

    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("text", mc.TYPE_STRING, [-1])]
    assert [(o.name, mc.DataType.Name(o.data_type), list(o.dims)) for o in config.output] == [
        (t.name, "TYPE_STRING" if t.datatype == "BYTES" else "TYPE_" + t.datatype, list(t.shape))
        for t in meta.outputs]
    assert [list(o.dims) for o in config.output] == [[-1, 5], [-1], [-1]]
    reply = _infer(client, texts[:3])
    for o in config.output:  # what a reply of 3 has, -1 being the batch
        assert list(reply.as_numpy(o.name).shape) == [3 if d == -1 else d for d in o.dims]
    assert [(g.kind, g.count) for g in config.instance_group] == [(mc.ModelInstanceGroup.KIND_CPU, 2)]
    params = {k: v.string_value for k, v in config.parameters.items()}
    assert params["max_batch"] == "64" and params["max_queue_delay_ms"] == "2" and params["variant"] == "fp32"
    assert params["providers"] == "CPUExecutionProvider" and params["bundle_id"] == active["bundle_id"]
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="model nope is not loaded"):
        client.get_model_config("nope")  # it said "model nope version any is not loaded"
    with pytest.raises(InferenceServerException, match="model ws version 9 is not loaded"):
        client.get_model_config("ws", "9")


def test_pushing_the_active_bundle_again_sends_nothing_and_says_so(packaged, agent_factory):
    """`cdl deploy ws:1 --device dev1` twice: the second sent the bundle again, the device loaded the same model
    again, and the history said "activated" a second time. The device's active bundle is asked first now."""
    ws = packaged
    agent = agent_factory(ws)
    said: list[str] = []
    first = deploy(ws, "ws:1", "fp32", "dev1")
    again = deploy(ws, "ws:1", "fp32", "dev1", log=said.append)
    assert again["unchanged"] and again["bundle_id"] == first["bundle_id"] and again["bytes"] == 0
    assert said == [f"dev1: ws:1:fp32 active already: nothing sent (bundle {first['bundle_id'][:12]})"], said
    assert [(d["ref"], d["status"], d["message"]) for d in history_json(ws, "dev1")["deployments"]] == [
        ("ws:1:fp32", "done", "activated"), ("ws:1:fp32", "done", "active already: nothing sent, nothing changed")]
    other = deploy(ws, "ws:1", "dynamic_int8", "dev1")  # another bundle goes as before
    assert not other["unchanged"] and other["bytes"] > 0
    with DeviceClient(ws, "dev1") as c:
        h = c.health()
    # the device loaded fp32 once (its log), and the rollback target is fp32, not dynamic_int8 twice over
    assert h["active"]["previous_bundle_id"] == first["bundle_id"]
    agent.stop()
    assert sum(" INFO active: ws:1:fp32 " in line for line in agent.log().splitlines()) == 1, agent.log()


def test_push_activate_rollback_and_history(packaged, agent_factory):
    ws = packaged
    agent = agent_factory(ws)
    # no model yet: recorded as refused, with no model (it read "failed", beside rollbacks that broke halfway)
    with pytest.raises(CdlError, match="^device dev1 refused the rollback: nothing to roll back to: no previous model "
                                       "on this device; nothing changed there$"):
        rollback(ws, "dev1")
    from runtime.jobs import Runner

    push_state = lambda: next(s for s in Runner(ws).statuses() if s.id == "deploy.push")  # noqa: E731
    assert (push_state().status.value, push_state().reason) == ("never-run", "")
    first = deploy(ws, "ws:1", "fp32", "dev1")
    second = deploy(ws, "ws:1", "dynamic_int8", "dev1")
    # the flowchart's Deploy card, never run by the pipeline, says that devices got models outside it (it said
    # "never run" and nothing else)
    state = push_state()
    assert state.status.value == "never-run"
    assert state.reason.startswith("not run by the pipeline, but 1 device got models outside it (cdl deploy, the "
                                   "devices panel): the last, ws:1:dynamic_int8 on dev1 at "), state.reason
    with DeviceClient(ws, "dev1") as c:
        h = c.health()
        assert h["active"]["variant"] == "dynamic_int8" and h["active"]["previous_bundle_id"] == first["bundle_id"]
        assert {m["variant"] for m in c.list_models()} == {"fp32", "dynamic_int8"}
        assert h["providers"] == ["CPUExecutionProvider"]
        assert h["rest"] is None  # no REST binding unless asked for
    back = rollback(ws, "dev1")
    assert back["bundle_id"] == first["bundle_id"] and back["variant"] == "fp32"
    # the device's record (cdl devices list) says what it serves after the rollback, not what the last health
    # check before it saw
    (listed,) = devices_json(ws)["devices"]
    assert listed["active"]["bundle_id"] == first["bundle_id"] and listed["last_seen"]
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "devices", "list"],
                         capture_output=True, text=True)
    assert "active ws:1:fp32" in out.stdout, out.stdout + out.stderr
    # a variant, model or device that does not exist is an input error (exit 2) and touches no device
    for ref, device, says in (("ws:1:nope", "dev1", "no variant 'nope'"), ("ws:9", "dev1", "ws has no version 9"),
                              ("ws:1", "nodev", "'nodev' is not enrolled")):
        out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "deploy", ref, "--device",
                              device], capture_output=True, text=True)
        assert out.returncode == 2 and says in out.stderr, (ref, out.returncode, out.stderr)
    with DeviceClient(ws, "dev1") as c:
        assert c.health()["active"]["bundle_id"] == first["bundle_id"]
        # activate a stored bundle explicitly
        assert c.activate(second["bundle_id"])["variant"] == "dynamic_int8"
    hist = history_json(ws, "dev1")["deployments"]
    assert [(d["action"], d["ref"], d["status"]) for d in hist] == [
        ("rollback", "-", "refused"), ("deploy", "ws:1:fp32", "done"), ("deploy", "ws:1:dynamic_int8", "done"),
        ("rollback", "ws:1:fp32", "done")]
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "devices", "history"],
                         capture_output=True, text=True)
    assert " rollback - refused " in out.stdout.splitlines()[0], out.stdout  # it printed "rollback :: failed"
    # stored without activation
    third = deploy(ws, "ws:1", "static_int8", "dev1", activate=False)
    assert not third["activated"]
    assert devices_json(ws)["devices"][0]["active"]["variant"] == "dynamic_int8"
    with DeviceClient(ws, "dev1") as c:
        assert c.health()["active"]["variant"] == "dynamic_int8"
    # the device's own log says what it stored, served and rolled back to (it had its start line alone), and
    # what the workstation collected
    _infer(_triton(agent, ws), _test_texts(ws, 3))
    collect(ws)
    agent.stop()
    said = [re.sub(r"\(\d+ KiB\)", "(N KiB)", line.split(" INFO ", 1)[1])
            for line in agent.log().splitlines() if " INFO " in line]
    ids = {k: v["bundle_id"][:12] for k, v in (("fp32", first), ("dynamic_int8", second), ("static_int8", third))}
    assert [x for x in said if not x.startswith("deleted bundle")] == [
        f"stored bundle {ids['fp32']}: ws:1:fp32 (N KiB)",
        f"active: ws:1:fp32 (bundle {ids['fp32']}) on CPUExecutionProvider",
        f"stored bundle {ids['dynamic_int8']}: ws:1:dynamic_int8 (N KiB)",
        f"active: ws:1:dynamic_int8 (bundle {ids['dynamic_int8']}) on CPUExecutionProvider",
        f"rolled back: active ws:1:fp32 (bundle {ids['fp32']})",
        f"active: ws:1:dynamic_int8 (bundle {ids['dynamic_int8']}) on CPUExecutionProvider",
        f"stored bundle {ids['static_int8']}: ws:1:static_int8 (N KiB)",
        "scoring records up to seq 3 collected by the workstation; 0 pruned (acknowledged and older than "
        "retention_seconds 86400)"], said


def test_the_deploy_card_says_when_devices_changed_after_the_pipelines_push(packaged, agent_factory):
    """deploy.push stayed "done" with nothing more after `cdl deploy` gave a device another model or a rollback
    took it back: the flowchart said the devices served what the pipeline pushed."""
    from runtime.jobs import Runner

    ws = packaged
    state = lambda: next(s for s in Runner(ws).statuses() if s.id == "deploy.push")  # noqa: E731
    # no device yet: the step waits for one (a first Run all ended red, deploy.push "failed"), and runs once enrolled
    assert not Runner(ws).run(steps=["deploy.push"]).ok
    assert state().status.value == "waiting" and state().reason.startswith(
        "ws:1 waits for a device: none is enrolled yet (`cdl devices enroll NAME --address HOST:PORT`"), state().reason
    assert "enrolled since" not in state().reason
    agent_factory(ws)
    # enrolled: the wait's reason says so (it still said "none is enrolled yet")
    assert state().status.value == "waiting" and state().reason.endswith(
        "; dev1 enrolled since: `cdl run deploy.push` pushes to them"), state().reason
    assert Runner(ws).run(steps=["deploy.push"]).ok
    assert (state().status.value, state().reason) == ("done", "")
    deploy(ws, "ws:1", "fp32", "dev1")  # what the pipeline pushed, again: nothing changed there
    assert (state().status.value, state().reason) == ("done", "")
    deploy(ws, "ws:1", "dynamic_int8", "dev1")
    s = state()
    assert s.status.value == "done" and s.reason.startswith(
        "devices changed since it ran, outside it: dev1 got ws:1:dynamic_int8 at "), s.reason
    rollback(ws, "dev1")
    s = state()
    assert "dev1 was rolled back to ws:1:fp32 at " in s.reason and s.reason.endswith("(2 changes in all)"), s.reason
    assert Runner(ws).run(steps=["deploy.push"]).ok  # the pipeline pushes again: nothing since
    assert state().reason == ""


def test_deploy_push_rolls_out_in_stages_when_cdl_yaml_says_so(packaged, agent_factory):
    """deploy.push with `canary: N` (the pipeline's "Run all" pushes to every enrolled device): the first N devices
    in name order get the model and are watched, as `cdl deploy --canary`. Too little traffic rolls the canary back
    and fails the step; a run cancelled during the watch rolls the canary back too (it stayed on the new model,
    unwatched, when the command was interrupted there)."""
    from runtime.jobs import Runner

    ws = packaged
    agent_factory(ws, "dev2")
    agent_factory(ws, "dev1")
    for d in ("dev1", "dev2"):
        deploy(ws, "ws:1", "dynamic_int8", d)

    def active(d: str) -> str:
        with DeviceClient(ws, d) as c:
            return c.health()["active"]["variant"]

    staged = {"variant": "static_int8", "canary": 1, "watch_s": 1, "min_requests": 3}
    res = Runner(ws).run(steps=["deploy.push"], overrides={"deploy.push": staged})
    assert not res.ok
    assert ("canary failed, rolled back; dev2 not touched: dev1 answered 0 request(s) in 1 s, fewer than 3"
            in res.steps[0].error), res.steps[0].error
    assert active("dev1") == active("dev2") == "dynamic_int8"
    # cancelled while the canary is watched: it goes back at once
    cancel = threading.Event()
    runner = Runner(ws, cancel=cancel)
    out = {}
    t = threading.Thread(target=lambda: out.update(res=runner.run(
        steps=["deploy.push"], overrides={"deploy.push": {**staged, "watch_s": 600}})))
    t.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and ws.store.deployments("dev1")[-1].variant != "static_int8":
        time.sleep(0.1)
    cancel.set()
    t.join(60)
    assert not t.is_alive() and out["res"].status == "cancelled", out
    assert active("dev1") == active("dev2") == "dynamic_int8"
    assert [(h.action, h.variant) for h in ws.store.deployments("dev1")][-2:] == [("deploy", "static_int8"),
                                                                                 ("rollback", "dynamic_int8")]
    from runtime.jobs.bus import EventBus

    said: list[str] = []
    bus = EventBus()
    bus.subscribe(lambda e: said.append(e.message))
    res = Runner(ws, bus=bus).run(steps=["deploy.push"], overrides={"deploy.push": {**staged, "min_requests": 0,
                                                                                   "check_drift": True}})
    assert res.ok, res.steps[0].error
    assert res.steps[0].summary["canary"] == {"dev1": {"requests": 0, "errors": 0, "drift": None}}
    assert "dev1: no drift verdict: 0 record(s) in the window; at least 50 are needed for a check" in said, said
    assert res.steps[0].message == "ws:1:static_int8 on 2 device(s), canary dev1 first"
    assert active("dev1") == active("dev2") == "static_int8"
    res = Runner(ws).run(steps=["deploy.push"], overrides={"deploy.push": {**staged, "devices": ["dev1"]}})
    assert not res.ok and "a staged rollout needs more devices than canaries" in res.steps[0].error
    # `variant: served`: each device keeps the variant it serves, where built (the loop does the same)
    deploy(ws, "ws:1", "dynamic_int8", "dev2")
    res = Runner(ws).run(steps=["deploy.push"], overrides={"deploy.push": {"variant": "served"}})
    assert res.ok and res.steps[0].message == "ws:1 (dev1 static_int8, dev2 dynamic_int8) on 2 device(s)", res.steps
    assert active("dev1") == "static_int8" and active("dev2") == "dynamic_int8"
    # a configured variant replaces what a device served, and the log says so
    said.clear()
    assert Runner(ws, bus=bus).run(steps=["deploy.push"], overrides={"deploy.push": {"devices": ["dev2"]}}).ok
    assert "dev2 served dynamic_int8; it gets fp32 (deploy.push's variant; `variant: served` keeps each device's)" \
        in said, said
    assert active("dev2") == "fp32"
    # a device named in cdl.yaml but not enrolled is refused before the run starts, with either kind of variant
    # (it failed when the push got there, after the steps before it), and no device is touched
    from runtime.domain.errors import ConfigError

    for variant in ("served", "dynamic_int8"):
        with pytest.raises(ConfigError, match="deploy.push.devices: 'nope' is not enrolled; enrolled: dev1, dev2"):
            Runner(ws).run(steps=["deploy.push"], overrides={"deploy.push": {"devices": ["nope", "dev2"],
                                                                            "variant": variant}})
    assert active("dev2") == "fp32"


def test_a_staged_rollout_goes_on_only_when_the_canary_does_well(packaged, agent_factory):
    """`cdl deploy REF --device A --device B --canary 1`: A gets the model first and is watched; B only when A
    answered its requests well. Failing requests (here: malformed ones sent to A while it is watched), or too few
    to judge, roll A back and leave B alone."""
    import tritonclient.grpc as tc

    from runtime.devices import staged_deploy

    ws = packaged
    a, b = agent_factory(ws, "dev1"), agent_factory(ws, "dev2")
    for d in ("dev1", "dev2"):
        deploy(ws, "ws:1", "fp32", d)
    texts = _test_texts(ws, 10)

    def traffic(agent, good: bool):  # noqa: ANN001, ANN202 - during the watch, as the canary's users would
        def send(_seconds: float) -> None:
            client = _triton(agent, ws)
            for t in texts:
                if good:
                    _infer(client, [t])
                else:
                    bad = tc.InferInput("text", [1], "FP32")  # a text model takes BYTES: INVALID_ARGUMENT
                    bad.set_data_from_numpy(np.zeros(1, np.float32))
                    with pytest.raises(tc.InferenceServerException):
                        client.infer("ws", [bad])
        return send

    def active(d: str) -> str:
        with DeviceClient(ws, d) as c:
            return c.health()["active"]["variant"]

    said: list[str] = []
    done = staged_deploy(ws, "ws:1", "dynamic_int8", ["dev1", "dev2"], canary=1, watch_s=1, min_requests=5,
                         log=said.append, sleep=traffic(a, good=True))
    assert done["canary"]["dev1"] == {"requests": 10, "errors": 0}
    assert active("dev1") == active("dev2") == "dynamic_int8"
    assert any(m.startswith("canary: dev1 10 requests, 0 errors; now dev2") for m in said), said
    # failing requests on the canary: it rolls back, dev2 keeps what it had
    with pytest.raises(CdlError, match=r"canary failed, rolled back; dev2 not touched: dev1: 10 of 10 requests "
                                       r"failed \(100%, more than 5%\)"):
        staged_deploy(ws, "ws:1", "static_int8", ["dev1", "dev2"], canary=1, watch_s=1,
                      sleep=traffic(a, good=False))
    assert active("dev1") == active("dev2") == "dynamic_int8"
    hist = [(h["device"], h["action"], h["ref"]) for h in history_json(ws)["deployments"]][-2:]
    assert hist == [("dev1", "deploy", "ws:1:static_int8"), ("dev1", "rollback", "ws:1:dynamic_int8")]
    # too little traffic to judge, through the command line (a watch of one second with no requests)
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "deploy", "ws:1:static_int8",
                          "--device", "dev2", "--device", "dev1", "--canary", "1", "--watch", "1", "--min-requests",
                          "3"], capture_output=True, text=True)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "dev2 answered 0 request(s) in 1 s, fewer than 3: not enough to judge" in out.stderr
    assert "dev1 not touched" in out.stderr and "dev2: rolled back" in out.stdout
    assert active("dev1") == active("dev2") == "dynamic_int8"
    # the same with --json, for a CI job: what was done to each device on stdout, the progress on stderr
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "deploy", "ws:1:static_int8",
                          "--device", "dev2", "--device", "dev1", "--canary", "1", "--watch", "1", "--min-requests",
                          "3", "--json"], capture_output=True, text=True)
    assert out.returncode == 1, out.stdout + out.stderr
    doc = json.loads(out.stdout)
    assert (doc["ref"], doc["variant"], doc["ok"], doc["canary"]) == ("ws:1", "static_int8", False, None)
    assert len(doc["errors"]) == 1 and "fewer than 3: not enough to judge" in doc["errors"][0]
    assert [(d["device"], d["action"], d["ref"], d["status"]) for d in doc["deployments"]] == [
        ("dev2", "deploy", "ws:1:static_int8", "done"), ("dev2", "rollback", "ws:1:dynamic_int8", "done")]
    assert "canary dev2: watching" in out.stderr and "dev2: rolled back" in out.stderr
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "deploy", "ws:1", "--device",
                          "dev1", "--canary", "1"], capture_output=True, text=True)
    assert out.returncode == 2 and "--canary needs two devices or more" in out.stderr
    # --all: every enrolled device (in name order: dev1 is the canary here)
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "deploy", "ws:1:fp32", "--all",
                          "--canary", "1", "--watch", "1", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "canary dev1: watching" in out.stderr and active("dev1") == active("dev2") == "fp32"
    # a canary nobody called judged nothing, and the log says so (it read as a canary that did well)
    assert "dev1 answered no request while watched, so nothing was judged there (--min-requests" in out.stderr
    doc = json.loads(out.stdout)
    assert doc["ok"] and doc["errors"] == [] and doc["canary"] == {"dev1": {"requests": 0, "errors": 0}}
    assert [(d["device"], d["action"], d["ref"], d["message"]) for d in doc["deployments"]] == [
        ("dev1", "deploy", "ws:1:fp32", "activated"), ("dev2", "deploy", "ws:1:fp32", "activated")]
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "rollback", "--device", "dev1",
                          "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert (doc["device"], doc["ok"], doc["active"]["variant"], doc["note"]) == ("dev1", True, "dynamic_int8", None), doc
    assert active("dev1") == "dynamic_int8"
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "deploy", "ws:1"],
                         capture_output=True, text=True)
    assert out.returncode == 2 and "or give --all for every enrolled one" in out.stderr
    # a version its reviewer rejected: refused before any device is touched (it went out without a word), --force
    ws.store.add_review("ws", 1, "vera", "rejected", "leaks the test split", False)
    n = len(ws.store.deployments())
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "deploy", "ws:1:static_int8",
                          "--device", "dev1"], capture_output=True, text=True)
    assert out.returncode == 2 and ("ws:1 was rejected by vera (leaks the test split): deploying it puts it on dev1; "
                                    "--force deploys it all the same") in out.stderr, out.stderr
    assert len(ws.store.deployments()) == n and active("dev1") == "dynamic_int8"
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "deploy", "ws:1:static_int8",
                          "--device", "dev1", "--force"], capture_output=True, text=True)
    assert out.returncode == 0 and active("dev1") == "static_int8", out.stderr
    ws.store.add_review("ws", 1, "vera", "approved", "fixed", False)
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "deploy", "ws:1:fp32",
                          "--device", "dev1"], capture_output=True, text=True)
    assert out.returncode == 0 and active("dev1") == "fp32", out.stderr
    # a rollback is not refused (one does it in a hurry), but a rejected version serving again is said
    ws.store.add_review("ws", 1, "vera", "rejected", "leaks after all", False)
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "rollback", "--device", "dev1"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and active("dev1") == "static_int8", out.stderr
    assert "note: ws:1 was rejected by vera (leaks after all), and serves on dev1 again" in out.stderr, out.stderr
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "rollback", "--device", "dev1",
                          "--json"], capture_output=True, text=True)  # the JSON carries the note too
    res = json.loads(out.stdout)
    assert out.returncode == 0 and res["ok"] and res["active"]["variant"] == "fp32", out.stderr
    assert res["note"] == "ws:1 was rejected by vera (leaks after all), and serves on dev1 again", res
    del b


def test_agent_killed_during_a_push_keeps_the_old_model(packaged, agent_factory):
    ws = packaged
    agent = agent_factory(ws)
    old = deploy(ws, "ws:1", "fp32", "dev1")
    from runtime.bundles import bundle_path

    big = bundle_path(ws, "ws:1", "static_int8")
    # a push that stops after two chunks (the client died), then the agent is killed
    with DeviceClient(ws, "dev1") as c, pytest.raises(CdlError, match="incomplete"):
        c.push(big, activate=True, max_chunks=2, chunk_size=16 * 1024)
    agent.kill()
    restart(ws, agent)
    with DeviceClient(ws, "dev1") as c:
        h = c.health()
        assert h["active"]["bundle_id"] == old["bundle_id"]
        assert {m["variant"] for m in c.list_models()} == {"fp32"}
    # the agent killed while the rest of the upload streams in
    sent = threading.Event()

    def kill_soon() -> None:
        sent.wait(30)
        agent.kill()

    killer = threading.Thread(target=kill_soon)
    killer.start()
    with DeviceClient(ws, "dev1") as c:
        orig = c.stub.PushBundle

        def slow_push(chunks, **kw):  # noqa: ANN001, ANN202
            def gen():  # noqa: ANN202
                for i, ch in enumerate(chunks):
                    if i == 3:
                        sent.set()
                        time.sleep(1.0)
                    yield ch

            return orig(gen(), **kw)

        c.stub.PushBundle = slow_push
        with pytest.raises(CdlError):
            c.push(big, activate=True, chunk_size=16 * 1024)
    killer.join()
    restart(ws, agent)
    with DeviceClient(ws, "dev1") as c:
        assert c.health()["active"]["bundle_id"] == old["bundle_id"]
    # and the upload resumes where it stopped, then activates
    logs: list[str] = []
    res = deploy(ws, "ws:1", "static_int8", "dev1", log=logs.append)
    assert any("resuming the upload at byte" in m for m in logs)
    assert res["activated"]
    with DeviceClient(ws, "dev1") as c:
        assert c.health()["active"]["variant"] == "static_int8"


def _set_agent_json(agent, **fields) -> None:  # noqa: ANN001, ANN003
    path = agent.data_dir / "agent.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


def test_the_device_folder_does_not_grow_without_end(packaged, agent_factory):
    """Bundles beyond keep_bundles are deleted (never the active or the previous one), a push the disk has no
    room for is refused before a byte is written, and an upload left for a week goes at the next start. Every
    push used to stay on the device for good, and a push could fill the disk the scoring journal needs."""
    from runtime.bundles import bundle_path

    ws = packaged
    agent = agent_factory(ws)
    agent.stop()
    _set_agent_json(agent, keep_bundles=2)
    restart(ws, agent)
    first = deploy(ws, "ws:1", "fp32", "dev1")
    second = deploy(ws, "ws:1", "dynamic_int8", "dev1")
    third = deploy(ws, "ws:1", "static_int8", "dev1")
    stored = agent.data_dir / "bundles"
    with DeviceClient(ws, "dev1") as c:
        assert {m["variant"] for m in c.list_models()} == {"dynamic_int8", "static_int8"}
    assert not (stored / first["bundle_id"]).exists()
    assert sorted(p.name for p in stored.iterdir()) == sorted([second["bundle_id"], third["bundle_id"]])
    assert rollback(ws, "dev1")["variant"] == "dynamic_int8"  # the previous one stays for a rollback
    # a push stored without activation is kept over the older ones; the active and previous stay too
    again = deploy(ws, "ws:1", "fp32", "dev1", activate=False)
    with DeviceClient(ws, "dev1") as c:
        models = {m["bundle_id"]: m for m in c.list_models()}
        assert c.health()["active"]["bundle_id"] == second["bundle_id"]
    assert set(models) == {again["bundle_id"], second["bundle_id"], third["bundle_id"]}

    # no room: refused with the figures, and nothing written
    import shutil

    agent.stop()
    _set_agent_json(agent, min_free_bytes=shutil.disk_usage(agent.data_dir).free + (1 << 30))
    restart(ws, agent)
    with pytest.raises(CdlError, match="RESOURCE_EXHAUSTED: not enough disk space on the device: .* MiB free") as e:
        deploy(ws, "ws:1", "static_int8", "dev1")  # static_int8 was deleted above, it is pushed anew
    assert "min_free_bytes" in str(e.value)
    assert list((agent.data_dir / "incoming").iterdir()) == []
    with DeviceClient(ws, "dev1") as c:
        assert c.health()["active"]["bundle_id"] == second["bundle_id"]
    assert history_json(ws, "dev1")["deployments"][-1]["status"] == "failed"

    # an upload nobody resumes for a week is deleted when the agent starts
    agent.stop()
    _set_agent_json(agent, min_free_bytes=0)
    restart(ws, agent)
    with DeviceClient(ws, "dev1") as c, pytest.raises(CdlError, match="incomplete"):
        c.push(bundle_path(ws, "ws:1", "static_int8"), activate=True, max_chunks=1, chunk_size=16 * 1024)
    left = sorted((agent.data_dir / "incoming").iterdir())
    assert [p.suffix for p in left] == [".json", ".part"]
    agent.stop()
    restart(ws, agent)
    assert sorted((agent.data_dir / "incoming").iterdir()) == left  # a day-old upload may still be resumed
    agent.stop()
    week_ago = time.time() - 8 * 86400
    for p in left:
        os.utime(p, (week_ago, week_ago))
    restart(ws, agent)
    assert list((agent.data_dir / "incoming").iterdir()) == []


@pytest.fixture
def small_disk(tmp_path):
    """A 48 MiB tmpfs (needs root, or a container that lets it mount)."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({r.stderr.strip() or r.returncode}): the full-disk test needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_disk_that_fills_up_during_a_push(packaged, small_disk):
    """The disk fills while a bundle streams in: the push fails with RESOURCE_EXHAUSTED, the partial upload is
    deleted (the journal needs the room), the old model serves and journals; with room again the push works."""
    from runtime.bundles import bundle_path
    from runtime.devices import enroll
    from tests.conftest import AgentProcess

    ws = packaged
    enroll(ws, "small", "127.0.0.1:0", small_disk / "dev")
    agent = AgentProcess(small_disk / "dev")
    _set_agent_json(agent, min_free_bytes=0)
    restart(ws, agent, "small")
    try:
        old = deploy(ws, "ws:1", "fp32", "small")
        filler = small_disk / "filler"
        big = bundle_path(ws, "ws:1", "static_int8")
        started = threading.Event()
        with DeviceClient(ws, "small") as c:
            orig = c.stub.PushBundle

            def filling_push(chunks, **kw):  # noqa: ANN001, ANN202
                def gen():  # noqa: ANN202
                    for i, ch in enumerate(chunks):
                        if i == 2:  # the agent has accepted the push: now the disk fills up
                            with open(filler, "wb") as fh:
                                try:
                                    while True:
                                        fh.write(b"\0" * (1 << 20))
                                        fh.flush()
                                except OSError:
                                    pass
                            started.set()
                        yield ch

                return orig(gen(), **kw)

            c.stub.PushBundle = filling_push
            with pytest.raises(CdlError, match="RESOURCE_EXHAUSTED: the device could not store the upload") as e:
                c.push(big, activate=True, chunk_size=16 * 1024)
        assert started.is_set() and "the active model is unchanged" in str(e.value)
        assert list((agent.data_dir / "incoming").iterdir()) == []
        filler.unlink()
        client = _triton(agent, ws)
        _infer(client, _test_texts(ws, 2))
        with DeviceClient(ws, "small") as c:
            h = c.health()
        assert h["active"]["bundle_id"] == old["bundle_id"] and h["journal"]["last_seq"] == 2
        assert deploy(ws, "ws:1", "static_int8", "small")["activated"]
    finally:
        agent.stop()


def test_health_warns_of_low_disk_and_uncollected_records(packaged, small_disk, monkeypatch):
    """A device's disk filling up, or its scoring records piling up uncollected, stops it answering (nothing is
    served unjournaled): `cdl devices status`, the devices panel and the doctor warn before that, each saying what
    to do. The 48 MiB tmpfs is really low on disk; the backlog threshold is lowered to five records."""
    from click.testing import CliRunner

    import runtime.devices
    from runtime.cli import cli
    from runtime.devices import enroll
    from runtime.doctor import diagnose
    from tests.conftest import AgentProcess

    ws = packaged
    enroll(ws, "small", "127.0.0.1:0", small_disk / "dev")
    agent = AgentProcess(small_disk / "dev")
    _set_agent_json(agent, min_free_bytes=0)  # the tmpfs is smaller than the 64 MiB a push leaves free by default
    restart(ws, agent, "small")
    try:
        deploy(ws, "ws:1", "fp32", "small")
        _infer(_triton(agent, ws), _test_texts(ws, 6))
        monkeypatch.setattr(runtime.devices, "BACKLOG_RECORDS", 5)
        with DeviceClient(ws, "small") as c:
            h = c.health()
        disk, backlog = h["warnings"]
        assert "MiB of disk free: the agent stops answering when its journal cannot be written" in disk
        assert "`cdl devices collect small`" in disk
        assert backlog.startswith("6 scoring records not collected yet")
        out = CliRunner().invoke(cli, ["-w", str(ws.root), "devices", "status", "small"])
        assert out.exit_code == 0, out.output
        assert "  warning: " in out.output and "6 scoring records not collected yet" in out.output
        found = [c for c in diagnose(ws)["checks"] if c["area"] == "devices" and "small (as of" in c["detail"]]
        assert [c["status"] for c in found] == ["warn", "warn"], found
        collect(ws, ["small"])
        with DeviceClient(ws, "small") as c:
            (left,) = c.health()["warnings"]  # collected: the backlog is gone, the disk is still small
        assert "MiB of disk free" in left
    finally:
        agent.stop()


def test_scoring_survives_killed_agent_and_collector(packaged, agent_factory, tmp_path):
    import subprocess
    import sys

    ws = packaged
    agent = agent_factory(ws, raw_below=1.01)  # keep every raw input
    deploy(ws, "ws:1", "fp32", "dev1")
    texts = _test_texts(ws, 10)
    client = _triton(agent, ws)
    replies = 0
    for _ in range(30):
        _infer(client, texts)
        replies += len(texts)
    # the agent killed while requests are in flight: every reply it gave was journaled first
    stop = threading.Event()
    got = {"n": 0}

    def traffic() -> None:
        c = _triton(agent, ws)
        while not stop.is_set():
            try:
                _infer(c, texts[:2])
                got["n"] += 2
            except Exception:  # noqa: BLE001 - the agent died under us
                return

    t = threading.Thread(target=traffic)
    t.start()
    time.sleep(0.5)
    agent.kill()
    stop.set()
    t.join()
    replies += got["n"]
    restart(ws, agent)
    # the collector killed (SIGKILL) at random moments
    env = dict(os.environ)
    for delay in (0.6, 0.9, 1.2):
        proc = subprocess.Popen([sys.executable, "-c",
                                 "import sys; from pathlib import Path; from runtime.workspace import Workspace;"
                                 "from runtime.devices import collect; collect(Workspace(Path(sys.argv[1])), batch=20)",
                                 str(ws.root)], env=env)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    collect(ws)
    from runtime.devices import scoring_store

    store = scoring_store(ws)
    with DeviceClient(ws, "dev1") as c:
        h = c.health()
    last = h["journal"]["last_seq"]
    rows = store.query("SELECT seq FROM scoring WHERE device = 'dev1' ORDER BY seq")
    seqs = [r[0] for r in rows]
    assert seqs == list(range(1, last + 1))  # nothing lost, nothing twice
    assert last >= replies
    assert h["journal"]["acked_seq"] == last
    sample = store.query("SELECT label, confidence, input_summary, raw_input FROM scoring LIMIT 1")[0]
    assert sample[0] and 0 < sample[1] <= 1 and json.loads(sample[2])["length"] > 0 and sample[3]


def test_a_replaced_journal_is_collected_after_the_old_one(packaged, agent_factory):
    """A device whose journal file was lost (a wiped disk, a fresh folder) numbers its predictions from 1 again.
    The collector asked it for records after the highest number it had stored, so it skipped them all until the
    new numbers passed the old, and never acknowledged them. Now each journal has an id, and a new one's records
    are filed after the old ones."""
    from runtime.devices import scoring_store

    ws = packaged
    agent = agent_factory(ws)
    deploy(ws, "ws:1", "fp32", "dev1")
    _infer(_triton(agent, ws), _test_texts(ws, 5))
    assert collect(ws)["dev1"]["inserted"] == 5
    # the device's record (the devices panel, `cdl devices list`) says what is acknowledged after the collection:
    # it kept the health from before the stream, "seq 5 (acked 0)"
    journal = ws.store.device("dev1").last_health["journal"]
    assert (journal["last_seq"], journal["acked_seq"]) == (5, 5), journal
    store = scoring_store(ws)
    # data collected before journals had ids (an older collector): the same journal goes on where it was
    store.query("DELETE FROM journals")
    _infer(_triton(agent, ws), _test_texts(ws, 1))
    assert collect(ws)["dev1"] == {"inserted": 1, "last_seq": 6}
    agent.stop()
    for f in agent.data_dir.glob("journal.db*"):
        f.unlink()
    restart(ws, agent)
    _infer(_triton(agent, ws), _test_texts(ws, 3))
    logs: list[str] = []
    assert collect(ws, log=logs.append)["dev1"] == {"inserted": 3, "last_seq": 9}
    assert any("its scoring journal is a new one" in m and "filed after seq 6" in m for m in logs), logs
    assert [r[0] for r in store.query("SELECT seq FROM scoring WHERE device = 'dev1' ORDER BY seq")] == list(range(1, 10))
    with DeviceClient(ws, "dev1") as c:
        j = c.health()["journal"]
        assert (j["last_seq"], j["acked_seq"]) == (3, 3)  # acknowledged in its own numbers
        with pytest.raises(CdlError, match="FAILED_PRECONDITION: the scoring journal is .* it was replaced"):
            list(c.stream_scoring(0, journal_id="0" * 32))  # a collector still on the old journal is refused
        with pytest.raises(CdlError, match="FAILED_PRECONDITION"):
            c.ack(3, journal_id="0" * 32)
    assert collect(ws)["dev1"]["inserted"] == 0  # nothing twice
    _infer(_triton(agent, ws), _test_texts(ws, 2))
    assert collect(ws)["dev1"] == {"inserted": 2, "last_seq": 11}


def test_journal_keeps_raw_input_only_for_low_confidence(packaged, agent_factory):
    ws = packaged
    agent = agent_factory(ws, raw_below=0.0)
    deploy(ws, "ws:1", "fp32", "dev1")
    _infer(_triton(agent, ws), _test_texts(ws, 5))
    collect(ws)
    from runtime.devices import scoring_store

    raws = scoring_store(ws).query("SELECT raw_input FROM scoring")
    assert len(raws) == 5 and all(r[0] is None for r in raws)


def test_an_expired_device_certificate_is_named(packaged, tmp_path):
    """Clients refuse an agent whose certificate has expired and say only that the TLS handshake failed: the
    agent logs why at start, `cdl devices list` shows the date (and warns a month ahead), and a failed call says
    how to renew it; enrolling again with --replace does."""
    from runtime.devices import enroll
    from tests.conftest import AgentProcess

    ws = packaged
    enroll(ws, "old", "127.0.0.1:0", tmp_path / "old", cert_days=-1)
    enroll(ws, "soon", "127.0.0.1:0", tmp_path / "soon", cert_days=10)
    agent = AgentProcess(tmp_path / "old")
    restart(ws, agent, "old")
    try:
        with pytest.raises(CdlError) as e:
            deploy(ws, "ws:1", "fp32", "old")
        msg = str(e.value)
        assert "UNAVAILABLE: cannot reach it over TLS" in msg and "its TLS certificate expired on" in msg, msg
        assert f"`cdl devices enroll old --address {agent.address} --replace`" in msg
        out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "devices", "list"],
                             capture_output=True, text=True, check=True).stdout
        (old_line,) = [ln for ln in out.splitlines() if ln.startswith("old ")]
        (soon_line,) = [ln for ln in out.splitlines() if ln.startswith("soon ")]
        assert "CERT EXPIRED" in old_line and "--replace" in old_line, old_line
        assert "cert expires in 10 day(s)" in soon_line, soon_line
        (listed,) = [d for d in devices_json(ws)["devices"] if d["name"] == "old"]
        assert listed["cert"]["expired"] and listed["cert"]["days_left"] <= 0
    finally:
        agent.stop()
    log = agent.log()
    assert "ERROR the TLS certificate" in log and "expired on" in log and "--replace" in log, log[-2000:]
    # renewed: the same folder, a new certificate, and the agent serves again
    enroll(ws, "old", agent.address, tmp_path / "old", replace=True)
    restart(ws, agent, "old")
    try:
        assert deploy(ws, "ws:1", "fp32", "old")["activated"]
        (listed,) = [d for d in devices_json(ws)["devices"] if d["name"] == "old"]
        assert not listed["cert"]["expired"] and listed["cert"]["days_left"] > 800
    finally:
        agent.stop()


def test_a_device_that_is_gone_can_be_removed(packaged, agent_factory):
    """There was no way to unenroll a device: one that was gone for good failed every deploy.push to all devices
    and every `cdl devices status`, and its old scoring data was checked for drift forever."""
    from runtime import monitor
    from runtime.devices import enroll
    from runtime.jobs import Runner

    ws = packaged
    agent = agent_factory(ws)
    enroll(ws, "gone", "127.0.0.1:9", None)  # the default folder, .cdl/devices/gone
    folder = ws.root / ".cdl" / "devices" / "gone"
    assert (folder / "tls" / "server.key").exists()
    res = Runner(ws).run(steps=["deploy.push"])
    assert not res.ok and "gone: device gone" in res.steps[-1].error
    _infer(_triton(agent, ws), _test_texts(ws, 3))
    collect(ws)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "devices", *args],
                              capture_output=True, text=True, timeout=120)

    cfg = ws.config()  # named with another device: taken out of the list (the next `cdl run` refused to push)
    cfg.steps["deploy.push"]["devices"] = ["gone", "dev1"]
    cfg.save()
    out = cli("remove", "gone")
    assert out.returncode == 0, out.stderr
    assert "gone: removed from this workspace; its folder" in out.stdout and "stop it there" in out.stdout
    assert "; taken out of cdl.yaml's deploy.push.devices, which names dev1 now" in out.stdout, out.stdout
    assert ws.config().steps["deploy.push"]["devices"] == ["dev1"]
    assert not folder.exists()  # it held the device's private key
    assert [d["name"] for d in devices_json(ws)["devices"]] == ["dev1"]
    assert cli("status").returncode == 0
    assert Runner(ws).run(steps=["deploy.push"]).ok  # to every enrolled device: dev1
    assert history_json(ws, "gone")["deployments"][-1]["action"] == "remove"
    again = cli("remove", "gone")
    assert again.returncode == 2 and "device 'gone' is not enrolled" in again.stderr, again.stderr
    # said as removed, with when and how back (it read as a name never enrolled)
    assert "; it was removed from this workspace " in again.stderr and "`cdl devices enroll gone --address " \
        "HOST:PORT` brings it back" in again.stderr, again.stderr
    never = cli("remove", "nope")
    assert never.returncode == 2 and "removed" not in never.stderr, never.stderr
    # a removed device's scoring data stays, and is no longer checked
    assert [c["device"] for c in monitor.checks(ws, min_records=1)] == ["dev1"]
    agent.stop()
    cfg = ws.config()  # cdl.yaml names it: the next `cdl run` refuses to push, and the removal says so
    cfg.steps["deploy.push"]["devices"] = ["dev1"]
    cfg.save()
    out = cli("remove", "dev1", "--json")
    doc = json.loads(out.stdout)
    assert doc["device"] == "dev1" and not doc["folder_deleted"] and agent.data_dir.exists()  # an --out folder stays
    assert doc["message"].endswith("; cdl.yaml's deploy.push.devices still names it, and `cdl run` refuses to push "
                                   "until it is taken out there (the Deploy step's Parameters…)"), doc["message"]
    assert ws.config().steps["deploy.push"]["devices"] == ["dev1"]  # left as it is: [] would mean every device
    assert monitor.checks(ws, min_records=1) == []
    from runtime.devices import scoring_store

    with scoring_store(ws).connect() as con:
        assert con.execute("SELECT COUNT(*) FROM scoring WHERE device = 'dev1'").fetchone()[0] == 3


def test_a_moved_workspace_keeps_its_devices_folders(packaged, tmp_path):
    """Device folders were recorded with absolute paths: after the workspace was moved, `cdl devices list` said
    the certificate was unknown, `remove` left the folder (and its private key), and `enroll --replace` wrote a
    folder at the old place. A folder inside the workspace is now recorded relative to it."""
    import shutil

    from runtime.devices import enroll, remove
    from runtime.workspace import Workspace

    ws = packaged
    enroll(ws, "here", "127.0.0.1:8001", None)
    assert ws.store.device("here").enroll_dir == ".cdl/devices/here"
    old_root = ws.root
    ws.close()
    new_root = tmp_path / "moved" / "ws"
    new_root.parent.mkdir()
    shutil.move(str(old_root), str(new_root))
    ws = Workspace(new_root)
    try:
        (listed,) = devices_json(ws)["devices"]
        assert listed["enroll_dir"] == str(new_root / ".cdl" / "devices" / "here")
        assert listed["cert"] is not None and not listed["cert"]["expired"]
        again = enroll(ws, "here", "127.0.0.1:8001", None, replace=True)
        assert again["enroll_dir"] == str(new_root / ".cdl" / "devices" / "here") and not old_root.exists()
        assert remove(ws, "here")["folder_deleted"] and not (new_root / ".cdl" / "devices" / "here").exists()
    finally:
        ws.close()


def test_security_rejections(packaged, agent_factory, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge_agent.proto.bundle import read_manifest_unverified, write_bundle
    from runtime.bundles import bundle_path

    ws = packaged
    agent = agent_factory(ws, inference_auth="token")
    good = deploy(ws, "ws:1", "fp32", "dev1")
    src = bundle_path(ws, "ws:1", "dynamic_int8")
    with zipfile.ZipFile(src) as zf:
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest = read_manifest_unverified(src)

    def rezip(path, files):  # noqa: ANN001, ANN202
        with zipfile.ZipFile(path, "w") as zf:
            for n, d in files.items():
                zf.writestr(n, d)
        return path

    tampered = rezip(tmp_path / "tampered.cdlb", {**members, "model.onnx": members["model.onnx"][:-10] + b"0123456789"})
    escape = rezip(tmp_path / "escape.cdlb", {**members, "../evil.txt": b"x"})
    truncated = tmp_path / "truncated.cdlb"
    truncated.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    other = Ed25519PrivateKey.generate().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption())
    wrong_sig = tmp_path / "wrongsig.cdlb"
    m = {k: v for k, v in manifest.items() if k not in ("members", "format", "key_id")}
    write_bundle(wrong_sig, m, {"model.onnx": members["model.onnx"]}, other)
    cases = {tampered: "tampered", escape: "escapes", truncated: "truncated|not a zip", wrong_sig: "wrong signature"}
    for path, why in cases.items():
        with DeviceClient(ws, "dev1") as c, pytest.raises(CdlError, match=f"rejected.*({why})") as err:
            c.push(path, activate=True)
        if path == wrong_sig:  # what to do about it: the device trusts the key the workspace had at enrollment
            assert "enroll it again (`cdl devices enroll dev1 --address" in str(err.value), err.value
    with DeviceClient(ws, "dev1") as c:
        assert c.health()["active"]["bundle_id"] == good["bundle_id"]
        assert {x["bundle_id"] for x in c.list_models()} == {good["bundle_id"]}
    # a wrong token, on control and (with inference_auth: token) on inference
    dev = ws.store.device("dev1")
    ws.store.add_device(name="dev1", address=dev.address, token="not-the-token",
                        cert_fingerprint=dev.cert_fingerprint, enroll_dir=dev.enroll_dir)
    with DeviceClient(ws, "dev1") as c, pytest.raises(CdlError, match="UNAUTHENTICATED.*token"):
        c.health()
    from tritonclient.utils import InferenceServerException

    with pytest.raises(InferenceServerException, match="token"):
        _infer(_triton(agent, ws), ["some text"])
    # health is open, as Triton keeps it apart from inference: a liveness probe has no token (it was refused)
    probe = _triton(agent, ws)
    assert probe.is_server_live() and probe.is_server_ready() and probe.is_model_ready("ws")
    check = subprocess.run([sys.executable, "-m", "edge_agent.cli", "status", "--data-dir", str(agent.data_dir),
                            "--check"], capture_output=True, text=True, timeout=60)  # the container's HEALTHCHECK
    assert check.returncode == 0 and ": ready: " in check.stdout, check.stdout + check.stderr
    with pytest.raises(InferenceServerException, match="token"):
        probe.get_server_metadata()
    ok = _infer(_triton(agent, ws), ["some text about shares and markets"],
                headers={"authorization": f"Bearer {dev.token}"})
    assert ok.as_numpy("label").shape == (1,)
    for call in ("get_inference_statistics", "get_model_repository_index"):  # Triton's extensions too
        with pytest.raises(InferenceServerException, match="token"):
            getattr(_triton(agent, ws), call)()
    with pytest.raises(InferenceServerException, match="token"):
        _triton(agent, ws).get_model_config("ws")
    import queue

    import tritonclient.grpc as tc

    got: queue.Queue = queue.Queue()
    streamer = _triton(agent, ws)
    streamer.start_stream(callback=lambda result, error: got.put(error))
    inp = tc.InferInput("text", [1], "BYTES")
    inp.set_data_from_numpy(np.array([b"some text"], dtype=object))
    try:
        streamer.async_stream_infer("ws", [inp])
    except InferenceServerException as exc:  # the agent refused the stream before the request went: a race under
        assert "no longer in valid state" in str(exc)  # load; tritonclient then gives the refusal to the callback
    assert "token" in str(got.get(timeout=30))
    streamer.stop_stream()
    # a plaintext connection is refused (the agent only speaks TLS)
    from edge_agent.proto import edge_pb2, edge_pb2_grpc

    ch = grpc.insecure_channel(agent.address)
    with pytest.raises(grpc.RpcError) as e:
        edge_pb2_grpc.EdgeControlStub(ch).Health(edge_pb2.HealthRequest(), timeout=5,
                                                  metadata=(("authorization", f"Bearer {dev.token}"),))
    assert e.value.code() == grpc.StatusCode.UNAVAILABLE
    ch.close()


def test_one_agent_per_data_folder(packaged, agent_factory):
    """A second `cdl-edge serve` on a folder an agent serves (a manual start beside the systemd service) stops
    with an error naming the first, and touches nothing; after the first is SIGKILLed, a new one starts."""
    import subprocess
    import sys

    ws = packaged
    agent = agent_factory(ws)
    deploy(ws, "ws:1", "fp32", "dev1")
    second = subprocess.run([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir", str(agent.data_dir),
                             "--listen", "127.0.0.1:0"], capture_output=True, text=True, timeout=60)
    assert second.returncode == 2, second.stdout + second.stderr
    assert f"another cdl-edge already serves {agent.data_dir} (pid {agent.proc.pid}, listening on " \
           f"127.0.0.1:{agent.port})" in second.stderr, second.stderr
    with DeviceClient(ws, "dev1") as c:  # the first goes on serving its model
        assert c.health()["active"]["variant"] == "fp32"
    agent.kill()
    restart(ws, agent)
    with DeviceClient(ws, "dev1") as c:
        assert c.health()["active"]["variant"] == "fp32"


def test_enrolling_a_device_again_in_its_own_folder(packaged, agent_factory):
    """`cdl devices enroll dev1 --replace` without --out failed ('... already holds an enrolled agent; choose
    another --out') when the device had been enrolled into the default folder, and made a second folder when it
    had been enrolled elsewhere (this test), leaving the agent's own folder on the old credentials. Now it rewrites
    the recorded folder's credentials: the agent restarted on it accepts the new token, refuses the old one, and
    still serves the model it had (bundles and journal stay)."""
    import json
    import subprocess
    import sys

    ws = packaged
    agent = agent_factory(ws)
    deploy(ws, "ws:1", "fp32", "dev1")
    old = ws.store.device("dev1")
    agent.stop()
    # settings tuned on the device, and a second workspace's key it trusts, outlive the new credentials (enroll
    # --replace used to write agent.json's defaults over them)
    tuned = {"max_batch": 16, "journal_sync": "full", "keep_bundles": 5, "inference_auth": "token", "workers": 2}
    settings = {**json.loads((agent.data_dir / "agent.json").read_text()), **tuned}
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    other = Ed25519PrivateKey.generate().public_key().public_bytes(serialization.Encoding.PEM,
                                                                    serialization.PublicFormat.SubjectPublicKeyInfo)
    settings["trusted_keys"].append(other.decode())  # another workspace's
    (agent.data_dir / "agent.json").write_text(json.dumps(settings))
    out = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "devices", "enroll", "dev1",
                          "--address", old.address, "--replace", "--workers", "1"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"its folder: {agent.data_dir}" in out.stdout, out.stdout  # the recorded folder, not a new default
    new = ws.store.device("dev1")
    assert new.token != old.token and new.enroll_dir == str(agent.data_dir)
    now = json.loads((agent.data_dir / "agent.json").read_text())
    assert now["token_sha256"] != settings["token_sha256"]
    assert {k: now[k] for k in tuned} == {**tuned, "workers": 1}  # kept, but for the option given
    assert now["trusted_keys"] == settings["trusted_keys"]
    assert (agent.data_dir / "tls" / "server.key").stat().st_mode & 0o777 == 0o600
    assert not list(agent.data_dir.rglob(".*.tmp"))
    restart(ws, agent)
    with DeviceClient(ws, "dev1") as c:
        assert c.health()["active"]["variant"] == "fp32"  # the bundle it had is still active
    ws.store.update_device("dev1", token=old.token)
    with DeviceClient(ws, "dev1") as c, pytest.raises(CdlError, match="token"):
        c.health()
    ws.store.update_device("dev1", token=new.token)
    # another device's folder is never rewritten
    elsewhere = subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "devices", "enroll", "dev2",
                                "--address", "127.0.0.1:1", "--out", str(agent.data_dir)],
                               capture_output=True, text=True, timeout=120)
    assert elsewhere.returncode == 2 and "already holds an enrolled agent" in elsewhere.stderr, elsewhere.stderr


def test_devices_status_reports_every_device_and_which_do_not_answer(packaged, agent_factory, tmp_path):
    """`cdl devices status` needed a NAME, and a device that did not answer ended it with exit 2 (an input error)
    and no JSON: a fleet check from a script had to call it per device and parse stderr."""
    import json
    import subprocess
    import sys

    from runtime.devices import enroll

    ws = packaged
    agent_factory(ws)

    def status(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "runtime.cli", "-w", str(ws.root), "devices", "status", *args],
                              capture_output=True, text=True, timeout=120)

    # before its first model: no providers to name, no batches (it said "providers , 1 worker, - items a batch")
    first = status("dev1").stdout.strip()
    assert first.startswith("dev1: no model; up ") and first.endswith(", 1 worker"), first
    assert "providers" not in first and "items a batch" not in first, first
    deploy(ws, "ws:1", "fp32", "dev1")
    enroll(ws, "gone", "127.0.0.1:9", tmp_path / "gone")
    out = status("--json")
    assert out.returncode == 1, out.stderr  # one device does not answer
    docs = {d["device"]: d for d in json.loads(out.stdout)["devices"]}
    assert docs["dev1"]["online"] is True and docs["dev1"]["active"]["variant"] == "fp32"
    assert docs["gone"]["online"] is False and "UNAVAILABLE" in docs["gone"]["error"]
    one = status("dev1", "--json")
    assert one.returncode == 0 and json.loads(one.stdout)["active"]["name"] == "ws", one.stderr
    text = status()
    assert text.returncode == 1
    assert "dev1: active ws:1:fp32" in text.stdout and "device gone: health failed: UNAVAILABLE" in text.stdout
    # why it does not answer, in words: its agent is down (it said "cannot reach it over TLS" for every cause)
    # on this machine, with the folder enroll made (it said `--data-dir DIR` of a folder it knew)
    assert "UNAVAILABLE: nothing listens at 127.0.0.1:9 (connection refused): is its agent running? Start it " \
        f"with `cdl-edge serve --data-dir {tmp_path / 'gone'}` or its systemd unit" in text.stdout, text.stdout
    from runtime.devices import _start_hint

    elsewhere = replace(ws.store.device("gone"), address="pi4.lan:8001")
    assert _start_hint(elsewhere) == ("on the device with `cdl-edge serve --data-dir DIR` (the copy of "
                                      f"{tmp_path / 'gone'}, the folder enroll made)")
    enroll(ws, "typo", "nosuchhost.invalid:8001", tmp_path / "typo")
    assert "device typo: health failed: UNAVAILABLE: the name in nosuchhost.invalid:8001 does not resolve" in \
        status("typo").stdout
    unknown = status("nope")
    assert unknown.returncode == 2 and "'nope' is not enrolled" in unknown.stderr


def test_a_bundle_file_installed_by_hand_is_checked_and_served_as_a_push(packaged, agent_factory, tmp_path):
    """A device the workstation cannot reach had no way to take a model: `cdl package` wrote a signed bundle that
    nothing on the device could install. `cdl-edge install FILE --data-dir DIR` stores it with a push's checks
    (signature, hashes) and activates it atomically; the running agent serves it from its next request."""
    from runtime.bundles import package

    ws = packaged
    agent = agent_factory(ws)
    deploy(ws, "ws:1", "fp32", "dev1")

    def install(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edge_agent.cli", "install", *args], capture_output=True,
                              text=True, timeout=120)

    def active() -> str:
        with DeviceClient(ws, "dev1") as c:
            return c.health()["active"]["variant"]

    good = tmp_path / "int8.cdlb"
    package(ws, "ws:1", "dynamic_int8", good)
    # refused, each naming why, and nothing stored or changed: a changed byte, a cut file, a folder that is no agent's
    data = bytearray(good.read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bad.cdlb").write_bytes(bytes(data))
    (tmp_path / "cut.cdlb").write_bytes(good.read_bytes()[:5000])
    stored = {p.name for p in (agent.data_dir / "bundles").iterdir()}
    for args, says in (((str(tmp_path / "bad.cdlb"),), "bad.cdlb: refused, nothing was stored"),
                       ((str(tmp_path / "cut.cdlb"),), "cut.cdlb: refused, nothing was stored"),
                       ((str(tmp_path / "none.cdlb"),), "none.cdlb: cannot read it")):
        out = install(*args, "--data-dir", str(agent.data_dir))
        assert out.returncode == 2 and says in out.stderr, out.stderr
    out = install(str(good), "--data-dir", str(tmp_path))
    assert out.returncode == 2 and "agent.json not found: enroll the device first" in out.stderr, out.stderr
    assert {p.name for p in (agent.data_dir / "bundles").iterdir()} == stored
    assert list((agent.data_dir / "incoming").iterdir()) == [] and active() == "fp32"
    # stored only, then installed: the running agent (one worker) answers with it at once
    static = tmp_path / "static.cdlb"
    package(ws, "ws:1", "static_int8", static)
    out = install(str(static), "--data-dir", str(agent.data_dir), "--no-activate")
    assert out.returncode == 0 and out.stdout.startswith("stored ws:1:static_int8 (bundle "), out.stderr
    assert active() == "fp32"
    out = install(str(good), "--data-dir", str(agent.data_dir))
    assert out.returncode == 0 and out.stdout.startswith("active ws:1:dynamic_int8 (bundle "), out.stderr
    assert "a running agent serves it from its next request; the previous bundle" in out.stdout
    assert active() == "dynamic_int8"
    client = _triton(agent, ws)
    cfg = client.get_model_config("ws", as_json=True)["config"]
    assert cfg["parameters"]["variant"]["string_value"] == "dynamic_int8"
    assert _infer(client, _test_texts(ws)[:2]).as_numpy("label").shape == (2,)
    # the deployment history says what the device serves: a "sideload" row, once, from the first health check that
    # saw it (the history said it served fp32, pushed last); a rollback or push of this workspace adds none
    from runtime.devices import history_json

    rows = [h for h in history_json(ws, "dev1")["deployments"] if h["action"] == "sideload"]
    assert len(rows) == 1 and rows[0]["variant"] == "dynamic_int8" and rows[0]["status"] == "done", rows
    assert "not pushed from this workspace (installed on the device with `cdl-edge install`" in rows[0]["message"]
    # the workstation's rollback goes back to what it pushed
    assert rollback(ws, "dev1")["variant"] == "fp32" and active() == "fp32"
    deploy(ws, "ws:1", "static_int8", "dev1")
    assert active() == "static_int8"
    assert [h["action"] for h in history_json(ws, "dev1")["deployments"]].count("sideload") == 1


def test_install_as_another_user_than_the_agents_is_warned_of(tmp_path):
    """Installed as root into a folder the agent's user owns, the bundle's files are root's: the agent could not
    delete them when they grow old. The install says to run it as the agent's user."""
    import os

    if os.geteuid() != 0:
        pytest.skip("making a folder another user's needs root")
    folder = tmp_path / "dev"
    folder.mkdir()
    os.chown(folder, 4321, 4321)
    out = subprocess.run([sys.executable, "-m", "edge_agent.cli", "install", str(tmp_path / "b.cdlb"), "--data-dir",
                          str(folder)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert f"warning: {folder} belongs to user id 4321, not to you (0): run this as the agent's user" in out.stderr
    # a rollback there would leave active.json root's: warned the same way
    out = subprocess.run([sys.executable, "-m", "edge_agent.cli", "rollback", "--data-dir", str(folder)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "(`sudo -u cdl-edge cdl-edge rollback ...`), or active.json is then yours, not the agent's" in out.stderr


def test_an_agent_started_without_listen_serves_where_the_device_was_enrolled(text_ws, tmp_path):
    """`cdl-edge serve --data-dir DIR` listened on 0.0.0.0:8001 whatever port the device was enrolled at, and so did
    the systemd unit (its --listen fixed to 0.0.0.0:8001): the workspace found "nothing listens at
    127.0.0.1:PORT", and its own advice ("Start it on the device with `cdl-edge serve --data-dir DIR`") started the
    agent at 8001 again. agent.json's `listen` now holds the enrolled port, which the agent takes by default."""
    import socket

    from edge_agent.proto.address import listen_for
    from runtime.devices import enroll

    assert listen_for("10.0.0.7:8001") == "0.0.0.0:8001"  # every interface: the host may be a name, or behind NAT
    assert listen_for("pi1.local:9000") == "0.0.0.0:9000"
    assert listen_for("[fe80::2]:9001") == "[::]:9001"
    assert listen_for("127.0.0.1:9002") == "127.0.0.1:9002"  # an agent for this machine alone stays there
    assert listen_for("localhost:9003") == "localhost:9003"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "cam1"
    doc = enroll(text_ws, "cam1", f"127.0.0.1:{port}", out)
    assert doc["start"] == f"cdl-edge serve --data-dir {out}" and doc["listen"] == f"127.0.0.1:{port}"
    assert json.loads((out / "agent.json").read_text())["listen"] == f"127.0.0.1:{port}"
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert f"listening on 127.0.0.1:{port} " in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        with DeviceClient(text_ws, "cam1", timeout=10) as c:
            assert c.health()["device"] == "cam1"  # where the workspace connects
    finally:
        proc.terminate()
        proc.wait(10)
    # an explicit --listen elsewhere serves there, and says where the workspace connects
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "serve", "--data-dir", str(out), "--listen",
                             "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on 127.0.0.1:" in proc.stdout.readline()
    finally:
        proc.terminate()
        err = proc.communicate(timeout=10)[1]
    assert f"--listen 127.0.0.1:0: the device was enrolled at port {port} (agent.json's listen 127.0.0.1:{port}), " \
        "where the workspace connects unless a port is forwarded to this one" in err, err
    # enrolled again at another address: the folder follows
    enroll(text_ws, "cam1", "10.0.0.7:8005", replace=True)
    assert json.loads((out / "agent.json").read_text())["listen"] == "0.0.0.0:8005"


def test_cdl_edge_status_reads_the_folder_on_the_device(packaged, agent_factory, tmp_path):
    """An engineer logged in on a device had only the workstation's view, which needs the device to answer over the
    network: `cdl-edge status --data-dir DIR` reads the folder itself (whether an agent serves it, the active and
    previous model, the bundles, the journal's records not collected, disk, certificate), and changes nothing."""
    ws = packaged
    agent = agent_factory(ws)

    def status(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edge_agent.cli", "status", "--data-dir", *args],
                              capture_output=True, text=True, timeout=60)

    out = status(str(agent.data_dir))
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == f"dev1: agent running (pid {agent.proc.pid}, listening on {agent.address})", lines
    assert lines[1].startswith("active       none: push a model from the workstation (`cdl deploy"), lines
    # --check, a container's HEALTHCHECK: the agent asked over TLS whether it is ready; no model yet is "not ready"
    check = status(str(agent.data_dir), "--check")
    assert check.returncode == 1 and check.stderr.strip() == (
        f"dev1: not ready: the agent at {agent.address} answers, with no model active"), check.stderr
    deploy(ws, "ws:1", "fp32", "dev1")
    check = status(str(agent.data_dir), "--check")
    assert check.returncode == 0 and check.stdout.startswith(
        f"dev1: ready: the agent at {agent.address} serves ws:1:fp32 (bundle "), check.stdout + check.stderr
    deploy(ws, "ws:1", "dynamic_int8", "dev1")
    _infer(_triton(agent, ws), _test_texts(ws, 5))
    doc = json.loads(status(str(agent.data_dir), "--json").stdout)
    assert doc["running"] and doc["device"] == "dev1", doc
    assert (doc["active"]["variant"], doc["previous"]["variant"]) == ("dynamic_int8", "fp32"), doc
    assert len(doc["stored"]) == 2 and doc["journal"]["last_seq"] == 5 and doc["journal"]["waiting"] == 5, doc
    assert doc["certificate_expires"] > time.time() and doc["free_bytes"] > 0
    text = status(str(agent.data_dir)).stdout
    assert "active       ws:1:dynamic_int8 (bundle " in text and "previous     ws:1:fp32 (bundle " in text, text
    assert "a rollback goes back to it" in text and "5 record(s) wait for the workstation" in text, text
    # the agent still serves after being looked at (no lock was held against it), and the collection is seen
    assert _infer(_triton(agent, ws), _test_texts(ws, 2)).as_numpy("label").shape == (2,)
    assert collect(ws, ["dev1"])["dev1"]["inserted"] == 7
    assert json.loads(status(str(agent.data_dir), "--json").stdout)["journal"]["waiting"] == 0
    # stopped: said so, with the command that starts it where the workstation connects
    agent.stop()
    text = status(str(agent.data_dir)).stdout
    assert text.startswith(f"dev1: no agent serves this folder (`cdl-edge serve --data-dir {agent.data_dir.resolve()}` "
                           "listens on 127.0.0.1:0)"), text
    assert "journal      seq 7, collected up to 7: nothing waits for the workstation" in text, text
    check = status(str(agent.data_dir), "--check")
    assert check.returncode == 1 and check.stderr.strip() == f"dev1: not ready: no agent serves " \
        f"{agent.data_dir.resolve()}", check.stderr
    out = status(str(tmp_path))
    assert out.returncode == 2 and "agent.json not found: enroll the device first" in out.stderr, out.stderr
    # a folder enrolled, its agent never started: read without making bundles/ (run as root, it would be root's
    # and the agent could not store a push into it)
    from runtime.devices import enroll

    enroll(ws, "dev2", "127.0.0.1:0", tmp_path / "dev2")
    text = status(str(tmp_path / "dev2")).stdout
    assert text.startswith("dev2: no agent serves this folder") and "active       none: push a model" in text, text
    assert "stored       0 bundle(s)" in text and "journal      none yet" in text, text
    assert not (tmp_path / "dev2" / "bundles").exists() and not (tmp_path / "dev2" / "incoming").exists()


def test_cdl_edge_rollback_on_the_device_itself(packaged, agent_factory, tmp_path):
    """A device the workstation cannot reach could take a bundle by hand (`cdl-edge install`) but not go back from
    a bad one: `cdl-edge rollback --data-dir DIR` makes the previous model active, loaded first, atomically; the
    running agent serves it from its next request, a second rollback goes back, and the workstation's history gets
    a sideload row naming it."""
    from runtime.devices import history_json

    ws = packaged
    agent = agent_factory(ws)

    def back(folder) -> subprocess.CompletedProcess:  # noqa: ANN001
        return subprocess.run([sys.executable, "-m", "edge_agent.cli", "rollback", "--data-dir", str(folder)],
                              capture_output=True, text=True, timeout=120)

    deploy(ws, "ws:1", "fp32", "dev1")
    out = back(agent.data_dir)
    assert out.returncode == 2 and "nothing to roll back to: no previous model on this device" in out.stderr
    deploy(ws, "ws:1", "dynamic_int8", "dev1")
    client = _triton(agent, ws)

    def variant() -> str:
        return client.get_model_config("ws", as_json=True)["config"]["parameters"]["variant"]["string_value"]

    assert variant() == "dynamic_int8"
    out = back(agent.data_dir)
    assert out.returncode == 0 and out.stdout.startswith("active ws:1:fp32 (bundle "), out.stderr
    assert "a running agent serves it from its next request" in out.stdout
    assert variant() == "fp32" and _infer(client, _test_texts(ws, 2)).as_numpy("label").shape == (2,)
    with DeviceClient(ws, "dev1") as c:
        assert c.health()["active"]["variant"] == "fp32"
    rows = [h for h in history_json(ws, "dev1")["deployments"] if h["action"] == "sideload"]
    assert len(rows) == 1 and rows[0]["variant"] == "fp32" and "`cdl-edge rollback`" in rows[0]["message"], rows
    assert back(agent.data_dir).returncode == 0 and variant() == "dynamic_int8"  # back again
    # a previous model that does not load changes nothing
    state = json.loads((agent.data_dir / "active.json").read_text())
    (agent.data_dir / "bundles" / state["previous"] / "model.onnx").write_bytes(b"not a model")
    out = back(agent.data_dir)
    assert out.returncode == 2 and "does not load, so the active model stays" in out.stderr, out.stderr
    assert json.loads((agent.data_dir / "active.json").read_text()) == state and variant() == "dynamic_int8"
    out = back(tmp_path)
    assert out.returncode == 2 and "agent.json not found" in out.stderr
    from runtime.devices import enroll

    enroll(ws, "dev2", "127.0.0.1:0", tmp_path / "dev2")  # never started: refused, and no folder made
    out = back(tmp_path / "dev2")
    assert out.returncode == 2 and "nothing to roll back to" in out.stderr and not (tmp_path / "dev2" / "bundles").exists()
