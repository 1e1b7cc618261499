"""BYTES tensors of the Open Inference Protocol in `raw_input_contents`/`raw_output_contents`: each element a
4-byte little-endian length, then its bytes. The agent and the runtime's client (`runtime.serve.predict`) share
these."""

from __future__ import annotations

import struct


def deserialize_bytes(raw: bytes) -> list[bytes]:
    out, i = [], 0
    while i < len(raw):
        (n,) = struct.unpack_from("<I", raw, i)
        i += 4
        out.append(raw[i : i + n])
        i += n
    return out


def serialize_bytes(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)
