"""`cdl doctor`: what is wrong with this workspace and this machine, each finding with what to do about it.

Checks, cheapest first (nothing here trains, imports TensorFlow, or calls a device):
- cdl.yaml and the registry open; a pipeline run in progress is named;
- model: model.train's own code (a src: template) read, not run: a syntax error, no build function, the wrong
  number of arguments;
- git: uncommitted changes in src/ or cdl.yaml (runs record the code as dirty);
- data: data/dataset holds the checked-out version; every version's files are in DVC's cache (a version whose
  files are gone cannot be checked out, trained on again, or have its transform fitted again); a DVC remote
  (without one the data has no copy elsewhere);
- backup: when `cdl backup` last ran (a workspace with models and no backup is warned about);
- disk: free space where the workspace is, and what `cdl gc` would give back;
- devices: certificates that expire within 30 days or have expired, devices not seen for a week, and what a
  device said when last asked: low disk, scoring records not collected, failing requests;
- engines: the installed versions of what the pipeline uses (torch or tensorflow for its framework,
  onnxruntime, optuna, dvc) and the execution providers onnxruntime really has; TensorRT as the compress step
  would find it.
A finding is ok, warn or fail; `cdl doctor` exits 1 when one fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from runtime.domain.errors import CdlError, first_line
from runtime.workspace.workspace import Workspace

LOW_DISK = 2 << 30  # below this much free space where the workspace is: warn
UNSEEN_DAYS = 7
BACKUP_DAYS = 7  # a backup older than this: warn


def _human(n: float) -> str:
    from runtime.gc import human

    return human(n)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _test_split(ws: Workspace, current: str, add: Any) -> None:  # noqa: ANN401
    """A test split too small to judge a model by (a dozen items of three classes held out three): model.evaluate's
    gate passed or failed on one item a class, and said nothing of it."""
    from runtime.workspace.dataset import UNLABELED

    v = ws.store.version(current)
    per = {s: {c: n for c, n in (v.split_classes or {}).get(s, {}).items() if c != UNLABELED}
           for s in ("train", "test")}
    classes = sorted(set(per["train"]) | set(per["test"]))
    n_test = sum(per["test"].values())
    if len(classes) < 2:
        return
    lacking = [c for c in classes if not per["test"].get(c)]
    if lacking or n_test < 5 * len(classes):
        add("data", "warn", f"{current}'s test split holds {n_test} labeled item(s) of {len(classes)} classes"
            + (f", none of {', '.join(lacking[:5])}{' ...' if len(lacking) > 5 else ''}" if lacking else "")
            + ": model.evaluate's gate and the review's per-class scores rest on that",
            "import or label more data, or raise data.split's test_fraction")


def _model_code(ws: Workspace, cfg: Any, add: Any) -> None:  # noqa: ANN401
    """model.train's src: template read, not run: a syntax error or a missing build function failed only when
    model.tune's first trial or model.train built the model."""
    import ast

    if "model.train" not in cfg.steps:
        return
    from runtime.ml.common import src_template

    template = str(cfg.params("model.train")["template"])
    named = src_template(template)
    if named is None:
        return
    path, func = ws.root / "src" / named[0], named[1]
    if not path.is_file():
        return  # check_plan named it above
    try:
        tree = ast.parse(path.read_bytes(), filename=f"src/{path.name}")
    except (SyntaxError, ValueError) as exc:
        where = f", line {exc.lineno}" if getattr(exc, "lineno", None) else ""
        add("model", "fail", f"src/{path.name}{where}: {type(exc).__name__}: {getattr(exc, 'msg', exc)}",
            f"model.train.template {template} does not load: fix the file")
        return
    defs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}
    fn = defs.get(func)
    if fn is None:
        add("model", "fail", f"src/{path.name} defines no function {func}(input_shape, num_classes, params)"
            + (f" (it defines {', '.join(sorted(defs))})" if defs else ""),
            f"model.train.template {template} names it: define it, or name another (src:{path.name}:FUNCTION)")
        return
    a = fn.args
    positional = len(a.posonlyargs) + len(a.args)
    if a.vararg is None and not positional - len(a.defaults) <= 3 <= positional:
        add("model", "fail", f"src/{path.name}, line {fn.lineno}: {func} takes {positional} positional "
            "argument(s); it is called with three: (input_shape, num_classes, params)", "change its signature")
        return
    add("model", "ok", f"model.train.template {template}: src/{path.name} defines {func}")


def diagnose(ws: Workspace) -> dict[str, Any]:
    out: list[dict[str, Any]] = []

    def add(area: str, status: str, detail: str, hint: str = "") -> None:
        out.append({"area": area, "status": status, "detail": detail, "hint": hint})

    # workspace
    try:
        cfg = ws.config()
        add("workspace", "ok", f"{ws.root}: pipeline {cfg.name!r}, {len(cfg.steps)} steps; registry "
            f"{'SQLite' if ws.store.is_sqlite else 'PostgreSQL'}")
    except CdlError as exc:
        add("workspace", "fail", str(exc), "fix cdl.yaml (the error names the field)")
        return {"workspace": str(ws.root), "checks": out, "failed": True}
    from runtime.jobs.runner import check_plan

    # each step's own rules, as `cdl run` checks them before it starts anything; a rule two steps check (model.tune
    # and model.train both check model.train's template) is said once, naming both
    refusals: dict[str, list[str]] = {}  # what the rule says -> what each step said
    for sid in cfg.order():
        try:
            check_plan(cfg, [sid], ws=ws)
        except CdlError as exc:
            said = str(exc)
            refusals.setdefault(said.removeprefix(f"{sid}: "), []).append(said)
    for rule, saying in refusals.items():
        said = saying[0] if len(saying) == 1 else \
            f"{', '.join(m.removesuffix(rule).removesuffix(': ') for m in saying)}: {rule}"
        said = said if said.startswith("cdl.yaml") else f"cdl.yaml: {said}"
        add("workspace", "fail", said, "fix it in cdl.yaml or the step's Parameters dialog: `cdl "
            "run` refuses to start while it stands")
    _model_code(ws, cfg, add)
    from runtime.jobs.runner import run_in_progress

    holder = run_in_progress(ws)
    if holder:
        add("workspace", "ok", f"a pipeline run is in progress ({holder})")
    # git
    try:
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "cdl.yaml"], cwd=ws.root,
                               capture_output=True, text=True, timeout=30)
        changed = [ln[3:] for ln in dirty.stdout.splitlines() if ln.strip()]
        if dirty.returncode != 0:
            add("git", "fail", f"git status failed: {first_line(dirty.stderr)}", "is the workspace a git repository?")
        elif changed:
            add("git", "warn", f"uncommitted changes: {', '.join(changed[:5])}" + (" …" if len(changed) > 5 else ""),
                "runs record the code as dirty; commit src/ and cdl.yaml to make them reproducible")
        else:
            add("git", "ok", "src/ and cdl.yaml are committed")
    except (OSError, subprocess.TimeoutExpired) as exc:
        add("git", "fail", f"git did not run ({exc})", "install git")
    # data
    versions = ws.store.versions()
    current = ws.current_version()
    if not versions:
        add("data", "ok", "no dataset version yet (run the data pipeline up to data.version)")
    else:
        from runtime.datasets import REBUILD

        remotes = ws.dvc.remotes()
        gone = []
        for v in versions:
            n = ws.dvc.missing(v.dvc_hash)
            if n:
                gone.append((v.id, n))
        if current and not ws.has_dataset():
            add("data", "fail", f"data/dataset does not hold the checked-out version {current}",
                f"`cdl data checkout {current}`" + (" (after `cdl data pull` if the cache lacks it)" if remotes else
                                                     " once DVC's cache has it"))
        if gone:
            worst = "fail" if any(v == current for v, _ in gone) else "warn"
            # a workspace restored from a backup without data and without a remote: `cdl data pull` has nowhere
            # to pull from, but the registry holds the items and labels, which data.ingest lays out again
            add("data", worst, "files missing from DVC's cache: " + ", ".join(f"{v} ({n})" for v, n in gone),
                "`cdl data pull` fetches them from the DVC remote" if remotes else
                f"no DVC remote has them: {REBUILD} (as {versions[-1].id} again where nothing changed since); "
                "an older version's data is gone unless a copy of the old .dvc/cache can be put back here")
        else:
            add("data", "ok", f"{len(versions)} dataset version(s), every file in DVC's cache; checked out: "
                f"{current or 'none'}")
        if remotes:
            from runtime.datasets import not_on_remote, remote_plugin_missing

            name, url = next(iter(remotes.items()))
            lacking = not_on_remote(ws, url)
            plugin = remote_plugin_missing(url)
            if plugin:  # `cdl data push` would fail, after the doctor had said to run it
                add("data", "fail", f"DVC remote {name} ({url}) needs the {plugin} package, which this Python lacks: "
                    "nothing can be pushed to it or pulled from it", f"`pip install {plugin}` into CDL Studio's "
                    "environment")
            elif lacking:
                add("data", "warn", f"DVC remote {name} ({url}) lacks dataset version(s) {', '.join(lacking)}: "
                    "their data has no copy outside this folder", "`cdl data push`")
            else:
                add("data", "ok", f"DVC remote {name}: {url}, every dataset version on it")
        else:
            add("data", "warn", "no DVC remote: the data has no copy outside this folder",
                "`cdl data remote add NAME URL`, then `cdl data push`")
        if current:
            _test_split(ws, current, add)
    # backup
    last = ws.store.get_state("last_backup")
    if last:
        when = datetime.fromisoformat(last["time"])
        days = (datetime.now(UTC) - when).days
        from runtime.domain.text import local_time

        # in local time, by the calendar: "yesterday" at 02:40 of a backup made at 23:10 (it said "2026-12-06 (0 day(s)
        # ago)", the date in UTC)
        n = (datetime.now().astimezone().date() - when.astimezone().date()).days
        ago = "today" if n <= 0 else "yesterday" if n == 1 else f"{n} days ago"
        add("backup", "warn" if days >= BACKUP_DAYS else "ok",
            f"last `cdl backup` {local_time(last['time'], seconds=False)} ({ago}) to {last['archive']}"
            + (" (this workspace was restored from it)" if last.get("restored_from") else ""),
            "`cdl backup OUT.tar.gz` (the registry, artifacts, scoring data and keys are only here)")
    elif ws.store.model_versions():
        add("backup", "warn", "never backed up: the registry, models, scoring data and keys exist only in this "
            "folder", "`cdl backup OUT.tar.gz`")
    # disk
    free = shutil.disk_usage(ws.root).free
    try:
        from runtime.gc import plan

        reclaim = sum(it["bytes"] for it in plan(ws))
    except CdlError:
        reclaim = 0
    add("disk", "warn" if free < LOW_DISK else "ok", f"{_human(free)} free where the workspace is"
        + (f"; `cdl gc` would give back {_human(reclaim)}" if reclaim else ""),
        "`cdl gc --dry-run` lists what can go" if free < LOW_DISK or reclaim > (1 << 30) else "")
    # devices
    from edge_agent.proto.address import DEFAULT_LISTEN
    from runtime.devices import cert_status, device_folder, health_warnings

    now = datetime.now(UTC)
    devices = ws.store.devices()
    for d in devices:
        cert = cert_status(ws, d)
        if cert and cert["expired"]:
            add("devices", "fail", f"{d.name}: its TLS certificate expired on {cert['expires'][:10]}",
                f"`cdl devices enroll {d.name} --address {d.address} --replace`, then copy its folder to the device")
        elif cert and cert["warn"]:
            add("devices", "warn", f"{d.name}: its TLS certificate expires on {cert['expires'][:10]} "
                f"({cert['days_left']:.0f} days)", f"`cdl devices enroll {d.name} --address {d.address} --replace`")
        seen = d.last_seen if d.last_seen is None or d.last_seen.tzinfo else d.last_seen.replace(tzinfo=UTC)
        if d.last_health and seen is not None:  # what it said when last asked (the doctor asks no device)
            for w in health_warnings(d.name, d.last_health):
                add("devices", "warn", f"{d.name} (as of {seen.strftime('%Y-%m-%d %H:%M')} UTC): {w}",
                    f"`cdl devices status {d.name}` asks it again")
        if seen is not None and (now - seen).days >= UNSEEN_DAYS:
            add("devices", "warn", f"{d.name}: not seen since {seen.date()} ({(now - seen).days} days)",
                "`cdl devices status` asks it; `cdl devices remove` if it is gone for good")
    default_port = DEFAULT_LISTEN.rpartition(":")[2]
    for d in devices:  # a folder enrolled before agent.json had `listen`: its agent listens on 8001 by default
        try:
            settings = json.loads((device_folder(ws, d) / "agent.json").read_text(encoding="utf-8-sig"))
        except (OSError, ValueError):
            continue  # the folder went to the device and was removed here: nothing to read
        port = d.address.rsplit(":", 1)[-1]
        if isinstance(settings, dict) and "listen" not in settings and port not in ("0", default_port):
            add("devices", "warn", f"{d.name}: its folder's agent.json does not say where to listen, so an agent "
                f"started without --listen listens on port {default_port}, and the workspace connects to {d.address}",
                f"`cdl devices enroll {d.name} --address {d.address} --replace`, then copy its folder to the "
                f"device; or start its agent with --listen 0.0.0.0:{port}")
    at: dict[str, list[str]] = {}
    for d in devices:
        if not d.address.endswith(":0"):  # port 0 (any free one) is no one's
            at.setdefault(d.address.strip(), []).append(d.name)
    for address, names_there in at.items():  # enrolled before enroll refused it: pushes reach one agent of them
        if len(names_there) > 1:
            add("devices", "fail", f"{', '.join(names_there)} are enrolled at one address, {address}: one agent "
                f"listens there, and calls meant for the others reach it (and fail on its token)",
                "`cdl devices remove` the ones that are gone, or enroll each at its own address with --replace")
    if devices:  # what the devices trust: gone, each call to them (CA) or each push (signing key) would fail
        from runtime.keys import key_files
        from runtime.pki import ca_files

        names = ", ".join(d.name for d in devices)
        for what, files in (("the workspace CA", ca_files(ws.root)), ("the bundle-signing key", key_files(ws.root)[:1])):
            gone = [str(f.relative_to(ws.root)) for f in files if not f.exists()]
            if gone:
                add("devices", "fail", f"{what} is gone ({', '.join(gone)}), and {names} trust(s) it",
                    f"restore {files[0].parent.relative_to(ws.root)}/ from a backup, or enroll each device again "
                    "with --replace")
    if devices and not any(c["area"] == "devices" for c in out):
        add("devices", "ok", f"{len(devices)} device(s), certificates valid")
    # engines
    framework = (cfg.steps.get("model.train") or {}).get("framework", "torch") if "model.train" in cfg.steps else None
    wanted = [("onnxruntime-gpu", "onnxruntime"), ("optuna", None), ("dvc", None)]
    if framework:
        wanted.insert(0, ("torch", None) if framework == "torch" else ("tensorflow", None))
    found = []
    for dist, alt in wanted:
        v = _version(dist) or (_version(alt) if alt else None)
        if v is None:
            add("engines", "fail", f"{dist} is not installed", "reinstall with `make run` (or pip install -e .[all])")
        else:
            found.append(f"{dist} {v}")
    from runtime.ml.onnx_tools import providers_that_run, tensorrt_status

    try:
        found.append("onnxruntime runs on: " + ", ".join(providers_that_run()))
    except ImportError:
        pass
    add("engines", "ok", "; ".join(found))

    ok, reason = tensorrt_status()
    add("engines", "ok", "TensorRT available" if ok else f"TensorRT unavailable: {reason} (deploy.compress skips "
        "its tensorrt variant)")
    return {"workspace": str(ws.root), "checks": out, "failed": any(c["status"] == "fail" for c in out)}
