"""Regenerate the committed gRPC code of every package's proto/ folder (`make proto`).

Generated with --proto_path at the repository root, so generated imports are package-absolute."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROTOS = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("*/proto/*.proto"))


def generate(out_dir: Path = ROOT, protos: list[str] = PROTOS) -> None:
    """protoc in its own process: grpc_tools shares protobuf's C state with whatever the caller loaded."""
    import subprocess

    for proto in protos:
        args = [sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT}", f"--python_out={out_dir}",
                f"--pyi_out={out_dir}", f"--grpc_python_out={out_dir}", str(ROOT / proto)]
        proc = subprocess.run(args, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"protoc failed on {proto}: {proc.stderr}")


if __name__ == "__main__":
    generate(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT)
