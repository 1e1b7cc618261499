"""Regenerate the committed gRPC code of every package's proto/ folder (`make proto`).

Generated with --proto_path at the repository root, so generated imports are package-absolute."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("*/proto/*.proto"))


def generate(out_dir: Path = ROOT, protos: list[str] = PROTOS) -> None:
    from grpc_tools import protoc

    for proto in protos:
        args = ["protoc", f"-I{ROOT}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
                f"--grpc_python_out={out_dir}", str(ROOT / proto)]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
