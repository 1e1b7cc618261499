"""The `cdl-edge` command."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def _warn_owner(data_dir: Path, cmd: str, consequence: str) -> None:
    """Run as another user than the one the agent's folder belongs to (root, where the agent runs as cdl-edge): the
    files written are that user's."""
    try:
        owner = data_dir.stat().st_uid
    except OSError:
        return
    if owner != os.geteuid():
        print(f"cdl-edge: warning: {data_dir} belongs to user id {owner}, not to you ({os.geteuid()}): run this as "
              f"the agent's user (`sudo -u cdl-edge cdl-edge {cmd} ...`), or {consequence}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cdl-edge", description="CDL Studio edge agent")
    from edge_agent import __version__

    parser.add_argument("--version", action="version", version=f"cdl-edge {__version__}")
    sub = parser.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="serve the active bundle over gRPC (TLS), journal every prediction")
    serve.add_argument("--data-dir", required=True, type=Path,
                       help="the folder `cdl devices enroll` made (agent.json, tls/); bundles and the journal go here")
    serve.add_argument("--listen", default=None, metavar="HOST:PORT",
                       help="where the gRPC services listen (default: agent.json's listen, which `cdl devices "
                       "enroll` sets to the enrolled port; 0.0.0.0:8001 where it has none)")
    serve.add_argument("--workers", type=int, default=None,
                       help="agent processes sharing the port, one core each (default: agent.json's workers, 1)")
    serve.add_argument("--metrics", default=None, metavar="HOST:PORT",
                       help="serve Prometheus metrics at http://HOST:PORT/metrics (default: agent.json's "
                       "metrics_listen; off)")
    serve.add_argument("--http", default=None, metavar="HOST:PORT",
                       help="serve the Open Inference Protocol's REST binding at https://HOST:PORT/v2 (default: "
                       "agent.json's http_listen; off)")
    serve.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)  # set by worker 0
    serve.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)  # set by `cdl serve`
    inst = sub.add_parser("install", help="store and activate a bundle file put on the device by hand (as a push "
                          "does: signature, hashes, the model loaded first)")
    inst.add_argument("bundle", type=Path, help="a bundle `cdl package` wrote (or the studio's Save bundle…)")
    inst.add_argument("--data-dir", required=True, type=Path, help="the agent's folder (agent.json, tls/)")
    inst.add_argument("--no-activate", action="store_true", help="store it only (`cdl-edge install` without it, or "
                      "`cdl deploy` of the same bundle from the workstation, makes it active)")
    back = sub.add_parser("rollback", help="make the previous model active again, on the device itself (the model "
                          "loaded first; a running agent serves it from its next request)")
    back.add_argument("--data-dir", required=True, type=Path, help="the agent's folder (agent.json, tls/)")
    stat = sub.add_parser("status", help="what the agent folder holds, read on the device: whether an agent "
                          "serves it, the active and previous model, the bundles, the journal, disk, certificate")
    stat.add_argument("--data-dir", required=True, type=Path, help="the agent's folder (agent.json, tls/)")
    stat.add_argument("--json", action="store_true", help="the same as a JSON document")
    stat.add_argument("--check", action="store_true", help="a health check (a container's HEALTHCHECK): exit 0 where "
                      "the agent answers ServerReady with a model loaded, 1 otherwise, with one line saying which")
    args = parser.parse_args(argv)
    from edge_agent.config import ConfigError, check_listen

    if args.cmd == "rollback":
        from edge_agent.install import rollback

        _warn_owner(args.data_dir, "rollback", "active.json is then yours, not the agent's")
        from edge_agent.proto.bundle import BundleError

        try:
            r = rollback(args.data_dir)
        except (ConfigError, BundleError, OSError) as exc:
            print(f"cdl-edge: error: {exc}", file=sys.stderr)
            return 2
        print(f"active {r['name']}:{r['version']}:{r['variant']} (bundle {r['bundle_id'][:12]}); a running agent "
              f"serves it from its next request; the model it replaced, bundle {(r['replaced'] or '?')[:12]}, is the "
              "previous one now (`cdl-edge rollback` again goes back to it)")
        return 0
    if args.cmd == "status":
        import json

        from edge_agent.status import local_status, status_lines

        try:
            doc = local_status(args.data_dir)
        except (ConfigError, OSError) as exc:
            print(f"cdl-edge: error: {exc}", file=sys.stderr)
            return 2
        if args.check:
            from edge_agent.status import readiness

            ok, why = readiness(doc)
            print(f"{doc['device']}: {'ready' if ok else 'not ready'}: {why}", file=sys.stdout if ok else sys.stderr)
            return 0 if ok else 1
        print(json.dumps(doc, indent=1) if args.json else "\n".join(status_lines(doc)))
        return 0

    if args.cmd == "install":
        from edge_agent.install import install
        from edge_agent.proto.bundle import BundleError

        _warn_owner(args.data_dir, "install", "the agent cannot delete the bundle when it is old")
        try:
            r = install(args.data_dir, args.bundle, not args.no_activate)
        except (ConfigError, BundleError, OSError) as exc:
            print(f"cdl-edge: error: {exc}", file=sys.stderr)
            return 2
        what = f"{r['name']}:{r['version']}:{r['variant']} (bundle {r['bundle_id'][:12]})"
        if r["activated"]:
            print(f"active {what}; a running agent serves it from its next request"
                  + (f"; the previous bundle {r['previous'][:12]} is kept for a rollback" if r["previous"] else ""))
        else:
            print(f"stored {what}, not activated")
        return 0
    from edge_agent.server import run

    try:
        if args.listen is not None:
            check_listen(args.listen)
        for flag, value in (("--metrics", args.metrics), ("--http", args.http)):
            if value:
                try:
                    check_listen(value)
                except ConfigError as exc:
                    raise ConfigError(str(exc).replace("--listen", flag)) from None
        if args.workers is not None and not 1 <= args.workers <= 64:
            raise ConfigError(f"--workers must be from 1 to 64, got {args.workers}")
        run(args.data_dir, args.listen, args.workers, args.worker_index, args.metrics, args.parent_pid, args.http)
    except (ConfigError, OSError) as exc:
        print(f"cdl-edge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
