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
