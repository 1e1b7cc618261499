"""The `cdl-edge` command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cdl-edge", description="CDL Studio edge agent")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="serve the active bundle over gRPC (TLS), journal every prediction")
    serve.add_argument("--data-dir", required=True, type=Path,
                       help="the folder `cdl devices enroll` made (agent.json, tls/); bundles and the journal go here")
    serve.add_argument("--listen", default="0.0.0.0:8001", help="HOST:PORT (default 0.0.0.0:8001)")
    args = parser.parse_args(argv)
    from edge_agent.config import ConfigError
    from edge_agent.server import run

    try:
        run(args.data_dir, args.listen)
    except (ConfigError, OSError) as exc:
        print(f"cdl-edge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
