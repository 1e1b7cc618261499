"""Generated gRPC code is committed; regenerating it must give the same files."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _protos() -> list[str]:
    return sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("*/proto/*.proto"))


@pytest.mark.parametrize("proto", _protos())
def test_generated_code_is_up_to_date(proto, tmp_path):
    from runtime.proto.generate import generate

    generate(tmp_path, [proto])
    stem = Path(proto).with_suffix("")
    for suffix in ("_pb2.py", "_pb2_grpc.py", "_pb2.pyi"):
        fresh = tmp_path / f"{stem}{suffix}"
        committed = ROOT / f"{stem}{suffix}"
        if not fresh.exists():
            continue
        assert committed.exists(), f"{committed} is missing: run `make proto`"
        assert committed.read_text() == fresh.read_text(), f"{committed} is stale: run `make proto`"
