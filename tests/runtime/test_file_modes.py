"""Files written whole (temporary file, then rename) get the mode the user's umask gives any file: mkstemp's 0600
made cdl.yaml, dataset files, artifacts and `cdl package -o` bundles readable by their owner alone. The keys
stay owner-only."""

from __future__ import annotations

import os
import stat

import pytest


@pytest.fixture
def umask_027():
    old = os.umask(0o027)
    yield 0o640
    os.umask(old)


def _mode(path) -> int:  # noqa: ANN001
    return stat.S_IMODE(os.stat(path).st_mode)


def test_whole_file_writes_follow_the_umask(tmp_path, umask_027):
    import numpy as np

    from edge_agent.proto.bundle import write_bundle
    from edge_agent.proto.files import umask
    from runtime.keys import signing_key
    from runtime.workspace.artifacts import ArtifactStore
    from runtime.workspace.config import atomic_write_text
    from runtime.workspace.dataset import write_index, write_npy_pack

    assert umask() == 0o027
    atomic_write_text(tmp_path / "cdl.yaml", "cdl: 1\n")
    assert _mode(tmp_path / "cdl.yaml") == umask_027
    write_index(tmp_path / "index.jsonl", [])
    assert _mode(tmp_path / "index.jsonl") == umask_027
    pack = write_npy_pack(tmp_path / "packs", np.zeros((2, 2), np.uint8))
    assert _mode(tmp_path / "packs" / pack) == umask_027
    store = ArtifactStore(tmp_path / "artifacts")
    assert _mode(store.get(store.put_bytes(b"abc"))) == umask_027
    (tmp_path / "src.bin").write_bytes(b"xyz")
    assert _mode(store.get(store.put_file(tmp_path / "src.bin"))) == umask_027
    priv, _ = signing_key(tmp_path)
    assert _mode(tmp_path / ".cdl" / "keys" / "bundle-signing.pem") == 0o600  # the private key stays private
    write_bundle(tmp_path / "m.cdlb", {"name": "m"}, {"model.onnx": b"onnx"}, priv)
    assert _mode(tmp_path / "m.cdlb") == umask_027


def test_processes_starting_at_once_on_a_new_workspace_share_one_ca_and_one_signing_key(tmp_path):
    """Two `cdl serve` (the studio's Try it… starts a variant and FP32 together) on a workspace that had no CA yet
    each made one: the certificate of one was signed by a CA the other had replaced, and TLS failed with 'bad
    signature'. The CA and the signing key are made once, under a lock."""
    import subprocess
    import sys

    code = ("import hashlib, sys, time; from pathlib import Path; from runtime.pki import ca; "
            "from runtime.keys import signing_key; root = Path(sys.argv[1]); "
            "time.sleep(max(0, float(sys.argv[2]) - time.time())); "
            "print(hashlib.sha256(b''.join(ca(root)) + b''.join(signing_key(root))).hexdigest())")
    import time

    start = str(time.time() + 2.0)  # all of them at the same moment, once their imports are done
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), start], stdout=subprocess.PIPE, text=True)
             for _ in range(6)]
    digests = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert len(digests) == 1 and all(p.returncode == 0 for p in procs), digests
    import os
    import stat

    for f in ("pki/ca.key", "keys/bundle-signing.pem"):
        assert stat.S_IMODE(os.stat(tmp_path / ".cdl" / f).st_mode) == 0o600


def test_a_lost_signing_key_is_not_replaced_behind_the_devices_back(tmp_path, text_ws):
    """The bundle-signing key gone (a restore without .cdl/keys, a cleanup): package made a new key without a word,
    and every push after it failed on the devices with a signature error. A public key file alone gone got a new
    key pair, the private key written over. A damaged key file gave cryptography's traceback."""
    import pytest

    from runtime.devices import enroll
    from runtime.domain.errors import CdlError
    from runtime.keys import signing_key

    ws = text_ws
    keys = ws.root / ".cdl" / "keys"
    priv, pub = signing_key(ws.root)
    (keys / "bundle-signing.pub.pem").unlink()
    assert signing_key(ws.root) == (priv, pub)  # derived from the private key, not a new pair
    enroll(ws, "edge1", "127.0.0.1:8001", tmp_path / "edge1")
    (keys / "bundle-signing.pem").unlink()
    with pytest.raises(CdlError, match=r"bundle-signing.pem is gone, and edge1 trust\(s\) only the key it held"):
        signing_key(ws.root, [d.name for d in ws.store.devices()])
    assert not (keys / "bundle-signing.pem").exists()
    # enrolling is trusting: it makes the new key, and says who still trusts the old one
    doc = enroll(ws, "edge2", "127.0.0.1:8002", tmp_path / "edge2")
    assert "bundle-signing key was gone, and made anew: edge1 trust(s) the old one(s)" in doc["warning"]
    new_priv, new_pub = signing_key(ws.root, ["edge1", "edge2"])
    assert new_pub != pub
    assert "warning" not in enroll(ws, "edge1", "127.0.0.1:8001", tmp_path / "edge1", replace=True)
    (keys / "bundle-signing.pem").write_text("not a key\n")
    with pytest.raises(CdlError, match=r"bundle-signing.pem: not a private key .*restore .cdl/keys/ from a backup"):
        signing_key(ws.root)


def test_a_lost_workspace_ca_is_not_replaced_behind_the_devices_back(tmp_path, text_ws):
    """The workspace CA gone: the next call to a device made a new CA without a word, and every call after it
    failed its TLS handshake as "cannot reach it over TLS"."""
    import pytest

    from runtime.devices import DeviceClient, enroll
    from runtime.domain.errors import CdlError

    ws = text_ws
    enroll(ws, "edge1", "127.0.0.1:8001", tmp_path / "edge1")
    (ws.root / ".cdl" / "pki" / "ca.key").unlink()
    with pytest.raises(CdlError, match=r"ca.key is gone: the workspace CA that signed the certificates of edge1"):
        DeviceClient(ws, "edge1")
    assert not (ws.root / ".cdl" / "pki" / "ca.key").exists()
    from runtime.doctor import diagnose

    doc = diagnose(ws)
    (finding,) = [c for c in doc["checks"] if c["area"] == "devices" and c["status"] == "fail"]
    assert finding["detail"] == "the workspace CA is gone (.cdl/pki/ca.key), and edge1 trust(s) it", finding
    assert doc["failed"]
    doc = enroll(ws, "edge2", "127.0.0.1:8002", tmp_path / "edge2")
    assert "CA was gone, and made anew: edge1 trust(s) the old one(s)" in doc["warning"], doc["warning"]
    DeviceClient(ws, "edge1").close()  # a CA again (the new one): edge1 must be enrolled again, as said
