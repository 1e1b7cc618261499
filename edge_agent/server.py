"""The edge agent's gRPC server (grpc.aio, TLS only).

- Inference: the Open Inference Protocol v2, registered under /inference.GRPCInferenceService/ so stock clients
  (tritonclient.grpc) work. Raw text (BYTES) or images (UINT8/FP32 pixel values) in; the bundle's
  preprocessing runs here. Open, or token-protected (agent.json: inference_auth).
- Control (cdl.edge.v1.EdgeControl): push, activate, rollback, list, health, scoring stream and ack; always
  needs the device token.
- Every prediction is journaled (with a sequence number) before the reply goes out.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import hmac
import json
import logging
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from edge_agent import __version__
from edge_agent.config import AgentConfig, ConfigError
from edge_agent.inference.batching import Batcher, JournalError
from edge_agent.inference.model import LoadedModel, Prediction, import_engines
from edge_agent.journal import Journal
from edge_agent.proto import edge_pb2 as epb
from edge_agent.proto import edge_pb2_grpc as epb_grpc
from edge_agent.proto import open_inference_pb2 as ipb
from edge_agent.proto.agent_json import CERT_WARN_DAYS
from edge_agent.proto.bundle import BundleError
from edge_agent.proto.preprocessing import ImagePipeline
from edge_agent.proto.tensors import deserialize_bytes, serialize_bytes
from edge_agent.slots import Slots
from edge_agent.workers import Counters, Workers

log = logging.getLogger("cdl-edge")
OIP_SERVICE = "inference.GRPCInferenceService"
STREAM_IN_FLIGHT = 256  # requests of one ModelStreamInfer stream being answered at once
OUTPUTS = ("probabilities", "label", "confidence")
# the protocol's datatype names as Triton's model configuration spells them
_TYPE = {"BOOL": ipb.TYPE_BOOL, "UINT8": ipb.TYPE_UINT8, "INT32": ipb.TYPE_INT32, "INT64": ipb.TYPE_INT64,
         "FP16": ipb.TYPE_FP16, "FP32": ipb.TYPE_FP32, "FP64": ipb.TYPE_FP64, "BYTES": ipb.TYPE_STRING}
_NP = {"UINT8": np.uint8, "FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64}


def image_files(pipeline: ImagePipeline, name: str, shape: list[int], values: list[bytes]) -> np.ndarray:
    """Encoded image files, one a row ([N] or [N, 1]), as the model's (N, H, W, C) uint8 batch: each decoded in
    the mode its pixels mean, converted to the model's channels and resized to its size with the same code that
    fitted the training images, so a camera's JPEG needs no client-side resizing."""
    from edge_agent.proto.images import decode_image, fit_image, unreadable_why

    if not values:
        raise ValueError(f"input {name} is empty")
    if len(values) != int(np.prod(shape)) or len(shape) not in (1, 2) or shape[1:] not in ([], [1]):
        raise ValueError(f"input {name}: {len(values)} image file(s) for shape {shape}; send image files as BYTES "
                         "of shape [N] (or [N, 1]), one file a row")
    size = (pipeline.height, pipeline.width, pipeline.channels)
    out = np.empty((len(values), *size), np.uint8)
    for i, data in enumerate(values):
        try:
            out[i] = fit_image(decode_image(bytes(data)), size)
        except ModuleNotFoundError:
            raise ValueError(f"input {name}: this device cannot decode image files (Pillow is not installed: "
                             "pip install pillow); send pixel values as UINT8") from None
        except (OSError, ValueError, SyntaxError) as exc:  # PIL.UnidentifiedImageError is an OSError
            why = unreadable_why(exc)  # not "<_io.BytesIO object at 0x...>"
            raise ValueError(f"input {name}: file {i} is not an image this device can read ({why}); over REST, "
                             "send image files as binary data (JSON holds BYTES as text)") from None
    return out


class Agent:
    """Shared state of one agent process: config, slots, the loaded model, the journal, counters.

    With several workers (edge_agent.workers) each process has its own Agent; `index` is this one's number."""

    def __init__(self, config: AgentConfig, workers: int = 1, index: int = 0):
        self.config = config
        self.workers = max(1, workers)
        self.index = index
        self.shared = self.workers > 1
        # only worker 0 tidies the folder: another worker may be extracting a bundle right now
        self.slots = Slots(config.data_dir, config.trusted_keys, clean=index == 0)
        self.journal = Journal(config.data_dir / "journal.db", config.journal_sync)
        self.counters = Counters(config.data_dir, self.workers, index, create=index == 0)
        self._model: LoadedModel | None = None
        self._stamp: tuple[int, int, int] | None = None
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="infer")
        self.batcher = Batcher(self.journal, self.pool, config.max_batch, config.raw_input_below_confidence,
                               config.max_queue_delay_ms,
                               on_batch=self._on_batch)
        self._activate_lock = asyncio.Lock()
        self.load_active()

    def _on_batch(self, items: int, requests: int, **us: int) -> None:
        self.counters.add(batches=1, items=items)
        self.counters.add_stats(stat_requests=requests, last_ms=int(time.time() * 1000), **us)

    @property
    def model(self) -> LoadedModel | None:
        """The active model: the one active.json names now (another worker, or `cdl-edge install`, may have
        switched it; one os.stat a call)."""
        self._follow_active()
        return self._model

    def _active_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = os.stat(self.slots.active_file)
        except FileNotFoundError:
            return None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _follow_active(self) -> None:
        stamp = self._active_stamp()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        current = self.slots.state().get("current")
        if not current or (self._model is not None and self._model.bundle_id == current):
            return
        try:
            self._model = LoadedModel(current, self.slots.path(current), self.slots.manifest(current))
            log.info("worker %d now serves bundle %s", self.index, current[:12])
        except Exception as exc:  # noqa: BLE001 - keep serving what this worker has, and say so
            log.error("worker %d cannot load bundle %s (%s); it keeps serving %s", self.index, current[:12], exc,
                      self._model.bundle_id[:12] if self._model else "nothing")

    def load_active(self) -> None:
        self._stamp = self._active_stamp()
        st = self.slots.state()
        if st.get("damaged"):  # said nothing, and served no model
            log.error("%s cannot be read (%s): no model is active; a push with activation (`cdl deploy`) makes "
                      "one active again", self.slots.active_file, st["damaged"])
        for bid in (st.get("current"), st.get("previous")):
            if not bid:
                continue
            try:
                d = self.slots.path(bid)
                self._model = LoadedModel(bid, d, self.slots.manifest(bid))
                if bid != st.get("current"):
                    log.error("active bundle %s could not be loaded; serving the previous one", st.get("current"))
                return
            except Exception as exc:  # noqa: BLE001
                log.error("cannot load bundle %s: %s", bid, exc)
        self._model = None
        import_engines()

    def rest_port(self) -> int:
        """The port worker 0 serves the REST binding on (DATA/run/rest_port, which it writes at start), or 0."""
        try:
            return int((self.config.data_dir / "run" / "rest_port").read_text())
        except (OSError, ValueError):
            return 0

    def check_token(self, context: grpc.aio.ServicerContext) -> bool:
        md = dict(context.invocation_metadata() or ())
        auth = md.get("authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else ""
        digest = hashlib.sha256(token.encode()).hexdigest()
        return bool(token) and hmac.compare_digest(digest, self.config.token_sha256)

    async def require_token(self, context: grpc.aio.ServicerContext) -> None:
        if not self.check_token(context):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED,
                                "missing or wrong device token (send 'authorization: Bearer <token>')")

    def active_pb(self) -> epb.ActiveModel:
        st = self.slots.state()
        m = self.model
        return epb.ActiveModel(bundle_id=m.bundle_id if m else "", name=m.name if m else "",
                               version=m.version if m else "", variant=m.variant if m else "",
                               previous_bundle_id=st.get("previous") or "")

    async def activate(self, bundle_id: str) -> None:
        """Load the model first; only then switch (atomically on disk, then in memory)."""
        async with self._activate_lock:
            d = self.slots.path(bundle_id)
            loop = asyncio.get_running_loop()
            model = await loop.run_in_executor(self.pool, LoadedModel, bundle_id, d, self.slots.manifest(bundle_id))
            self.slots.activate(bundle_id)
            self._model = model
            self._stamp = self._active_stamp()
        # the device's own log said nothing of what it served: an operator reading `journalctl -u cdl-edge` saw
        # the start line alone, as Triton logs each model it loads
        log.info("active: %s (bundle %s) on %s", _served(model.manifest), bundle_id[:12], ", ".join(model.providers))
        await self.prune()

    async def prune(self, protect: tuple[str, ...] = ()) -> None:
        """Old bundles beyond keep_bundles go (slots.Slots.prune); a failure to delete is logged, not raised: the
        push or activation it follows went through."""
        loop = asyncio.get_running_loop()
        try:
            gone = await loop.run_in_executor(self.pool, self.slots.prune, self.config.keep_bundles, protect)
        except OSError as exc:
            log.error("could not delete old bundles: %s", exc)
            return
        for bid in gone:
            log.info("deleted bundle %s (keep_bundles %d)", bid[:12], self.config.keep_bundles)

    async def rollback(self) -> None:
        async with self._activate_lock:
            st = self.slots.state()
            prev = st.get("previous")
            if not prev:
                raise BundleError("nothing to roll back to: no previous model on this device")
            loop = asyncio.get_running_loop()
            model = await loop.run_in_executor(self.pool, LoadedModel, prev, self.slots.path(prev),
                                               self.slots.manifest(prev))
            self.slots.rollback(expect_previous=prev)
            self._model = model
            self._stamp = self._active_stamp()
        log.info("rolled back: active %s (bundle %s)", _served(model.manifest), prev[:12])


def _served(manifest: dict) -> str:
    """"news:1:fp32", for the agent's log."""
    return f"{manifest.get('name')}:{manifest.get('version')}:{manifest.get('variant')}"


# -- Open Inference Protocol ------------------------------------------------------------------------------


class Inference:
    """HEALTH_OPEN: ServerLive, ServerReady and ModelReady answer without the token under `inference_auth: token`, as
    Triton keeps its health protocol apart from inference: a container's or systemd's liveness probe, or a load
    balancer, has no device token, and the answer is a yes or no (metadata, inference and the rest still want it)."""

    def __init__(self, agent: Agent):
        self.agent = agent

    async def _auth(self, context: grpc.aio.ServicerContext) -> None:
        if self.agent.config.inference_auth == "token":
            await self.agent.require_token(context)

    async def ServerLive(self, request, context):  # noqa: ANN001, ANN201, ARG002 - health: open (see HEALTH_OPEN)
        return ipb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):  # noqa: ANN001, ANN201, ARG002 - health: open (see HEALTH_OPEN)
        return ipb.ServerReadyResponse(ready=self.agent.model is not None)

    def _model(self, name: str, version: str) -> LoadedModel | None:
        m = self.agent.model
        if m is None or (name and name != m.name) or (version and version != m.version):
            return None
        return m

    async def ModelReady(self, request, context):  # noqa: ANN001, ANN201, ARG002 - health: open (see HEALTH_OPEN)
        return ipb.ModelReadyResponse(ready=self._model(request.name, request.version) is not None)

    async def ServerMetadata(self, request, context):  # noqa: ANN001, ANN201
        await self._auth(context)
        return ipb.ServerMetadataResponse(name="cdl-edge", version=__version__,
                                          extensions=["classification", "statistics", "model_configuration"])

    @staticmethod
    def _tensors(m: LoadedModel) -> tuple[list[tuple[str, str, list[int]]], list[tuple[str, str, list[int]]]]:
        """(name, datatype, shape) of the input and of the outputs, the batch dimension first (-1)."""
        i = m.input_metadata()
        n = len(m.classes)
        return ([(i["name"], i["datatype"], list(i["shape"]))],
                [("probabilities", "FP32", [-1, n]), ("label", "BYTES", [-1]), ("confidence", "FP32", [-1])])

    async def ModelMetadata(self, request, context):  # noqa: ANN001, ANN201
        await self._auth(context)
        m = await self._require_model(request.name, request.version, context)
        ins, outs = self._tensors(m)
        T = ipb.ModelMetadataResponse.TensorMetadata
        return ipb.ModelMetadataResponse(
            name=m.name, versions=[m.version], platform="onnxruntime_onnx",
            inputs=[T(name=n, datatype=d, shape=s) for n, d, s in ins],
            outputs=[T(name=n, datatype=d, shape=s) for n, d, s in outs])

    async def ModelConfig(self, request, context):  # noqa: ANN001, ANN201
        """Triton's model configuration of the active model (tritonclient's get_model_config). max_batch_size is
        0 and each dims is the whole shape, batch dimension included, as ModelMetadata gives it and the replies
        have: the agent batches concurrent requests itself, which the parameters max_batch and
        max_queue_delay_ms describe (Triton's dynamic_batching would need dims without the batch dimension).
        instance_group: one model instance in each agent worker, on the GPU only where onnxruntime really runs
        a GPU provider."""
        await self._auth(context)
        m = await self._require_model(request.name, request.version, context)
        ins, outs = self._tensors(m)
        cfg = self.agent.config
        gpu = any(p in m.providers for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider"))
        Group, P = ipb.ModelInstanceGroup, ipb.ModelParameter
        params = {"max_batch": str(cfg.max_batch), "max_queue_delay_ms": f"{cfg.max_queue_delay_ms:g}",
                  "variant": m.variant, "bundle_id": m.bundle_id, "providers": ",".join(m.providers),
                  "preprocessing": m.kind}
        if m.kind == "image":  # beside the pixels its input declares: image files, decoded and resized here
            params["image_files"] = f"BYTES [N] (PNG, JPEG, ...; resized to {m.pipeline.height}x{m.pipeline.width})"
        config = ipb.ModelConfig(
            name=m.name, platform="onnxruntime_onnx", backend="onnxruntime", max_batch_size=0,
            default_model_filename="model.onnx",
            input=[ipb.ModelInput(name=n, data_type=_TYPE[d], dims=s) for n, d, s in ins],
            output=[ipb.ModelOutput(name=n, data_type=_TYPE[d], dims=s) for n, d, s in outs],
            instance_group=[Group(name=m.name, count=self.agent.workers,
                                  kind=Group.KIND_GPU if gpu else Group.KIND_CPU)],
            parameters={k: P(string_value=v) for k, v in params.items()})
        return ipb.ModelConfigResponse(config=config)

    async def _require_model(self, name: str, version: str, context) -> LoadedModel:  # noqa: ANN001
        m = self._model(name, version)
        if m is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, self._not_loaded(name, version))
        return m

    async def may_infer(self, name: str, version: str, context) -> None:  # noqa: ANN001
        """What ModelInfer checks before it reads a request's tensors: the token (where inference needs one), then
        the model. The REST port asks first, so that a request to a model that is not here says so, where a body it
        also got wrong was named instead ("inputs must be a list of tensors" for /v2/models/nope/infer)."""
        if self.agent.config.inference_auth == "token":
            await self.agent.require_token(context)
        if self._model(name, version) is None:
            self.agent.counters.add(requests=1)  # a request, as ModelInfer counts one for a model not here
            await context.abort(grpc.StatusCode.NOT_FOUND, self._not_loaded(name, version))

    def _not_loaded(self, name: str, version: str) -> str:
        active = f"{self.agent.model.name}:{self.agent.model.version}" if self.agent.model else "none"
        # it said "model nope version any is not loaded" for a request that named no version
        if not name:  # a request without a name asks for the active model: there is none
            return "no model is active on this device"
        return f"model {name}{f' version {version}' if version else ''} is not loaded (active: {active})"

    async def ModelInfer(self, request, context):  # noqa: ANN001, ANN201
        if self.agent.config.inference_auth == "token":
            await self.agent.require_token(context)
        try:
            return await self._infer(request)
        except _Refused as exc:
            await context.abort(exc.code, exc.message)

    async def ModelStreamInfer(self, request_iterator, context):  # noqa: ANN001, ANN201
        """Triton's streaming inference (tritonclient's start_stream/async_stream_infer): requests on one stream
        are answered as they finish, so that those sent together are batched together; a request that fails gets
        its error_message (with its id), and the stream goes on."""
        if self.agent.config.inference_auth == "token":
            await self.agent.require_token(context)
        out: asyncio.Queue = asyncio.Queue()
        running: set[asyncio.Task] = set()

        async def one(request) -> None:  # noqa: ANN001
            try:
                out.put_nowait(ipb.ModelStreamInferResponse(infer_response=await self._infer(request)))
            except _Refused as exc:
                out.put_nowait(ipb.ModelStreamInferResponse(
                    error_message=exc.message, infer_response=ipb.ModelInferResponse(
                        model_name=request.model_name, model_version=request.model_version, id=request.id)))

        async def read() -> None:
            try:
                async for request in request_iterator:
                    if len(running) >= STREAM_IN_FLIGHT:  # a client that sends without reading waits (flow control)
                        await asyncio.wait(list(running), return_when=asyncio.FIRST_COMPLETED)
                    task = asyncio.get_running_loop().create_task(one(request))
                    running.add(task)
                    task.add_done_callback(running.discard)
                while running:
                    await asyncio.gather(*list(running))
            finally:
                out.put_nowait(None)

        reader = asyncio.get_running_loop().create_task(read())
        try:
            while (item := await out.get()) is not None:
                yield item
        finally:
            reader.cancel()
            for task in list(running):
                task.cancel()

    async def _infer(self, request):  # noqa: ANN001, ANN202
        """One inference request, answered or refused (_Refused: the status code and message to send)."""
        t0 = time.perf_counter()
        agent = self.agent
        agent.counters.add(requests=1)
        m = self._model(request.model_name, request.model_version)
        if m is None:
            raise _Refused(grpc.StatusCode.NOT_FOUND, self._not_loaded(request.model_name, request.model_version))
        try:
            try:
                if m.kind == "image" and request.inputs and request.inputs[0].datatype == "BYTES":
                    items, raw_list = await asyncio.to_thread(self._inputs, m, request)  # decoding: off the loop
                else:
                    items, raw_list = self._inputs(m, request)
                outputs = self._outputs(m, request)
            except ValueError as exc:
                raise _Refused(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from None
            try:
                pred = await agent.batcher.predict(m, items, raw_list)
            except JournalError as exc:
                raise _Refused(grpc.StatusCode.UNAVAILABLE, f"the scoring journal cannot be written: {exc}") from None
            except Exception as exc:  # noqa: BLE001
                raise _Refused(grpc.StatusCode.INTERNAL, f"inference failed: {type(exc).__name__}: {exc}") from None
        except _Refused:
            agent.counters.add(errors=1)
            agent.counters.add_stats(fail_us=int((time.perf_counter() - t0) * 1e6))
            raise
        resp = self._response(m, request, pred, outputs)
        agent.counters.observe(time.perf_counter() - t0)
        return resp

    async def ModelStatistics(self, request, context):  # noqa: ANN001, ANN201
        """Triton's statistics of the active model, summed over the agent's workers since it started (durations
        in ns, as Triton's): success and fail (requests and their time in the agent), queue (time waiting in the
        dynamic batcher), compute_input (preprocessing), compute_infer (onnxruntime), compute_output (the
        journal's commit before the answer); a batch's compute time counts once for each request in it."""
        await self._auth(context)
        m = await self._require_model(request.name, request.version, context)
        c = self.agent.counters
        n, s = c.total(), c.stats()
        _counts, success_s = c.latency()
        D = ipb.StatisticDuration
        k = s["stat_requests"]
        stats = ipb.InferStatistics(
            success=D(count=n["requests"] - n["errors"], ns=int(success_s * 1e9)),
            fail=D(count=n["errors"], ns=s["fail_us"] * 1000), queue=D(count=k, ns=s["queue_us"] * 1000),
            compute_input=D(count=k, ns=s["input_us"] * 1000), compute_infer=D(count=k, ns=s["infer_us"] * 1000),
            compute_output=D(count=k, ns=s["output_us"] * 1000))
        return ipb.ModelStatisticsResponse(model_stats=[ipb.ModelStatistics(
            name=m.name, version=m.version, last_inference=s["last_ms"], inference_count=n["batched_items"],
            execution_count=n["batches"], inference_stats=stats)])

    async def RepositoryIndex(self, request, context):  # noqa: ANN001, ANN201
        """The bundles on the device, as Triton lists its model repository: the active one READY, the others
        (kept for a rollback) UNAVAILABLE."""
        await self._auth(context)
        active = self.agent.model
        out = []
        for b in self.agent.slots.stored():
            ready = active is not None and b["bundle_id"] == active.bundle_id
            if request.ready and not ready:
                continue
            out.append(ipb.RepositoryIndexResponse.ModelIndex(
                name=b["name"], version=b["version"], state="READY" if ready else "UNAVAILABLE",
                reason="" if ready else f"stored ({b['variant']}, bundle {b['bundle_id'][:12]}), not active"))
        return ipb.RepositoryIndexResponse(models=out)

    def _inputs(self, m: LoadedModel, request) -> tuple[Any, list[bytes]]:  # noqa: ANN001
        if len(request.inputs) != 1:
            raise ValueError(f"expected one input tensor ({m.input_metadata()['name']}), got {len(request.inputs)}")
        t = request.inputs[0]
        want = m.input_metadata()["name"]
        if t.name != want:  # as Triton: a request meant for another model is not guessed at
            raise ValueError(f"unknown input {t.name!r}: {m.name} takes one input, {want}")
        if any(k.startswith("shared_memory") for k in t.parameters):
            raise ValueError(f"input {t.name}: the agent has no shared memory; send the data in the request")
        raw = request.raw_input_contents[0] if request.raw_input_contents else None
        shape = list(t.shape)
        if m.kind == "text":
            if t.datatype != "BYTES":
                raise ValueError(f"input {t.name}: this model takes text as BYTES, got {t.datatype}")
            values = deserialize_bytes(raw) if raw is not None else list(t.contents.bytes_contents)
            try:
                texts = [v.decode("utf-8", errors="replace") for v in values]
            except AttributeError:
                raise ValueError(f"input {t.name}: not bytes") from None
            if not texts:
                raise ValueError(f"input {t.name} is empty")
            if len(texts) != int(np.prod(shape)):  # as the image path checks it (and Triton does)
                raise ValueError(f"input {t.name}: {len(texts)} values for shape {shape}")
            if len(shape) not in (1, 2) or shape[1:] not in ([], [1]):  # [N], or [N, 1]: a text a row
                raise ValueError(f"input {t.name}: shape {shape}; this model takes texts as [N] (or [N, 1])")
            return texts, values
        if t.datatype == "BYTES":  # image files (PNG, JPEG, ...), decoded and fitted here as training fitted them
            values = deserialize_bytes(raw) if raw is not None else list(t.contents.bytes_contents)
            arr = image_files(m.pipeline, t.name, shape, values)
            return arr, [img.tobytes() for img in arr]
        if t.datatype not in ("UINT8", "FP32"):
            raise ValueError(f"input {t.name}: images must be UINT8 or FP32 pixel values, or image files as BYTES, "
                             f"got {t.datatype}")
        dtype = _NP[t.datatype]
        if raw is not None:
            arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        elif t.datatype == "UINT8":
            arr = np.asarray(t.contents.uint_contents, dtype=np.uint8)
        else:
            arr = np.asarray(t.contents.fp32_contents, dtype=np.float32)
        if arr.size != int(np.prod(shape)):
            raise ValueError(f"input {t.name}: {arr.size} values for shape {shape}")
        arr = arr.reshape(shape)
        try:
            arr = m.pipeline.check_shape(arr)
        except ValueError as exc:
            raise ValueError(f"input {t.name}: {exc}") from None
        return arr, [img.astype(np.uint8).tobytes() if dtype is np.uint8 else img.tobytes() for img in arr]

    @staticmethod
    def _outputs(m: LoadedModel, request) -> list[tuple[str, int]]:  # noqa: ANN001
        """The outputs asked for (all three when none is named), each with its classification count: Triton's
        classification extension (tritonclient's InferRequestedOutput(name, class_count=k)) turns probabilities
        into the k likeliest classes. A name the model does not give, or shared memory (which the agent does not
        have), is refused: the answer would otherwise lack what was asked for, and say nothing."""
        out = []
        for o in request.outputs:
            if o.name not in OUTPUTS:
                raise ValueError(f"unknown output {o.name!r}: {m.name} gives {', '.join(OUTPUTS)}")
            if any(k.startswith("shared_memory") for k in o.parameters):
                raise ValueError(f"output {o.name}: the agent has no shared memory; ask for it without")
            k = 0
            if "classification" in o.parameters:
                k = int(o.parameters["classification"].int64_param)
                if o.name != "probabilities" or k < 1:
                    raise ValueError(f"output {o.name}: classification takes a class count of at least 1, on "
                                     "probabilities")
            out.append((o.name, min(k, len(m.classes))))
        return out or [(name, 0) for name in OUTPUTS]

    def _response(self, m: LoadedModel, request, pred: Prediction,  # noqa: ANN001, ANN201
                  outputs: list[tuple[str, int]]):
        resp = ipb.ModelInferResponse(model_name=m.name, model_version=m.version, id=request.id)
        n = len(pred.labels)
        for name, k in outputs:
            if k:  # Triton's "value:index:label", the likeliest first
                top = np.argsort(-pred.probabilities, axis=1, kind="stable")[:, :k]
                data, dt, shape = serialize_bytes([f"{pred.probabilities[i, j]:f}:{j}:{m.classes[j]}".encode()
                                                   for i in range(n) for j in top[i]]), "BYTES", [n, k]
            elif name == "probabilities":
                data, dt, shape = pred.probabilities.astype("<f4").tobytes(), "FP32", [n, len(m.classes)]
            elif name == "label":
                data, dt, shape = serialize_bytes([s.encode() for s in pred.labels]), "BYTES", [n]
            else:
                data, dt, shape = pred.confidence.astype("<f4").tobytes(), "FP32", [n]
            resp.outputs.add(name=name, datatype=dt, shape=shape)
            resp.raw_output_contents.append(data)
        return resp


class _Refused(Exception):  # noqa: N818 - a request the agent answers with a status, not a failure of the agent
    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code, self.message = code, message


def _oip_handler(servicer: Inference) -> grpc.GenericRpcHandler:
    methods = {
        "ServerLive": (ipb.ServerLiveRequest, ipb.ServerLiveResponse),
        "ServerReady": (ipb.ServerReadyRequest, ipb.ServerReadyResponse),
        "ModelReady": (ipb.ModelReadyRequest, ipb.ModelReadyResponse),
        "ServerMetadata": (ipb.ServerMetadataRequest, ipb.ServerMetadataResponse),
        "ModelMetadata": (ipb.ModelMetadataRequest, ipb.ModelMetadataResponse),
        "ModelInfer": (ipb.ModelInferRequest, ipb.ModelInferResponse),
        "ModelStatistics": (ipb.ModelStatisticsRequest, ipb.ModelStatisticsResponse),
        "RepositoryIndex": (ipb.RepositoryIndexRequest, ipb.RepositoryIndexResponse),
        "ModelConfig": (ipb.ModelConfigRequest, ipb.ModelConfigResponse),
    }
    handlers = {
        name: grpc.unary_unary_rpc_method_handler(getattr(servicer, name), request_deserializer=req.FromString,
                                                  response_serializer=resp.SerializeToString)
        for name, (req, resp) in methods.items()
    }
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        servicer.ModelStreamInfer, request_deserializer=ipb.ModelInferRequest.FromString,
        response_serializer=ipb.ModelStreamInferResponse.SerializeToString)
    return grpc.method_handlers_generic_handler(OIP_SERVICE, handlers)


# -- control ------------------------------------------------------------------------------------------------


class Control(epb_grpc.EdgeControlServicer):
    def __init__(self, agent: Agent):
        self.agent = agent

    async def PushBundle(self, request_iterator, context):  # noqa: ANN001, ANN201
        await self.agent.require_token(context)
        slots = self.agent.slots
        first = None
        part = meta = None
        fh = None
        received = 0
        try:
            async for chunk in request_iterator:
                if first is None:
                    first = chunk
                    try:
                        part, meta = slots.upload_paths(chunk.upload_id)
                    except BundleError as exc:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
                    have = part.stat().st_size if part.exists() else 0
                    if chunk.offset != have:
                        await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                            f"upload {chunk.upload_id[:12]} is at byte {have}; resume from there")
                    if chunk.total_size <= 0:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first chunk must give total_size")
                    short = slots.space_for(chunk.total_size, have, self.agent.config.min_free_bytes)
                    if short:
                        await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, short)
                    meta.write_text(json.dumps({"total_size": chunk.total_size, "sha256": chunk.sha256,
                                                "activate": chunk.activate}))
                    fh = open(part, "ab")  # noqa: SIM115
                    received = have
                if chunk.data:
                    fh.write(chunk.data)
                    received += len(chunk.data)
                    if received > first.total_size:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "more data than total_size")
            if first is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty push")
            fh.flush()
            os.fsync(fh.fileno())
        except OSError as exc:  # the disk filled up (or failed): the partial upload goes, so the journal has room
            if fh is not None:
                fh.close()
                fh = None
            for f in (part, meta):
                if f is not None:
                    f.unlink(missing_ok=True)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"the device could not store the upload ({exc.strerror or exc}); it was deleted, "
                                "the active model is unchanged")
        finally:
            if fh is not None:
                fh.close()
        if received < first.total_size:
            await context.abort(grpc.StatusCode.ABORTED,
                                f"upload incomplete: {received} of {first.total_size} bytes; resume from {received}")
        loop = asyncio.get_running_loop()
        try:
            bundle_id = await loop.run_in_executor(self.agent.pool, slots.store_upload, first.upload_id, first.sha256)
        except BundleError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bundle rejected: {exc}")
        except OSError as exc:  # a full disk: the upload goes too, so the journal keeps its room
            for f in (part, meta):
                f.unlink(missing_ok=True)
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"the device could not store the bundle ({exc.strerror or exc}); the upload was "
                                "deleted, the active model is unchanged")
        manifest = slots.manifest(bundle_id)
        log.info("stored bundle %s: %s (%.0f KiB)", bundle_id[:12], _served(manifest), received / 1024)
        activated = False
        if first.activate:
            try:
                await self.agent.activate(bundle_id)
            except Exception as exc:  # noqa: BLE001
                log.error("bundle %s does not load (%s); the previous model stays active", bundle_id[:12], exc)
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"bundle stored but its model does not load; the previous model stays: {exc}")
            activated = True
        else:
            await self.agent.prune(protect=(bundle_id,))
        return epb.PushResult(bundle_id=bundle_id, name=manifest["name"], version=str(manifest["version"]),
                              variant=manifest["variant"], activated=activated, received=received)

    async def GetUpload(self, request, context):  # noqa: ANN001, ANN201
        await self.agent.require_token(context)
        try:
            offset = self.agent.slots.upload_offset(request.upload_id)
        except BundleError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return epb.UploadStatus(upload_id=request.upload_id, offset=offset)

    async def Activate(self, request, context):  # noqa: ANN001, ANN201
        await self.agent.require_token(context)
        try:
            await self.agent.activate(request.bundle_id)
        except BundleError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return self.agent.active_pb()

    async def Rollback(self, request, context):  # noqa: ANN001, ANN201
        await self.agent.require_token(context)
        try:
            await self.agent.rollback()
        except BundleError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return self.agent.active_pb()

    async def ListModels(self, request, context):  # noqa: ANN001, ANN201
        await self.agent.require_token(context)
        current = self.agent.slots.state().get("current")
        return epb.ListModelsResponse(models=[epb.StoredModel(**m, active=m["bundle_id"] == current)
                                              for m in self.agent.slots.stored()])

    async def Health(self, request, context):  # noqa: ANN001, ANN201
        await self.agent.require_token(context)
        a = self.agent
        j = a.journal
        n, s = a.counters.total(), a.counters.stats()
        return epb.HealthResponse(agent_version=__version__, active=a.active_pb(), uptime_s=time.time() - a.counters.started,
                                  timed_requests=s["stat_requests"], queue_us=s["queue_us"], input_us=s["input_us"],
                                  infer_us=s["infer_us"], output_us=s["output_us"],
                                  requests=n["requests"], errors=n["errors"], workers=a.workers,
                                  batches=n["batches"], batched_items=n["batched_items"],
                                  free_disk_bytes=shutil.disk_usage(a.config.data_dir).free,
                                  journal_last_seq=j.last_seq(), journal_acked_seq=j.acked_seq(),
                                  journal_records=j.count(), journal_id=j.journal_id, rest_port=a.rest_port(),
                                  providers=a.model.providers if a.model else [])

    async def _same_journal(self, journal_id: str, context) -> None:  # noqa: ANN001
        if journal_id and journal_id != self.agent.journal.journal_id:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"the scoring journal is {self.agent.journal.journal_id[:12]}, not {journal_id[:12]}: "
                                "it was replaced (its sequence numbers started again); ask Health for the new one")

    async def StreamScoring(self, request, context):  # noqa: ANN001, ANN201
        await self.agent.require_token(context)
        await self._same_journal(request.journal_id, context)
        j = self.agent.journal
        seq = request.from_seq
        sent = 0
        limit = request.max_records or 0
        ev = j.listen() if request.follow else None
        try:
            while True:
                if ev is not None:
                    ev.clear()
                rows = j.read(seq, 500)
                for r in rows:
                    yield _record_pb(r)
                    seq = r["seq"]
                    sent += 1
                    if limit and sent >= limit:
                        return
                if rows:
                    continue
                if ev is None:
                    return
                try:  # woken by this worker's commits; other workers' are found by polling
                    await asyncio.wait_for(ev.wait(), timeout=0.25 if self.agent.shared else 1.0)
                except TimeoutError:
                    pass
        finally:
            if ev is not None:
                j.unlisten(ev)

    async def AckScoring(self, request, context):  # noqa: ANN001, ANN201
        await self.agent.require_token(context)
        await self._same_journal(request.journal_id, context)
        before = self.agent.journal.acked_seq()
        acked, pruned = self.agent.journal.ack(request.up_to_seq, self.agent.config.retention_seconds)
        if acked != before or pruned:  # a collection, in the device's own log
            log.info("scoring records up to seq %d collected by the workstation; %d pruned (acknowledged and older "
                     "than retention_seconds %g)", acked, pruned, self.agent.config.retention_seconds)
        return epb.AckScoringResponse(acked_seq=acked, pruned=pruned)


def _record_pb(r: dict[str, Any]) -> epb.ScoringRecord:
    return epb.ScoringRecord(seq=r["seq"], time=r["time"], model=r["model"] or "", version=r["version"] or "",
                             variant=r["variant"] or "", input_summary_json=r["input_summary"] or "{}",
                             label=r["label"] or "", confidence=r["confidence"] or 0.0,
                             probabilities_json=r["probabilities"] or "[]", latency_ms=r["latency_ms"] or 0.0,
                             raw_input=r["raw_input"] or b"", raw_kind=r["raw_kind"] or "",
                             bundle_id=r["bundle_id"] or "")


# -- server -------------------------------------------------------------------------------------------------


async def start(config: AgentConfig, listen: str, workers: int = 1, index: int = 0
                ) -> tuple[grpc.aio.Server, int, Agent]:
    agent = Agent(config, workers, index)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 << 20),
                                      ("grpc.max_send_message_length", 64 << 20)])  # SO_REUSEPORT: gRPC's default
    server.add_generic_rpc_handlers((_oip_handler(Inference(agent)),))
    epb_grpc.add_EdgeControlServicer_to_server(Control(agent), server)
    creds = grpc.ssl_server_credentials([(config.tls_key.read_bytes(), config.tls_cert.read_bytes())])
    if index == 0:  # workers 1..N join worker 0 on its port, on purpose
        port_is_free(listen)
    try:
        port = server.add_secure_port(listen, creds)
    except RuntimeError:  # gRPC's "Failed to bind", a traceback for the user
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {listen}: gRPC could not bind it (GRPC_VERBOSITY=debug says why)")
    await server.start()
    return server, port, agent


def port_is_free(listen: str) -> None:
    """OSError naming the cause when nothing may listen on HOST:PORT. gRPC binds with SO_REUSEPORT (which lets an
    agent's workers share its port), so a second agent on a port already served, or `cdl serve` beside it, bound
    as well and the kernel split the connections between two agents serving different models; a port another
    program held, or an address not of this machine, gave gRPC's traceback. A plain socket, without
    SO_REUSEPORT, finds both."""
    import errno
    import socket

    host, _, port = listen.rpartition(":")
    if port == "0":
        return
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host or None, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise OSError(f"cannot listen on {listen}: {host!r} is not a known address ({exc.strerror})") from None
    failed = []
    for family, kind, proto, _, addr in infos:  # "localhost" may be ::1 and 127.0.0.1: one that binds is enough
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
                probe.bind(addr)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OSError(f"cannot listen on {listen}: the port is in use (another agent, or another program: "
                              f"`ss -ltnp 'sport = :{port}'` names it)") from None
            failed.append(exc)
    if failed and len(failed) == len(infos):
        if failed[0].errno == errno.EADDRNOTAVAIL:
            raise OSError(f"cannot listen on {listen}: {host} is not an address of this machine")
        raise OSError(f"cannot listen on {listen}: {failed[0].strerror}")


async def serve(config: AgentConfig, listen: str, workers: int | None = None, index: int = 0,
                claim=None, metrics: str | None = None, http: str | None = None) -> None:  # noqa: ANN001
    import signal

    workers = workers or config.workers
    if index == 0:  # the agent's own listeners on one port: said before anything binds
        from edge_agent.proto.address import clash

        said = clash({"--listen": listen, "--http (http_listen)": http or config.http_listen,
                      "--metrics (metrics_listen)": metrics or config.metrics_listen})
        if said:
            raise ConfigError(said)
    server, port, agent = await start(config, listen, workers, index)
    host = listen.rpartition(":")[0]
    if claim is not None:
        claim.seek(0)
        claim.truncate()
        claim.write(f"pid {os.getpid()}, listening on {host}:{port}")
        claim.flush()
    # the REST binding in every worker, on one port (SO_REUSEPORT, as gRPC's): worker 0 binds it first, so that
    # the others get its port (it served REST alone, one core for every REST client)
    rest_server = None
    http = http or config.http_listen
    if http:
        from edge_agent.rest import serve_rest

        try:
            if index == 0:
                port_is_free(http)  # reuse_port would let it bind beside another agent's REST port
            rest_server = await serve_rest(Inference(agent), http, config.tls_cert, config.tls_key,
                                           reuse_port=workers > 1)
        except OSError as exc:
            await server.stop(0)
            raise OSError(f"cannot serve HTTP on {http}: {str(exc).removeprefix(f'cannot listen on {http}: ')}"
                          ) from None
    pool = None
    if index == 0 and workers > 1:
        pool = Workers(config.data_dir, host, port, workers,
                       http=f"{http.rpartition(':')[0]}:{rest_server.port}" if rest_server is not None else None)
        try:
            await pool.start()
        except OSError:
            await pool.stop()
            if rest_server is not None:
                await rest_server.stop(0)
            await server.stop(0)
            raise
    metrics_server = None
    also_at = ""
    metrics = metrics or config.metrics_listen
    if index == 0 and metrics:
        from edge_agent.metrics import serve_metrics

        try:
            metrics_server, mport = await serve_metrics(agent, metrics, __version__, certificate_expiry(config),
                                                        config.token_sha256 if config.metrics_auth == "token" else None)
        except OSError as exc:
            if pool is not None:
                await pool.stop()
            if rest_server is not None:
                await rest_server.stop(0)
            await server.stop(0)
            raise OSError(f"cannot serve metrics on {metrics}: {exc}") from None
        also_at = f"; metrics on http://{metrics.rpartition(':')[0]}:{mport}/metrics"
    if rest_server is not None:
        also_at += f"; REST on https://{http.rpartition(':')[0]}:{rest_server.port}/v2"
    if index == 0:  # what Health reports, whichever worker answers it
        rest_file = config.data_dir / "run" / "rest_port"
        if rest_server is not None:
            rest_file.write_text(str(rest_server.port))
        else:
            rest_file.unlink(missing_ok=True)
    if index == 0:
        check_certificate(config)
        for line in config.unknown_settings():
            log.warning("%s", line)
        m = agent.model
        active = f"{m.name}:{m.version}:{m.variant}" if m else "none"
        procs = f", {workers} workers" if workers > 1 else ""
        print(f"cdl-edge {config.device} listening on {host}:{port} (TLS{procs}); active model: {active}{also_at}",
              flush=True)
    else:
        print(f"ready {index}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    if metrics_server is not None:
        metrics_server.close()
    if pool is not None:
        await pool.stop()
    # requests being answered finish (up to 2 s) on both ports before the journal closes
    await asyncio.gather(server.stop(2), *([rest_server.stop(2)] if rest_server is not None else []))
    agent.journal.close()
    agent.counters.close()


def certificate_expiry(config: AgentConfig) -> float | None:
    """When the agent's TLS certificate expires, as Unix time (None if it cannot be read)."""
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(config.tls_cert.read_bytes()).not_valid_after_utc.timestamp()
    except (OSError, ValueError):
        return None


def check_certificate(config: AgentConfig) -> float | None:
    """Log an error when the agent's TLS certificate has expired (clients refuse the connection, and say only
    that the handshake failed) and a warning in its last CERT_WARN_DAYS; returns the days it has left."""
    import datetime as dt

    from cryptography import x509

    try:
        until = x509.load_pem_x509_certificate(config.tls_cert.read_bytes()).not_valid_after_utc
    except (OSError, ValueError) as exc:
        log.error("cannot read the TLS certificate %s: %s", config.tls_cert, exc)
        return None
    left = (until - dt.datetime.now(dt.UTC)).total_seconds() / 86400
    renew = (f"enroll the device again on the workstation (`cdl devices enroll {config.device} --address HOST:PORT "
             "--replace`) and copy the new folder here")
    if left <= 0:
        log.error("the TLS certificate %s expired on %s: every client refuses this agent; %s", config.tls_cert,
                  until.date(), renew)
    elif left < CERT_WARN_DAYS:
        log.warning("the TLS certificate %s expires in %.0f day(s), on %s: %s", config.tls_cert, left, until.date(),
                    renew)
    return left


def run(data_dir: Path, listen: str | None, workers: int | None = None, index: int = 0, metrics: str | None = None,
        parent_pid: int | None = None, http: str | None = None) -> None:
    """parent_pid: the kernel kills this agent when that process dies (workers 1..N-1 get worker 0's; `cdl serve`
    gives its own, so an agent it started never outlives it). listen None: agent.json's `listen` (the port the
    device was enrolled at), else 0.0.0.0:8001. It was 0.0.0.0:8001 always: `cdl-edge serve --data-dir DIR`, as
    the workstation's "is its agent running?" advice and the systemd unit start it, listened where the workspace
    does not connect for a device enrolled at another port."""
    if index or parent_pid:
        from edge_agent.workers import die_with_parent

        die_with_parent(parent_pid or int(os.environ.get("CDL_EDGE_PARENT_PID", "0")))
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s " + (f"[worker {index}] " if index else "") + "%(message)s")
    config = AgentConfig.load(Path(data_dir))
    if listen is None:
        from edge_agent.proto.address import DEFAULT_LISTEN

        listen = config.listen or DEFAULT_LISTEN
    elif config.listen and index == 0 and listen.rpartition(":")[2] != config.listen.rpartition(":")[2]:
        log.warning("--listen %s: the device was enrolled at port %s (agent.json's listen %s), where the "
                    "workspace connects unless a port is forwarded to this one; drop --listen, or enroll it again "
                    "at this port (`cdl devices enroll %s --address HOST:%s --replace`)", listen,
                    config.listen.rpartition(":")[2], config.listen, config.device, listen.rpartition(":")[2])
    claim = None if index else claim_folder(config.data_dir)
    try:
        asyncio.run(serve(config, listen, workers, index, claim, metrics, http))
    finally:
        if claim is not None:
            claim.close()


def claim_folder(data_dir: Path):  # noqa: ANN201
    """One agent serves a data folder: worker 0 holds DATA/run/agent.lock (flock) for its life, and a second
    agent started on the folder (a manual start beside the systemd service) stops before it touches anything:
    worker 0 tidies the folder at start, which would break a push the first agent is extracting. The kernel
    releases the lock however the holder dies, so a restart after a crash or a SIGKILL is never refused."""
    run_dir = Path(data_dir) / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    fh = open(run_dir / "agent.lock", "a+")  # noqa: SIM115 - held for the process's life
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "its pid unknown"
        fh.close()
        raise ConfigError(f"another cdl-edge already serves {data_dir} ({holder}): stop it first, or give this "
                          "agent a --data-dir of its own") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}, starting")
    fh.flush()
    return fh
