"""Content-addressed artifacts under `.cdl/artifacts/`: checkpoints, ONNX files, bundles, cached tensors.

An artifact's name is the sha256 of its bytes; writes go through a temporary file and a rename, so a reader
never sees half an artifact, and writing the same bytes twice stores them once.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from edge_agent.proto.files import as_if_opened
from runtime.domain.errors import NotFoundError


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            b = fh.read(chunk)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        dest = self.path(digest)
        if not dest.exists():
            dest.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
            as_if_opened(fd)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, dest)
        return digest

    def put_file(self, src: Path, move: bool = False) -> str:
        digest = sha256_file(src)
        dest = self.path(digest)
        if dest.exists():
            if move:
                Path(src).unlink()
            return digest
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-")
        as_if_opened(fd)
        os.close(fd)
        if move:
            shutil.move(str(src), tmp)
        else:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
        return digest

    def get(self, digest: str) -> Path:
        p = self.path(digest)
        if not p.exists():
            raise NotFoundError(f"artifact {digest} is missing from {self.root}")
        return p

    def read_bytes(self, digest: str) -> bytes:
        return self.get(digest).read_bytes()
