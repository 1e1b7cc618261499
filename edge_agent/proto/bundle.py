"""The model bundle: one signed file that carries everything a device needs. Part of the published protocol:
the runtime writes bundles with `write_bundle`, the agent reads them with `read_bundle`.

A bundle is a zip archive with exactly these members:
    manifest.json   the manifest (below), UTF-8 JSON
    manifest.sig    the ed25519 signature of manifest.json's bytes, with the workspace's signing key
    model.onnx      the model (an input of the preprocessed tensor, an output of class probabilities)
    (engine/...)    optional: a TensorRT engine cache built on a device
Manifest (format "cdl-bundle/1"):
    name, version, variant, created, key_id
    input: {name, datatype, shape, layout}        the ONNX input (after preprocessing)
    output: {name, datatype, shape}               class probabilities
    raw_input: {kind: text|image, datatype, shape} what clients send (BYTES text, or UINT8/FP32 images)
    classes: [...]
    preprocessing: {...}                          as data: see edge_agent.proto.preprocessing
    reference: {...}                              statistics of the training inputs, for drift checks
    metrics: {...}, lineage: {...}
    members: {"model.onnx": {"sha256", "size"}, ...}
Nothing executable travels: no pickles, no code. A reader checks member names (no absolute paths, no
"..", nothing unlisted), sizes, every sha256 and the signature before it trusts anything.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from edge_agent.proto.files import as_if_opened

FORMAT = "cdl-bundle/1"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MODEL = "model.onnx"
MAX_MEMBER_BYTES = 2 << 30


class BundleError(Exception):
    """A bundle is malformed, tampered with, or not signed by the enrolled workspace."""


def key_id(public_key_pem: bytes) -> str:
    from cryptography.hazmat.primitives import serialization

    pub = serialization.load_pem_public_key(public_key_pem)
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _check_name(name: str) -> None:
    p = PurePosixPath(name)
    if not name or name.startswith("/") or "\\" in name or ".." in p.parts or p.is_absolute() or ":" in name:
        raise BundleError(f"member {name!r} escapes the bundle folder")


def write_bundle(path: Path, manifest: dict[str, Any], files: dict[str, Path | bytes], private_key_pem: bytes) -> str:
    """Write a signed bundle atomically; returns its sha256."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_private_key(private_key_pem, password=None)
    pub_pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    members: dict[str, dict[str, Any]] = {}
    blobs: dict[str, bytes] = {}
    for name, src in files.items():
        _check_name(name)
        data = src if isinstance(src, bytes) else Path(src).read_bytes()
        blobs[name] = data
        members[name] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
    manifest = {**manifest, "format": FORMAT, "members": members, "key_id": key_id(pub_pem)}
    body = json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8")
    sig = base64.b64encode(key.sign(body))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    as_if_opened(fd)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name, data in ((MANIFEST, body), (SIGNATURE, sig), *blobs.items()):
                # a fixed time on every member: the same contents make the same file (and the same bundle id)
                info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    h = hashlib.sha256(path.read_bytes()).hexdigest()
    return h


@dataclass(frozen=True)
class VerifiedBundle:
    manifest: dict[str, Any]
    directory: Path  # where the verified members were extracted

    @property
    def model_path(self) -> Path:
        return self.directory / MODEL


def read_manifest_unverified(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as zf:
        return json.loads(zf.read(MANIFEST))


def verify_bytes(data: bytes, public_keys_pem: list[bytes]) -> dict[str, Any]:
    """Check a bundle held in memory; returns its manifest. Raises BundleError with the reason."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise BundleError(f"not a bundle (truncated or not a zip archive: {exc})") from None
    with zf:
        names = zf.namelist()
        for n in names:
            _check_name(n)
        if MANIFEST not in names or SIGNATURE not in names:
            raise BundleError("no manifest.json or manifest.sig in the bundle")
        try:
            body = zf.read(MANIFEST)
            sig = base64.b64decode(zf.read(SIGNATURE), validate=True)
        except (zipfile.BadZipFile, ValueError, OSError) as exc:
            raise BundleError(f"cannot read the manifest: {exc}") from None
        _verify_signature(body, sig, public_keys_pem)
        manifest = json.loads(body)
        if manifest.get("format") != FORMAT:
            raise BundleError(f"unsupported bundle format {manifest.get('format')!r} (expected {FORMAT})")
        members = manifest.get("members") or {}
        if MODEL not in members:
            raise BundleError("the manifest lists no model.onnx")
        extra = set(names) - set(members) - {MANIFEST, SIGNATURE}
        if extra:
            raise BundleError(f"member {sorted(extra)[0]!r} is not listed in the manifest")
        for name, meta in members.items():
            _check_name(name)
            if name not in names:
                raise BundleError(f"member {name} is missing")
            info = zf.getinfo(name)
            if info.file_size != meta["size"] or info.file_size > MAX_MEMBER_BYTES:
                raise BundleError(f"member {name}: size {info.file_size}, the manifest says {meta['size']}")
            try:
                digest = hashlib.sha256(zf.read(name)).hexdigest()
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise BundleError(f"member {name} is corrupt: {exc}") from None
            if digest != meta["sha256"]:
                raise BundleError(f"member {name} was tampered with: sha256 {digest[:16]}..., the manifest says "
                                  f"{meta['sha256'][:16]}...")
        return manifest


def _verify_signature(body: bytes, sig: bytes, public_keys_pem: list[bytes]) -> None:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization

    if not public_keys_pem:
        raise BundleError("no workspace public key is enrolled on this device")
    for pem in public_keys_pem:
        pub = serialization.load_pem_public_key(pem)
        try:
            pub.verify(sig, body)
            return
        except InvalidSignature:
            continue
    raise BundleError("wrong signature: the manifest is not signed by the enrolled workspace key")


def extract_verified(data: bytes, public_keys_pem: list[bytes], dest: Path) -> VerifiedBundle:
    """Verify, then extract into `dest` through a temporary folder and one rename (all or nothing)."""
    manifest = verify_bytes(data, public_keys_pem)
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            for name in [MANIFEST, SIGNATURE, *manifest["members"]]:
                target = (tmp / name).resolve()
                if tmp.resolve() not in target.parents:
                    raise BundleError(f"member {name!r} escapes the bundle folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(zf.read(name))
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
    except BaseException:  # a rejected member or a full disk: nothing of it stays
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return VerifiedBundle(manifest, dest)
