"""The `cdl-edge` command."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cdl-edge", description="CDL Studio edge agent")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="serve bundles over gRPC")
    serve.add_argument("--data-dir", required=True)
    serve.add_argument("--listen", default="127.0.0.1:8001")
    args = parser.parse_args(argv)
    if args.cmd == "serve":
        print("cdl-edge serve: the edge agent is not built yet (see the issue on edge deployment)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
