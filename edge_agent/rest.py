"""The Open Inference Protocol's HTTP/REST binding (KServe v2, what Triton serves on :8000), beside the gRPC one:
`http_listen` in agent.json or `cdl-edge serve --http HOST:PORT`; off by default.

    GET  /v2                                        server metadata
    GET  /v2/health/live, /v2/health/ready          200, or 400 when not ready (the protocol's false)
    GET  /v2/models/NAME[/versions/V]               model metadata
    GET  /v2/models/NAME[/versions/V]/ready         200, or 400
    GET  /v2/models/NAME[/versions/V]/config        Triton's model configuration, as ModelConfig gives it
    GET  /v2/models[/NAME[/versions/V]]/stats       Triton's statistics extension, as ModelStatistics gives them
    POST /v2/repository/index                       Triton's repository index: [{"name", "version", "state",
                                                     "reason"}] ({"ready": true} in the body: only the active one)
    POST /v2/models/NAME[/versions/V]/infer         {"id", "inputs": [{"name", "shape", "datatype", "data"}],
                                                     "outputs": [{"name", "parameters": {"classification":
                                                     K}}]} -> {"model_name", "model_version",
                                                     "id", "outputs": [{"name", "shape", "datatype", "data"}]}

Triton's binary data extension too (request_from_json says how), as tritonclient.http sends and asks by default;
bodies compressed (Content-Encoding gzip or deflate) or sent chunked, and answers compressed where Accept-Encoding
asks.
HTTPS only, with the agent's own certificate (as its gRPC port; plain HTTP gets a 400 that says so);
`inference_auth: "token"` wants the device token (`Authorization: Bearer TOKEN`) here too. Every call goes through the gRPC servicer's own methods (edge_agent.server
Inference), so a request is checked, batched, journaled and counted exactly as a ModelInfer is, and refused with the
same message; the gRPC status becomes the HTTP one (NOT_FOUND 404, INVALID_ARGUMENT 400, UNAUTHENTICATED 401,
UNAVAILABLE 503, others 500) with the protocol's {"error": message} body. Connections are kept alive (HTTP/1.1);
every worker serves this port (SO_REUSEPORT, as the gRPC one: the kernel spreads connections over them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import ssl
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
from google.protobuf.descriptor import FieldDescriptor

from edge_agent.proto import open_inference_pb2 as ipb
from edge_agent.proto.tensors import deserialize_bytes

if TYPE_CHECKING:
    from edge_agent.server import Inference

log = logging.getLogger("cdl-edge")
MAX_BODY = 64 << 20  # as the gRPC port's largest message
IDLE_S = 60.0  # a kept-alive connection with no request for this long is closed
_STATUS = {grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.INVALID_ARGUMENT: 400,
           grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.UNAVAILABLE: 503}
_REASON = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           413: "Content Too Large", 415: "Unsupported Media Type", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}


class _HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class _Context:
    """What the servicer's methods use of a gRPC context: the request's metadata (the Authorization header) and
    abort, which here raises the HTTP error the status maps to."""

    def __init__(self, headers: dict[str, str]):
        self._md = [("authorization", headers["authorization"])] if "authorization" in headers else []

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._md

    async def abort(self, code: grpc.StatusCode, message: str) -> None:
        raise _HttpError(_STATUS.get(code, 500), message)


def _flat(data: Any, where: str) -> list[Any]:  # noqa: ANN401
    """The protocol's "data": a flat list in row-major order, or nested lists of the shape."""
    if not isinstance(data, list):
        raise _HttpError(400, f"{where}.data must be a list, got {type(data).__name__}")
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for v in stack[-1]:
            if isinstance(v, list):
                stack.append(iter(v))
                break
            out.append(v)
        else:
            stack.pop()
    return out


def _params(obj: dict[str, Any], where: str) -> dict[str, Any]:
    params = obj.get("parameters") or {}
    if not isinstance(params, dict):
        raise _HttpError(400, f"{where}.parameters must be an object")
    if any(k.startswith("shared_memory") for k in params):
        raise _HttpError(400, f"{where}: the agent has no shared memory; send the data in the request")
    return params


def request_from_json(doc: Any, name: str, version: str, binary: bytes = b""  # noqa: ANN401
                      ) -> tuple[ipb.ModelInferRequest, set[str] | None]:
    """A JSON inference request as the ModelInferRequest the gRPC port takes, and which outputs go back as binary
    data (None: all of them); a malformed one is refused naming the field.

    Triton's binary data extension (what tritonclient.http sends unless told otherwise): `binary` is what follows
    the JSON header (its length in the Inference-Header-Content-Length header); an input with
    `"parameters": {"binary_data_size": N}` takes the next N bytes of it (BYTES as 4-byte little-endian lengths and
    the bytes, numbers little-endian), and an output asked for with `"binary_data": true` (or every output, with
    the request's `"binary_data_output": true`) comes back the same way."""
    if not isinstance(doc, dict):
        raise _HttpError(400, 'the body must be a JSON object with "inputs"')
    req = ipb.ModelInferRequest(model_name=name, model_version=version, id=str(doc.get("id") or ""))
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise _HttpError(400, '"inputs" must be a list of tensors: [{"name", "shape", "datatype", "data"}]')
    offset = 0
    chunks: list[bytes] = []
    for k, t in enumerate(inputs):
        where = f"inputs[{k}]"
        if not isinstance(t, dict):
            raise _HttpError(400, f"{where} must be an object with name, shape, datatype and data")
        for key, kind in (("name", str), ("datatype", str), ("shape", list)):
            if not isinstance(t.get(key), kind):
                raise _HttpError(400, f"{where}.{key} is missing or not a {'list' if kind is list else 'string'}")
        shape = t["shape"]
        if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise _HttpError(400, f"{where}.shape must be whole numbers of at least 0, got {shape}")
        size = _params(t, where).get("binary_data_size")
        if size is not None:
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise _HttpError(400, f"{where}.parameters.binary_data_size must be a whole number, got {size!r}")
            if offset + size > len(binary):
                raise _HttpError(400, f"{where} ({t['name']}): binary_data_size {size}, but only "
                                 f"{len(binary) - offset} bytes of binary data follow the JSON header")
            tensor = req.inputs.add(name=t["name"], datatype=t["datatype"], shape=shape)
            chunks.append(binary[offset:offset + size])
            offset += size
            continue
        if chunks or binary:  # the protocol's raw contents are all or none
            raise _HttpError(400, f"{where} ({t['name']}): give every input as binary data or none")
        values = _flat(t.get("data"), where)
        if len(values) != math.prod(shape):
            raise _HttpError(400, f"{where} ({t['name']}): {len(values)} values for shape {shape}")
        tensor = req.inputs.add(name=t["name"], datatype=t["datatype"], shape=shape)
        try:
            if t["datatype"] == "BYTES":
                tensor.contents.bytes_contents.extend(v.encode() for v in values)
            elif t["datatype"] == "UINT8":
                if not all(isinstance(v, int) and 0 <= v <= 255 for v in values):
                    raise _HttpError(400, f"{where} ({t['name']}): UINT8 values must be whole numbers from 0 to 255")
                tensor.contents.uint_contents.extend(values)
            elif t["datatype"] == "FP32":
                tensor.contents.fp32_contents.extend(values)
        except (AttributeError, TypeError):  # a number for BYTES, a string for FP32
            raise _HttpError(400, f"{where} ({t['name']}): its data are not all {t['datatype']} values") from None
    if offset != len(binary):
        raise _HttpError(400, f"{len(binary) - offset} bytes of binary data after the inputs' binary_data_size")
    req.raw_input_contents.extend(chunks)
    all_binary = _params(doc, "the request").get("binary_data_output", False)
    if not isinstance(all_binary, bool):
        raise _HttpError(400, f"parameters.binary_data_output must be true or false, got {all_binary!r}")
    outputs = doc.get("outputs") or []
    if not isinstance(outputs, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                for o in outputs):
        raise _HttpError(400, '"outputs" must be a list of {"name": ...}')
    binary_out: set[str] = set()
    for k, o in enumerate(outputs):
        out = req.outputs.add(name=o["name"])
        params = _params(o, f"outputs[{k}]")
        count = params.get("classification")
        if count is not None:  # Triton's classification extension: the k likeliest classes
            if not isinstance(count, int) or isinstance(count, bool):
                raise _HttpError(400, f"outputs[{k}].parameters.classification must be a whole number, got {count!r}")
            out.parameters["classification"].int64_param = count
        wants = params.get("binary_data", all_binary)
        if not isinstance(wants, bool):
            raise _HttpError(400, f"outputs[{k}].parameters.binary_data must be true or false, got {wants!r}")
        if wants:
            binary_out.add(o["name"])
    return req, (None if not outputs and all_binary else binary_out)


def response_json(resp: ipb.ModelInferResponse, binary: set[str] | None = frozenset()
                  ) -> tuple[dict[str, Any], bytes]:
    """The JSON answer, and the binary data that follows it (b"" when no output is binary): `binary` names the
    outputs sent as binary data (None: all)."""
    outputs, tail = [], []
    for t, raw in zip(resp.outputs, resp.raw_output_contents, strict=True):
        out: dict[str, Any] = {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)}
        if binary is None or t.name in binary:  # the gRPC reply's raw contents are Triton's binary layout
            out["parameters"] = {"binary_data_size": len(raw)}
            tail.append(raw)
        elif t.datatype == "BYTES":
            out["data"] = [v.decode("utf-8", errors="replace") for v in deserialize_bytes(raw)]
        else:
            out["data"] = np.frombuffer(raw, dtype="<f4" if t.datatype == "FP32" else "<f8").tolist()
        outputs.append(out)
    doc: dict[str, Any] = {"model_name": resp.model_name, "model_version": resp.model_version, "outputs": outputs}
    if resp.id:
        doc["id"] = resp.id
    return doc, b"".join(tail)


_INT64 = {FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT64,
          FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED64}


def message_json(msg: Any) -> dict[str, Any]:  # noqa: ANN401
    """A protobuf message as Triton's REST port writes it: its field names, every field (zeros too), and 64-bit
    integers as JSON numbers (protobuf's own JSON makes them strings, which tritonclient.http's users would get)."""
    from google.protobuf.json_format import MessageToDict

    def numbers(doc: Any, desc: Any) -> Any:  # noqa: ANN401
        for f in desc.fields:
            if f.name not in doc:
                continue
            many = f.label == FieldDescriptor.LABEL_REPEATED
            if f.message_type is not None and not f.message_type.GetOptions().map_entry:
                for d in doc[f.name] if many else [doc[f.name]]:
                    numbers(d, f.message_type)
            elif f.type in _INT64:
                doc[f.name] = [int(v) for v in doc[f.name]] if many else int(doc[f.name])
        return doc

    return numbers(MessageToDict(msg, preserving_proto_field_name=True, always_print_fields_with_no_presence=True),
                   msg.DESCRIPTOR)


def _tensors(ts: Any) -> list[dict[str, Any]]:  # noqa: ANN401
    return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in ts]


def _json_body(body: bytes) -> dict[str, Any]:
    """A request's JSON object; an empty body is {}."""
    if not body.strip():
        return {}
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _HttpError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise _HttpError(400, f"the body is {type(doc).__name__} JSON: an object is wanted")
    return doc


async def route(servicer: Inference, method: str, path: str, headers: dict[str, str], body: bytes
                ) -> tuple[int, Any] | tuple[int, dict[str, Any], bytes]:
    """(HTTP status, JSON body[, binary data after it]) for one request."""
    ctx = _Context(headers)
    parts = [p for p in path.split("?", 1)[0].split("/") if p]
    want = "POST" if parts[-1:] == ["infer"] or parts == ["v2", "repository", "index"] else "GET"
    if method not in (want, "HEAD" if want == "GET" else want):
        raise _HttpError(405, f"{path}: use {want}")
    if parts == ["v2"]:
        r = await servicer.ServerMetadata(ipb.ServerMetadataRequest(), ctx)
        return 200, {"name": r.name, "version": r.version, "extensions": list(r.extensions)}
    if parts in (["v2", "health", "live"], ["v2", "health", "ready"]):
        if parts[2] == "live":
            return 200, {"live": (await servicer.ServerLive(ipb.ServerLiveRequest(), ctx)).live}
        ready = (await servicer.ServerReady(ipb.ServerReadyRequest(), ctx)).ready
        return (200 if ready else 400), {"ready": ready}
    if parts == ["v2", "models", "stats"]:  # every model's (the agent serves one)
        return 200, message_json(await servicer.ModelStatistics(ipb.ModelStatisticsRequest(), ctx))
    if parts == ["v2", "repository", "index"]:
        ready = _json_body(body).get("ready", False)
        if not isinstance(ready, bool):
            raise _HttpError(400, f"'ready' is {ready!r}: true or false")
        r = await servicer.RepositoryIndex(ipb.RepositoryIndexRequest(ready=ready), ctx)
        return 200, [message_json(m) for m in r.models]
    if len(parts) >= 3 and parts[:2] == ["v2", "models"]:
        name, rest, version = parts[2], parts[3:], ""
        if rest[:1] == ["versions"] and len(rest) >= 2:
            version, rest = rest[1], rest[2:]
        if rest == []:
            r = await servicer.ModelMetadata(ipb.ModelMetadataRequest(name=name, version=version), ctx)
            return 200, {"name": r.name, "versions": list(r.versions), "platform": r.platform,
                         "inputs": _tensors(r.inputs), "outputs": _tensors(r.outputs)}
        if rest == ["ready"]:
            ready = (await servicer.ModelReady(ipb.ModelReadyRequest(name=name, version=version), ctx)).ready
            return (200 if ready else 400), {"name": name, "ready": ready}
        if rest == ["config"]:
            return 200, message_json((await servicer.ModelConfig(ipb.ModelConfigRequest(name=name, version=version),
                                                                 ctx)).config)
        if rest == ["stats"]:
            return 200, message_json(await servicer.ModelStatistics(
                ipb.ModelStatisticsRequest(name=name, version=version), ctx))
        if rest == ["infer"]:
            await servicer.may_infer(name, version, ctx)
            header, binary = body, b""
            if "inference-header-content-length" in headers:  # Triton's binary data extension
                try:
                    n = int(headers["inference-header-content-length"])
                except ValueError:
                    n = -1
                if not 0 <= n <= len(body):
                    raise _HttpError(400, f"Inference-Header-Content-Length {headers['inference-header-content-length']}"
                                     f" is not a length within the {len(body)}-byte body")
                header, binary = body[:n], body[n:]
            try:
                doc = json.loads(header or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise _HttpError(400, f"the body is not JSON: {exc}") from None
            req, binary_out = request_from_json(doc, name, version, binary)
            resp = await servicer.ModelInfer(req, ctx)
            return (200, *response_json(resp, binary_out))
    raise _HttpError(404, f"{path}: not a path of the protocol (/v2, /v2/health/ready, /v2/models/NAME[/infer], "
                          "/v2/models/NAME/stats, /v2/repository/index)")


class RestServer:
    """The REST port: `port`, and `stop(grace)`, which stops taking connections and lets requests being answered
    finish (up to `grace` seconds, as the gRPC server's stop does), so that an agent stopped by its service
    manager does not drop an answer it has journaled."""

    def __init__(self, servicer: Inference):
        self.servicer = servicer
        self.port = 0
        self.busy = 0  # requests read and not yet answered
        self.stopping = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._listeners: list[socket.socket] = []
        self._tasks: set[asyncio.Task] = set()  # the accept loops and connections not yet past their first bytes

    def _spawn(self, coro: Any) -> None:  # noqa: ANN401
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _accept(self, sock: socket.socket, ctx: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as exc:  # out of file descriptors, a connection reset before it was accepted
                log.warning("REST port: accept failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            conn.setblocking(False)
            self._spawn(self._first_bytes(conn, ctx))

    async def _first_bytes(self, conn: socket.socket, ctx: ssl.SSLContext) -> None:
        """TLS (a handshake record, 0x16) goes on to the HTTPS handler; plain HTTP gets a 400 that says to use
        https:// with the workspace's CA, as nginx answers on its HTTPS port, where the connection was closed
        without an answer ("Empty reply from server"): Triton's REST port is plain HTTP, and its users type
        http:// first."""
        loop = asyncio.get_running_loop()
        try:
            first = await asyncio.wait_for(_peek(loop, conn), IDLE_S)
        except (TimeoutError, OSError):
            conn.close()
            return
        if first[:1] == b"\x16":
            reader = asyncio.StreamReader(limit=64 << 10)
            protocol = asyncio.StreamReaderProtocol(reader, self.handle)
            try:
                await loop.connect_accepted_socket(lambda: protocol, conn, ssl=ctx, ssl_handshake_timeout=IDLE_S)
            except (OSError, ssl.SSLError, TimeoutError) as exc:  # a failed handshake: the client says why
                log.debug("REST port: TLS handshake failed: %s", exc)
                conn.close()
            return
        if first:
            await _refuse_plain(loop, conn)
        conn.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while not self.stopping and await _one(self, reader, writer):
                pass
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        except Exception:  # noqa: BLE001 - one bad connection must not take the agent down
            log.exception("HTTP request failed")
        finally:
            self._writers.discard(writer)
            writer.close()

    def started(self) -> None:
        self.busy += 1
        self._idle.clear()

    def answered(self) -> None:
        self.busy -= 1
        if self.busy == 0:
            self._idle.set()

    async def stop(self, grace: float) -> None:
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        for sock in self._listeners:
            sock.close()
        try:
            await asyncio.wait_for(self._idle.wait(), grace)
        except TimeoutError:
            log.warning("stopping with %d REST request(s) unanswered after %.0f s", self.busy, grace)
        for w in list(self._writers):  # idle kept-alive connections
            w.close()


async def serve_rest(servicer: Inference, listen: str, cert: Path, key: Path, reuse_port: bool = False) -> RestServer:
    """Serve the REST binding on `listen` over TLS with the agent's certificate; reuse_port: the agent's workers
    share the port (each binds it, and the kernel hands each new connection to one of them)."""
    from edge_agent.proto.address import split_address

    host, port = split_address(listen, "0.0.0.0:8000")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    rest = RestServer(servicer)
    rest._listeners = _listen(host, port, reuse_port)
    rest.port = rest._listeners[0].getsockname()[1]
    for sock in rest._listeners:
        rest._spawn(rest._accept(sock, ctx))
    return rest


def _listen(host: str, port: int, reuse_port: bool) -> list[socket.socket]:
    """Listening sockets on every address host names (as asyncio.start_server binds them), on one port."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    socks: list[socket.socket] = []
    try:
        for family, kind, proto, _, addr in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if port == 0 and len(socks) > 1:  # the port the first one got, on every address
                addr = (addr[0], socks[0].getsockname()[1], *addr[2:])
            sock.bind(addr)  # an OSError: the agent says which --http address it could not serve
            sock.listen(128)
            sock.setblocking(False)
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    return socks


async def _peek(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    """The connection's first bytes, left in the socket for whoever reads it next (b"" when it closed)."""
    ready = loop.create_future()
    loop.add_reader(conn.fileno(), lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv(16, socket.MSG_PEEK)


async def _refuse_plain(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    body = json.dumps({"error": "this port speaks HTTPS only (TLS with the agent's certificate): call "
                       "https://HOST:PORT/v2/... and trust the workspace's CA (curl --cacert .cdl/pki/ca.crt; "
                       "tritonclient.http with ssl=True)"}).encode()
    try:
        with contextlib.suppress(BlockingIOError):
            conn.recv(64 << 10)  # the request, read, so that closing does not reset the connection under the answer
        await asyncio.wait_for(loop.sock_sendall(conn, b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                                                 + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                                                 + body), 10)
        conn.shutdown(socket.SHUT_WR)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_until_closed(loop, conn), 2.0)
    except (OSError, TimeoutError):
        pass


async def _until_closed(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> None:
    while await loop.sock_recv(conn, 64 << 10):
        pass


async def _one(rest: RestServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Read and answer one request; False when the connection is to close."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_S)
    except asyncio.IncompleteReadError:
        return False  # the client closed between requests
    except asyncio.LimitOverrunError:
        await _send(writer, 431, {"error": "the request's header is larger than 64 KiB"}, False)
        return False
    lines = head.decode("latin-1").split("\r\n")
    try:
        method, path, version = lines[0].split(" ")
    except ValueError:
        await _send(writer, 400, {"error": f"not an HTTP request line: {lines[0][:80]!r}"}, False)
        return False
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    answer = _accepted_encoding(headers.get("accept-encoding", ""))
    chunked = "transfer-encoding" in headers
    if chunked and headers["transfer-encoding"].lower() != "chunked":
        await _send(writer, 501, {"error": f"Transfer-Encoding {headers['transfer-encoding']!r}: only chunked (or a "
                                  "Content-Length) is taken"}, False)
        return False
    try:
        length = 0 if chunked else int(headers.get("content-length", "0"))
    except ValueError:
        await _send(writer, 400, {"error": f"Content-Length {headers['content-length']!r} is not a number"}, False)
        return False
    if length > MAX_BODY:
        await _send(writer, 413, {"error": f"the body is {length} bytes; at most {MAX_BODY} are taken"}, False)
        return False
    if (length or chunked) and headers.get("expect", "").lower() == "100-continue":  # curl asks so over 1 KiB
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
    try:
        if chunked:
            body = await asyncio.wait_for(_read_chunked(reader), IDLE_S)
        else:
            body = await asyncio.wait_for(reader.readexactly(length), IDLE_S) if length else b""
        body = _decoded(body, headers.get("content-encoding", ""))
    except _HttpError as exc:  # the connection's framing may be lost: answer, then close it
        await _send(writer, exc.status, {"error": exc.message}, False, encoding=answer)
        return False
    rest.started()
    try:
        tail = b""
        try:
            status, doc, *more = await route(rest.servicer, method, path, headers, body)
            tail = more[0] if more else b""
        except _HttpError as exc:
            status, doc = exc.status, {"error": exc.message}
        keep = keep and not rest.stopping
        await _send(writer, status, doc, keep, head_only=method == "HEAD", tail=tail, encoding=answer)
    finally:
        rest.answered()
    return keep


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    """A body sent with Transfer-Encoding: chunked (a client that streams it, as requests does with a generator),
    at most MAX_BODY bytes; trailers are read and dropped."""
    parts, size = [], 0
    while True:
        try:
            line = await reader.readuntil(b"\r\n")
        except asyncio.LimitOverrunError:
            raise _HttpError(400, "a chunk size line over 64 KiB") from None
        try:
            n = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise _HttpError(400, f"not a chunk size: {line[:40]!r}") from None
        if n == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return b"".join(parts)
        size += n
        if size > MAX_BODY:
            raise _HttpError(413, f"the chunked body is over {MAX_BODY} bytes, the most that is taken")
        parts.append(await reader.readexactly(n))
        if await reader.readexactly(2) != b"\r\n":
            raise _HttpError(400, "a chunk does not end with CRLF")


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}  # HTTP's deflate is zlib's format


def _decoded(body: bytes, encoding: str) -> bytes:
    """A body sent with Content-Encoding gzip or deflate (tritonclient.http's request_compression_algorithm),
    decompressed to at most MAX_BODY bytes; it was parsed as it came, and failed as "not JSON"."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    if enc not in _WBITS:
        raise _HttpError(415, f"Content-Encoding {encoding!r}: gzip, deflate or none are taken")
    d = zlib.decompressobj(_WBITS[enc])
    try:
        out = d.decompress(body, MAX_BODY)
    except zlib.error as exc:
        raise _HttpError(400, f"the body is not {enc} data, as its Content-Encoding says ({exc})") from None
    if d.unconsumed_tail:
        raise _HttpError(413, f"the body is over {MAX_BODY} bytes decompressed, the most that is taken")
    return out


def _accepted_encoding(accept: str) -> str:
    """gzip or deflate where the client takes it (Accept-Encoding, as tritonclient.http's
    response_compression_algorithm sends it), else ''."""
    took = {}
    for part in accept.lower().split(","):
        name, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        took[name.strip()] = q
    return next((e for e in ("gzip", "deflate") if took.get(e, 0) > 0), "")


async def _send(writer: asyncio.StreamWriter, status: int, doc: Any, keep: bool,  # noqa: ANN401
                head_only: bool = False, tail: bytes = b"", encoding: str = "") -> None:
    """tail: binary data after the JSON (Triton's binary data extension), its start given by
    Inference-Header-Content-Length (in the body before compression, as Triton gives it); encoding: gzip or
    deflate, the body compressed as the client asked."""
    body = json.dumps(doc).encode()
    extra = 'WWW-Authenticate: Bearer realm="cdl-edge"\r\n' if status == 401 else ""
    kind = "application/json"
    if tail:
        extra += f"Inference-Header-Content-Length: {len(body)}\r\n"
        kind = "application/octet-stream"
    payload = body + tail
    if encoding:
        c = zlib.compressobj(6, zlib.DEFLATED, _WBITS[encoding])
        payload = c.compress(payload) + c.flush()
        extra += f"Content-Encoding: {encoding}\r\nVary: Accept-Encoding\r\n"
    writer.write(f"HTTP/1.1 {status} {_REASON.get(status, 'Error')}\r\nContent-Type: {kind}\r\n"
                 f"Content-Length: {len(payload)}\r\n{extra}"
                 f"Connection: {'keep-alive' if keep else 'close'}\r\n\r\n".encode()
                 + (b"" if head_only else payload))
    await writer.drain()
