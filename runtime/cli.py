"""The `cdl` command. Heavy libraries load inside the commands that need them, so `cdl --help` is fast."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any

import click

from runtime import __version__
from runtime.domain.errors import CdlError, NotFoundError, os_error_text
from runtime.domain.text import local_time

os.environ.setdefault("DVC_NO_ANALYTICS", "1")


def _find_workspace(start: Path) -> Path:
    start = start.resolve()
    for p in [start, *start.parents]:
        if (p / "cdl.yaml").exists():
            return p
    return start


def _ws(obj: dict[str, Any]):
    from runtime.workspace.workspace import Workspace

    root = obj.get("workspace") or os.environ.get("CDL_WORKSPACE") or _find_workspace(Path.cwd())
    return Workspace(Path(root))


def _ref_variant(ws: Any, ref: str) -> tuple[Any, str]:  # noqa: ANN401
    """'NAME:VERSION[:VARIANT]', where VERSION may be an alias (champion, challenger; NAME@ALIAS too) or latest ->
    (the model version, VARIANT or 'fp32'). `cdl package w1:champion` was refused ("expected NAME:VERSION"), so a
    script had to look the number up first."""
    parts = ref.replace("@", ":", 1).split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise CdlError(f"{ref!r}: expected NAME:VERSION[:VARIANT], e.g. bbc:3:static_int8 or bbc:champion")
    name, which = parts[0], parts[1]
    try:
        mv = ws.store.model_version(name, int(which) if which.isdigit() else None if which == "latest" else which)
    except NotFoundError as exc:
        if which.isdigit() or len(parts) == 3 or not ws.store.model_versions(name):
            raise
        if "did you mean" in str(exc):  # the store names the alias it was close to, and the aliases
            raise
        raise NotFoundError(f"{exc}; a variant comes third: {name}:champion:{which}") from None
    return mv, parts[2] if len(parts) == 3 else "fp32"


def _dump(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))


def _nothing_yet(message: str) -> None:
    """An empty listing says so, and what would fill it, on stderr: stdout stays empty for scripts (an empty
    listing printed nothing at all, which read as a command that had not worked)."""
    click.echo(message, err=True)


class _Group(click.Group):
    """Shows CdlError as a one-line message (exit 2) instead of a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CdlError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except BrokenPipeError:  # `cdl experiments show | head`: the reader had what it wanted; say nothing, as git
            # does (it printed "error: broken pipe"); stdout goes to /dev/null so that the exit's flush cannot fail
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(128 + 13)  # SIGPIPE's status, as a shell reports a writer it killed
        except OSError as exc:  # a path that cannot be written or read (`-o /no/such/dir/x`, a full disk, no
            # permission): one line naming it, as a CdlError, where the traceback of os.mkdir came through
            click.echo(f"error: {os_error_text(exc)}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option("-w", "--workspace", type=click.Path(file_okay=False, path_type=Path),
              help="workspace folder (default: the one containing the current directory)")
@click.version_option(__version__, "--version", prog_name="cdl", message="%(prog)s %(version)s")
@click.pass_context
def cli(ctx: click.Context, workspace: Path | None) -> None:
    """CDL Studio: continuous deep learning from data to edge devices."""
    ctx.ensure_object(dict)
    ctx.obj["workspace"] = workspace


@cli.command()
@click.argument("path", type=click.Path(file_okay=False, path_type=Path))
@click.option("--template", "-t", type=click.Choice(["text-classification", "image-classification"]),
              required=True, help="the use case: its steps' defaults, model templates and data it takes")
@click.option("--name", help="project name (default: the folder's name)")
def init(path: Path, template: str, name: str | None) -> None:
    """Create a workspace (git + DVC repository with cdl.yaml and a registry)."""
    import shlex

    from runtime.workspace.workspace import Workspace

    held = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir()) if path.is_dir() else []
    ws = Workspace.init(path, template, name)
    click.echo(f"created {ws.root} from template {template} (model name {ws.config().name})")
    if held:  # a folder of photos made a workspace: the photos are not its data until imported
        named = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        folders = [h for h in held if h.endswith("/")]
        hint = (f"; to use {folders[0]} as data: `cdl -w {shlex.quote(str(path))} data import "
                f"{shlex.quote(str(path / folders[0].rstrip('/')))}`" if folders else "")
        click.echo(f"note: the folder already held {named}: they stay as they were, neither data of the workspace "
                   f"nor in its git commits{hint}", err=True)
    at = shlex.quote(str(path))
    source = "news.zip (class folders of .txt), a CSV of text and label, a Label Studio export" \
        if template == "text-classification" else "a folder of class folders of images, Fashion-MNIST's idx .gz files " \
        "with --class-names fashion-mnist"
    click.echo(f"next: `cdl -w {at} data import SOURCE` ({source}), then `cdl -w {at} run`; or `cdl studio {at}`",
               err=True)
    click.echo(f"a model of your own: {shlex.quote(str(path / 'src' / 'README.md'))} says how", err=True)
    outer = _outer_git_repository(ws.root)
    if outer is not None:  # a monorepo's folder: `git add` there would take the workspace as an embedded repository
        rel = ws.root.relative_to(outer)
        click.echo(f"note: {ws.root} is inside the git repository {outer}, and is a git repository of its own (its "
                   f"data versions are its commits): add {rel.as_posix()}/ to {outer}'s .gitignore (or make it a "
                   "submodule there), so that `git add` there does not take it as an embedded repository", err=True)


def _outer_git_repository(root: Path) -> Path | None:
    """The git work tree that holds root's parent folder, if any."""
    import subprocess

    try:
        out = subprocess.run(["git", "-C", str(root.parent), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(out.stdout.strip()).resolve() if out.returncode == 0 and out.stdout.strip() else None


def _login_name(fallback: str) -> str:
    """The login name, as the studio's Labeler and Reviewer fields take it (getpass: LOGNAME, USER, then the
    password database): $USER alone, unset under sudo -i, in containers and in CI jobs, made the same person
    "labeler" in the CLI and "root" in the studio."""
    import getpass

    try:
        return getpass.getuser() or fallback
    except (KeyError, OSError):  # no such user id in the password database (a container's arbitrary uid)
        return fallback


def _parse_sets(sets: tuple[str, ...], cfg=None) -> dict[str, dict[str, Any]]:  # noqa: ANN001
    """--set STEP.PARAM=VALUE (VALUE in YAML); with `cfg`, also STEP.PARAM.KEY...=VALUE, one key inside a
    parameter that is a mapping (model.tune.search_space.lr.high=0.01), the rest of it as cdl.yaml says. That was
    taken for a step named "model.tune.search_space.lr" ("not a step of this pipeline")."""
    import copy

    import yaml

    out: dict[str, dict[str, Any]] = {}
    for s in sets:
        if "=" not in s:
            raise CdlError(f"--set {s!r}: expected STEP.PARAM=VALUE")
        key, value = s.split("=", 1)
        step, _, param = key.rpartition(".")
        inside: list[str] = []
        if cfg is not None and step not in cfg.steps:
            known = next((k for k in sorted(cfg.steps, key=len, reverse=True) if key.startswith(k + ".")), None)
            if known is not None and key.count(".") > known.count(".") + 1:
                step, (param, *inside) = known, key[len(known) + 1:].split(".")
        if not step or not param or not all(inside):
            raise CdlError(f"--set {s!r}: expected STEP.PARAM=VALUE, e.g. data.split.seed=7")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:  # it raised PyYAML's traceback
            from runtime.workspace.config import yaml_problem

            raise CdlError(f"--set {s!r}: the value is not valid YAML ({yaml_problem(exc)}); a text with braces, "
                           "brackets or a colon goes in quotes: --set 'STEP.PARAM=\"...\"'") from None
        if inside:
            base = out.get(step, {}).get(param)
            if base is None:
                try:
                    base = cfg.params(step).get(param)
                except CdlError:
                    base = (cfg.steps.get(step) or {}).get(param)
            base = copy.deepcopy(base)
            node = base
            for depth, k in enumerate(inside):
                if not isinstance(node, dict):
                    where = ".".join([param, *inside[:depth]])
                    raise CdlError(f"--set {key}: {step}.{where} is {type(node).__name__} {node!r}, not a mapping "
                                   f"with keys; set it whole: --set {step}.{where}=VALUE")
                if depth == len(inside) - 1:
                    node[k] = parsed
                else:
                    node = node.setdefault(k, {})
            parsed = base
        out.setdefault(step, {})[param] = parsed
    return out


def _run(obj: dict[str, Any], steps: list[str] | None, until: str | None, force: bool,
         sets: tuple[str, ...], as_json: bool, junit: Path | None, config=None,  # noqa: ANN001
         save: bool = False) -> None:
    from runtime.jobs import Runner
    from runtime.progress import ProgressPrinter

    ws = _ws(obj)
    runner = Runner(ws)
    runner.bus.subscribe(ProgressPrinter())
    overrides = _parse_sets(sets, config or (ws.config() if sets else None))
    if save and not overrides:
        raise CdlError("--save keeps the --set values in cdl.yaml: give --set STEP.PARAM=VALUE")
    if overrides:  # a value for a step this run does not run did nothing, without a word
        cfg = config or ws.config()
        plan = runner.plan(cfg, steps, until)
        idle = [s for s in overrides if s in cfg.steps and s not in plan]
        if idle:
            first = idle[0]
            runs = plan[0] if len(plan) == 1 else f"{plan[0]} to {plan[-1]}, {len(plan)} steps"
            raise CdlError(f"--set {first}.{next(iter(overrides[first]))}: {first} is not in this run (it runs "
                           f"{runs}): run --until {first}, or drop the value")
    with _cancel_on_signals(runner.cancel) as stopped_by:
        result = runner.run(steps=steps, until=until, force=force, overrides=overrides, config=config)
    if overrides:
        _after_sets(ws, result, overrides, save)
    if junit:
        from runtime.reporting import write_junit

        write_junit(result, junit)
    if as_json:
        from runtime.reporting import job_json

        _dump(job_json(result))
    if result.status == "cancelled" and stopped_by:
        sys.exit(128 + stopped_by[0])
    if not result.ok:
        sys.exit(1)


def _after_sets(ws, result, overrides: dict[str, dict[str, Any]], save: bool) -> None:  # noqa: ANN001
    """--set values are for this run only, as `mlflow run -P` is: say what that means for the next run (the step
    is stale against cdl.yaml and runs again with its values), or, with --save and a run that succeeded, write
    them into cdl.yaml (as `dvc exp apply` keeps an experiment's parameters), so that the steps stay up to date.
    A run that stopped to wait for a person (model.review) succeeded as far as it could go, and saves too: it said
    "the run did not succeed (failed)", and after the approval the next `cdl run` tuned and trained again with
    cdl.yaml's values, another model than the one approved. A run that failed keeps the values of the steps that
    ran with them and succeeded (a later step failed), not of those that failed or did not run."""
    from runtime.domain.text import changes_text
    from runtime.params import set_step_params

    commits: list[str] = []

    def saved(values: dict[str, dict[str, Any]]) -> str:  # write them; what changed, as the message says it
        said = []
        for step, vs in values.items():
            done = set_step_params(ws, step, vs)
            said += [changes_text(done["changed"], prefix=f"{step}.")] if done["changed"] else []
            commits.extend([done["commit"]] if done.get("commit") else [])
        return "; ".join(said) if said else "(it had these values already)"

    def saved_in() -> str:  # "saved in cdl.yaml and committed (0123456789)"
        return "saved in cdl.yaml" + (f" and committed ({commits[-1][:10]})" if commits else "")

    cfg = ws.config()
    if save and (result.ok or result.waiting_at):  # a run that stops at a review did all it could: keep the values
        what = saved(overrides)
        click.echo(f"{saved_in()}: " + what
                   + (f" (the run waits at {result.waiting_at}; the next `cdl run` goes on with them)"
                      if result.waiting_at else ""), err=True)
        return
    differ = [f"{path} {a!r} (this run {b!r})" for step, values in overrides.items() for k, v in values.items()
              for path, a, b in _differences(f"{step}.{k}", cfg.params(step).get(k), v)]
    if not differ:
        return
    ran = {o.step for o in result.steps if o.status == "done"}
    what = ", ".join(s for s in overrides if s in ran)
    if save:
        # the values of the steps that ran with them and succeeded are kept, where a later step failed: the data
        # fix that data.validate's hint gives (`--set data.import.relabel=… --save`) was lost to model.evaluate's
        # gate, the model being weak for the very reason the data was being fixed; a step that failed, was
        # cancelled or did not run keeps cdl.yaml's values
        fine = {o.step for o in result.steps if o.status in ("done", "skipped", "drifted")}
        failed = next((o for o in result.steps if o.status in ("failed", "cancelled")), None)
        where = f"{failed.step} {failed.status}" if failed is not None else result.status
        kept = {step: values for step, values in overrides.items() if step in fine}
        said = saved(kept) if kept else ""
        cfg = ws.config()
        left = [f"{path} {a!r} (this run {b!r})" for step, values in overrides.items() if step not in kept
                for k, v in values.items() for path, a, b in _differences(f"{step}.{k}", cfg.params(step).get(k), v)]
        if kept:
            click.echo(f"{saved_in()}: {said}, for "
                       f"{', '.join(kept)}, which ran with them and succeeded ({where} after)"
                       + (f"; not saved: cdl.yaml still says {'; '.join(left)}" if left else ""), err=True)
        else:
            click.echo(f"not saved in cdl.yaml: the run did not succeed ({where}); cdl.yaml still says "
                       + "; ".join(left), err=True)
        return
    if not what:  # nothing finished with them: nothing to run again
        return
    click.echo(f"--set was for this run only: cdl.yaml still says {'; '.join(differ)}, so the next `cdl run` "
               f"runs again what ran with them ({what}); --save keeps them in cdl.yaml", err=True)


def _differences(path: str, a: Any, b: Any) -> list[tuple[str, Any, Any]]:  # noqa: ANN401
    """Where b differs from a: (dotted path, a's value, b's), down into mappings both are, so that a --set of one
    key of the search space names that key, not the whole space twice."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in [*a, *(k for k in b if k not in a)] for d in _differences(f"{path}.{k}", a.get(k), b.get(k))]
    return [] if a == b else [(path, a, b)]


@contextlib.contextmanager
def _cancel_on_signals(cancel):  # noqa: ANN001, ANN202
    """Ctrl-C (SIGINT) or a CI's SIGTERM cancels the run as the studio's Cancel does: the running step stops at its
    next checkpoint (an epoch, a trial, a variant) and is recorded cancelled, the JSON and JUnit reports are still
    written, and the exit status is 128 + the signal. A second Ctrl-C aborts at once. (Before, Ctrl-C aborted
    mid-step: no report, and the step stayed 'running' until another process noticed.)"""
    import signal

    got: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield got
        return

    def handler(signum, _frame) -> None:  # noqa: ANN001
        if got and signum == signal.SIGINT:
            raise KeyboardInterrupt
        got.append(signum)
        cancel.set()
        click.echo(f"{signal.Signals(signum).name}: cancelling; the running step stops at its next checkpoint"
                   + (" (Ctrl-C again to abort now)" if signum == signal.SIGINT else ""), err=True)

    old = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in old:
        if old[sig] is not signal.SIG_IGN:  # a run started in the background ignores Ctrl-C: it keeps doing so
            signal.signal(sig, handler)
    try:
        yield got
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


@cli.command()
@click.argument("step", required=False)
@click.option("--until", help="run every step up to and including this one (skipping what is up to date)")
@click.option("--force", is_flag=True, help="re-run steps even if they are up to date")
@click.option("--set", "sets", multiple=True, help="parameter override STEP.PARAM=VALUE (repeatable), for this run "
              "only")
@click.option("--save", is_flag=True, help="keep the --set values in cdl.yaml when the run succeeds")
@click.option("--json", "as_json", is_flag=True, help="print the job's result as JSON")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="write a JUnit XML report")
@click.pass_obj
def run(obj: dict[str, Any], step: str | None, until: str | None, force: bool, sets: tuple[str, ...], save: bool,
        as_json: bool, junit: Path | None) -> None:
    """Run one STEP, everything --until a step, or (with neither) the whole pipeline."""
    if step and until:
        raise CdlError("give either STEP or --until, not both")
    _run(obj, [step] if step else None, until, force, sets, as_json, junit, save=save)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def status(obj: dict[str, Any], as_json: bool) -> None:
    """Each step's status: never-run, running, done, failed, cancelled, waiting (for a review), stale (with the reason) or drifted."""
    from runtime.jobs import Runner

    ws = _ws(obj)
    states = Runner(ws).statuses()
    if as_json:
        _dump({"workspace": str(ws.root), "dataset_version": ws.current_version(),
               "steps": [{"id": s.id, "status": s.status.value, "reason": s.reason, "role": s.spec.role.value,
                          "pipeline": s.spec.pipeline} for s in states]})
        return
    for s in states:
        extra = f"  ({s.reason})" if s.reason else ""
        click.echo(f"{s.id:<18} {s.status.value:<10} {s.spec.role.value:<18}{extra}")


@cli.command()
@click.option("--dry-run", is_flag=True, help="list what would be removed, remove nothing")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def gc(obj: dict[str, Any], dry_run: bool, as_json: bool) -> None:
    """Remove cached tensors of other dataset versions (fitted again when needed), artifacts nothing refers to
    and leftovers of killed writes; keeps every registered model, variant, bundle and deployment."""
    from runtime.gc import collect, human, summary_line

    ws = _ws(obj)
    result = collect(ws, dry_run=dry_run, log=None if as_json else click.echo)
    if as_json:
        _dump(result)
        return
    if dry_run:
        for it in result["removed"]:
            click.echo(f"would remove {it['path']} ({human(it['bytes'])}): {it['reason']}")
    click.echo(summary_line(result))


@cli.command("backup")
@click.argument("out", type=click.Path(path_type=Path))
@click.option("--with-data", is_flag=True, help="also DVC's cache and data/dataset (default: they are on the DVC "
              "remote, `cdl data push`)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def backup_cmd(obj: dict[str, Any], out: Path, with_data: bool, as_json: bool) -> None:
    """Write the workspace (registry, artifacts, scoring data, git, cdl.yaml, keys) into one tar.gz."""
    from runtime.backup import backup
    from runtime.gc import human

    ws = _ws(obj)
    result = backup(ws, out, with_data=with_data, log=None if as_json else click.echo)
    if as_json:
        _dump(result)
        return
    click.echo(f"wrote {result['archive']}: {result['files']} files, {human(result['bytes'])} "
               f"({human(result['archive_bytes'])} compressed)")
    for note in result["notes"]:
        click.echo(f"note: {note}")
    if not with_data and not result["data_not_kept"]:
        click.echo("the data is not in it: the DVC remote holds every dataset version (`cdl data push`)")


@cli.command("restore")
@click.argument("archive", type=click.Path(path_type=Path))
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
def restore_cmd(archive: Path, dest: Path, as_json: bool) -> None:
    """Unpack a `cdl backup` ARCHIVE into the new folder DEST (every file checked before DEST appears)."""
    from runtime.backup import restore

    result = restore(archive, dest, log=None if as_json else click.echo)
    if as_json:
        _dump(result)
        return
    click.echo(f"restored {result['workspace']} ({result['files']} files, backed up {local_time(result['created'])}): "
               f"{result['dataset_versions']} dataset version(s), {result['model_versions']} model version(s)")
    if result["next"]:
        click.echo(f"next: {result['next']}")


@cli.command("runs")
@click.argument("step")
@click.option("--limit", type=click.IntRange(1, 10000), default=20, show_default=True, help="the newest N runs")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def runs_cmd(obj: dict[str, Any], step: str, limit: int, as_json: bool) -> None:
    """A step's runs, newest first: when, how long, how it ended, what it said, which parameters changed."""
    from runtime.jobs.runner import step_history

    doc = step_history(_ws(obj), step, limit)
    if as_json:
        _dump(doc)
        return
    if not doc["runs"]:
        click.echo(f"{step} has not run yet")
        return
    for r in doc["runs"]:
        took = "" if r["seconds"] is None else f"{r['seconds']:.1f}s"
        said = r["error"] if r["status"] in ("failed", "cancelled", "waiting") else r["message"]
        when = local_time(r["started"])
        click.echo(f"#{r['id']:<5} {when}  {r['status']:<8} {took:>8}  {said}")
        if r["changed"]:
            click.echo(f"       changed: {r['changed']}")
        if r is doc["runs"][0] and r.get("traceback"):  # the newest run's, where it failed with one (--json: each's)
            click.echo("\n".join(f"       {line}" for line in r["traceback"].splitlines()))


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def doctor(obj: dict[str, Any], as_json: bool) -> None:
    """What is wrong with this workspace and machine, each finding with what to do (exit 1 when one fails):
    cdl.yaml and the registry, uncommitted code, data in DVC's cache and on a remote, disk, device certificates,
    installed engines."""
    from runtime.doctor import diagnose

    doc = diagnose(_ws(obj))
    if as_json:
        _dump(doc)
    else:
        marks = {"ok": "✓", "warn": "!", "fail": "✗"}
        for c in doc["checks"]:
            click.echo(f"{marks[c['status']]} {c['area']:<9} {c['detail']}")
            if c["hint"] and c["status"] != "ok":
                click.echo(f"  {'':<9} → {c['hint']}")
    if doc["failed"]:
        sys.exit(1)


# -- data ---------------------------------------------------------------------------------------------------


@cli.group()
def data() -> None:
    """Data sources, versions, validation report, diff and checkout."""


@data.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(["text-folder", "image-folder", "idx", "csv", "jsonl", "parquet", "label-studio"]),
              help="source kind (default: detected)")
@click.option("--class-names", help="idx, and csv, jsonl or parquet with class numbers for labels: comma-separated class "
              "names (0 first), or a preset (fashion-mnist, mnist)")
@click.option("--text-column", help="csv, jsonl, parquet: the text column (field)")
@click.option("--label-column", help="csv, jsonl, parquet: the label column (field)")
@click.option("--unlabeled", is_flag=True, help="csv, jsonl, parquet: the file has no label column (field); a folder or "
              "zip: every file is an item to label, its folder no class (a flat folder is taken so anyway)")
@click.option("--media-root", type=click.Path(path_type=Path), help="label-studio: folder of the images")
@click.option("--encoding", help="csv: the file's text encoding where it is not UTF-8 (cp1252: Excel on Windows)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def data_import(obj: dict[str, Any], source: Path, kind: str | None, class_names: str | None,
                text_column: str | None, label_column: str | None, unlabeled: bool, media_root: Path | None,
                encoding: str | None, as_json: bool) -> None:
    """Add SOURCE to the pipeline and import it (a transaction: all or nothing)."""
    from runtime.api import add_source

    options: dict[str, Any] = {}
    if kind:
        options["kind"] = kind
    if class_names:
        options["class_names"] = class_names if "," not in class_names else [c.strip() for c in class_names.split(",")]
    if text_column:
        options["text_column"] = text_column
    if label_column:
        options["label_column"] = label_column
    if unlabeled:
        options["unlabeled"] = True
    if media_root:
        options["media_root"] = str(media_root.resolve())
    if encoding:
        options["encoding"] = encoding
    from runtime.progress import ProgressPrinter

    ws = _ws(obj)
    cancel = threading.Event()
    # Ctrl-C stops the reading of a source's files at once, nothing imported (it aborted with a traceback)
    with _cancel_on_signals(cancel) as stopped_by:
        try:
            result = add_source(ws, source, options, subscriber=ProgressPrinter(), cancel=cancel)
        except CdlError as exc:
            if not stopped_by:
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(128 + stopped_by[0])
    if as_json:
        from runtime.reporting import job_json

        _dump(job_json(result))
    if not result.ok:
        sys.exit(1)


@data.command("remove")
@click.argument("source")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def data_remove(obj: dict[str, Any], source: str, as_json: bool) -> None:
    """Take SOURCE out of the pipeline: out of cdl.yaml, its items out of the workspace (labels people gave them
    stay, and come back if it is imported again); the next run makes a dataset version without them."""
    from runtime.api import remove_source
    from runtime.progress import ProgressPrinter

    doc = remove_source(_ws(obj), source, subscriber=None if as_json else ProgressPrinter())
    if as_json:
        _dump(doc)
        return
    click.echo(f"removed {doc['source']}: {doc['items_removed']} item(s) left the workspace ({doc['items']} remain); "
               "labels people gave them stay, and come back if it is imported again; "
               + ("the next `cdl run` makes a dataset version without them" if doc["items"] else
                  "no source is left: `cdl data import SOURCE` adds one"))


@data.command("versions")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def data_versions(obj: dict[str, Any], as_json: bool) -> None:
    """Every dataset version, oldest first."""
    from runtime.datasets import versions_json

    doc = versions_json(_ws(obj))
    if as_json:
        _dump(doc)
        return
    if not doc["versions"]:
        _nothing_yet("no dataset versions yet: data.version makes one (`cdl run --until data.version`)")
    rows = []
    for v in doc["versions"]:
        unlabeled = (v["classes"] or {}).get("(unlabeled)", 0)
        # how many are labeled: a version made by labeling alone has the counts of the one before it, and read the same
        rows.append((v, f"{v['items']} items ({', '.join(f'{k} {n}' for k, n in v['splits'].items())}"
                     f"{f'; {unlabeled} unlabeled' if unlabeled else ''})"))
    wide = max((len(r[1]) for r in rows), default=0)  # the columns after it line up
    for v, counts in rows:
        mark = "*" if v["checked_out"] else " "
        on = {None: "", True: "  on the remote", False: "  NOT ON THE REMOTE (`cdl data push`)"}[v["on_remote"]]
        click.echo(f"{mark} {v['id']:<5} {counts:<{wide}}  dvc {v['dvc_hash'][:12]}  "
                   f"git {str(v['git_commit'])[:10]}  {local_time(v['created'])}{on}")


@data.command("export")
@click.argument("dest", type=click.Path(path_type=Path))
@click.option("--version", "version", help="dataset version (default: the checked-out one)")
@click.option("--split", type=click.Choice(["all", "train", "test"]), default="all", show_default=True,
              help="the items of this split only")
@click.option("--with-quarantined", is_flag=True, help="also the items data.validate quarantined")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def data_export(obj: dict[str, Any], dest: Path, version: str | None, split: str, with_quarantined: bool,
                as_json: bool) -> None:
    """Write a dataset version's items and labels to DEST: a .csv, .tsv or .jsonl file (texts), a .parquet file
    (texts, or images as Hugging Face's Image feature), or a new folder of SPLIT/CLASS/FILE. What `cdl data import`
    reads back."""
    from runtime.export import export_version

    def progress(done: int, total: int) -> None:
        if not as_json:
            click.echo(f"exporting: {done} of {total} item(s)", err=True)  # it printed "2000/10007" and no word

    doc = export_version(_ws(obj), dest, version, split, with_quarantined, progress)
    if as_json:
        _dump(doc)
        return
    splits = ", ".join(f"{k} {n}" for k, n in doc["splits"].items())
    click.echo(f"wrote {doc['items']} item(s) of {doc['version']} ({splits}; {doc['labeled']} labeled) to "
               f"{doc['path']} ({doc['format']})")
    if doc["left_out_quarantined"]:
        click.echo(f"left out {doc['left_out_quarantined']} quarantined item(s) (--with-quarantined takes them)")
    for label, folder in doc["renamed_classes"].items():
        click.echo(f"class {label!r} is the folder {folder!r}: a folder's name cannot hold its characters")


@data.command("report")
@click.option("--version", "version", help="dataset version (default: the checked-out one)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def data_report(obj: dict[str, Any], version: str | None, as_json: bool) -> None:
    """The validation report: quarantined items (rule and reason) and cleaned items."""
    from runtime.datasets import alike_text, checked_text, relabel_hint, report_json

    doc = report_json(_ws(obj), version)
    if as_json:
        _dump(doc)
        return
    if doc["version"] is None:
        _nothing_yet("no dataset version yet, so no validation report: data.validate reports on the version "
                     "data.version makes (`cdl run --until data.validate`)")
        return
    click.echo(f"version {doc['version']}: {len(doc['quarantined'])} quarantined, {len(doc['cleaned'])} cleaned")
    click.echo(f"  {checked_text(doc)}")
    for group in doc["similar_labels"]:
        click.echo(f"  labels that look alike: {alike_text(group)}: "
                   "one class spelt two ways?")
    if doc["similar_labels"]:
        click.echo(f"  data.import's relabel makes each one: {relabel_hint(doc['similar_labels'])}, or the data "
                   "panel's Merge spellings…")
    for q in doc["quarantined"]:
        click.echo(f"  quarantined {q['source']}: {q['rule']}: {q['reason']}")
    for c in doc["cleaned"]:
        click.echo(f"  cleaned     {c['source']}: {c['action']}")


@data.command("diff")
@click.argument("v1")
@click.argument("v2")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def data_diff(obj: dict[str, Any], v1: str, v2: str, as_json: bool) -> None:
    """Items added, removed and changed, label changes and class balance between two versions."""
    from runtime.datasets import class_order, diff_json, named_order

    ws = _ws(obj)
    doc = diff_json(ws, v1, v2)
    if as_json:
        _dump(doc)
        return
    click.echo(f"{doc['from']} -> {doc['to']}: +{doc['added']} added, -{doc['removed']} removed, "
               f"{doc['changed']} changed, {doc['label_changes']} label changes, {doc['split_changes']} moved between "
               "train and test")  # the panels said it; the CLI left it out
    # in the model's class order (Fashion-MNIST's T-shirt/top first), as the labeling keys and the review's tables
    # list them; it was alphabetical
    classes = class_order(named_order(ws), set(doc["classes_before"]) | set(doc["classes_after"]))
    for c in classes:
        click.echo(f"  {c:<20} {doc['classes_before'].get(c, 0):>7} -> {doc['classes_after'].get(c, 0):>7}")


@data.command("checkout")
@click.argument("version")
@click.option("--json", "as_json", is_flag=True, help='{"version", "items", "dvc_hash"}')
@click.pass_obj
def data_checkout(obj: dict[str, Any], version: str, as_json: bool) -> None:
    """Restore data/dataset to VERSION (DVC checkout)."""
    from runtime.datasets import checkout

    doc = checkout(_ws(obj), version)
    if as_json:
        _dump(doc)
        return
    click.echo(f"checked out {doc['version']} ({doc['items']} items)")


@data.group("remote")
def data_remote() -> None:
    """DVC remotes that keep the dataset versions (`cdl data push` and `pull`)."""


@data_remote.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--no-default", is_flag=True, help="add it without making it the default remote")
@click.option("--json", "as_json", is_flag=True, help='{"remote", "url", "default", "replaced_default"}')
@click.pass_obj
def data_remote_add(obj: dict[str, Any], name: str, url: str, no_default: bool, as_json: bool) -> None:
    """Add a DVC remote: a folder (a mounted backup disk), s3://, ssh://, ... (DVC's own remotes)."""
    from runtime.datasets import remote_add

    doc = remote_add(_ws(obj), name, url, not no_default)
    if as_json:
        _dump(doc)
        return
    click.echo(f"remote {doc['remote']}: {doc['url']}{' (default)' if doc['default'] else ''}")
    if doc.get("missing_plugin"):
        click.echo(f"warning: {doc['url'].split('://')[0]}:// remotes need the {doc['missing_plugin']} package, which "
                   f"this Python lacks: `pip install {doc['missing_plugin']}` before `cdl data push`", err=True)
    if doc["replaced_default"]:
        click.echo(f"it is the default in place of {doc['replaced_default']}: `cdl data push` sends the dataset "
                   f"versions to it from now on (--no-default adds a remote and keeps the default)", err=True)


@data_remote.command("remove")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help='{"remote", "url", "was_default", "default"}')
@click.pass_obj
def data_remote_remove(obj: dict[str, Any], name: str, as_json: bool) -> None:
    """Forget a DVC remote (a wrong URL, a disk that is gone); what it holds stays there."""
    from runtime.datasets import remote_remove

    doc = remote_remove(_ws(obj), name)
    if as_json:
        _dump(doc)
        return
    click.echo(f"removed remote {doc['remote']} ({doc['url']}); the data on it stays there")
    if doc["was_default"]:
        click.echo(f"the default remote is now {doc['default']}" if doc["default"] else
                   "no DVC remote is left: `cdl data remote add NAME URL` adds one", err=True)


@data_remote.command("list")
@click.option("--json", "as_json", is_flag=True, help='{"remotes": [{"name", "url", "default"}]}')
@click.pass_obj
def data_remote_list(obj: dict[str, Any], as_json: bool) -> None:
    """The DVC remotes, the default one first."""
    remotes = _ws(obj).dvc.remotes()
    if as_json:
        _dump({"remotes": [{"name": n, "url": u, "default": i == 0} for i, (n, u) in enumerate(remotes.items())]})
        return
    if not remotes:
        _nothing_yet("no DVC remotes: `cdl data remote add NAME URL` adds one (a folder, s3://, ssh://, ...)")
    for i, (name, url) in enumerate(remotes.items()):
        click.echo(f"{name:<16} {url}{'  (default)' if i == 0 else ''}")


@data.command("push")
@click.option("--remote", help="a remote's name (default: the default remote)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def data_push(obj: dict[str, Any], remote: str | None, as_json: bool) -> None:
    """Back up every dataset version's data on the DVC remote (old versions too, which `dvc push` alone misses)."""
    from runtime.datasets import push

    doc = push(_ws(obj), remote)
    if as_json:
        _dump(doc)
        return
    for vid, n in doc["pushed"].items():
        click.echo(f"{vid}: {n} object(s) pushed" if n else f"{vid}: already on {doc['remote']}")
    for vid in doc["not_in_cache"]:
        click.echo(f"{vid}: not in the cache here, not pushed")


@data.command("pull")
@click.option("--remote", help="a remote's name (default: the default remote)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def data_pull(obj: dict[str, Any], remote: str | None, as_json: bool) -> None:
    """Fetch every dataset version's data from the DVC remote into the cache; `cdl data checkout V` then works for
    any of them. Exit 1 when a version stays incomplete."""
    from runtime.datasets import pull

    doc = pull(_ws(obj), remote)
    if as_json:
        _dump(doc)
    else:
        for vid, n in doc["fetched"].items():
            click.echo(f"{vid}: " + ("INCOMPLETE: the remote lacks some of its data" if vid in doc["incomplete"] else
                                     f"{n} object(s) fetched" if n else "complete here"))
    if doc["incomplete"]:
        sys.exit(1)


# -- labels -------------------------------------------------------------------------------------------------


@cli.group()
def labels() -> None:
    """The labeling queue and Label Studio import/export."""


@labels.command("import")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--skip-unmatched", is_flag=True, help="ignore tasks that match no item instead of failing")
@click.option("--media-root", type=click.Path(file_okay=False, path_type=Path),
              help="the folder of an image project's files (default: the export's folder): tasks match the items "
              "of the same content")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def labels_import(obj: dict[str, Any], file: Path, skip_unmatched: bool, media_root: Path | None,
                  as_json: bool) -> None:
    """Import labels from a Label Studio JSON or JSON_MIN export; or, from a project's labeling config (.xml), its
    classes (cdl.yaml's labeling section)."""
    from runtime.labeling import import_label_config, import_label_studio

    if file.suffix.lower() == ".xml":
        doc = import_label_config(_ws(obj), file)
        if as_json:
            _dump(doc)
            return
        click.echo(f"{file.name}: {len(doc['classes'])} classes, now this workspace's (cdl.yaml's labeling.classes, "
                   f"in this order): {', '.join(doc['classes'])}; labels go under the control {doc['from_name']!r} "
                   f"of {doc['to_name']!r}, as the project's exports name them")
        if doc["before"] and doc["before"] != doc["classes"]:
            click.echo(f"cdl.yaml had: {', '.join(doc['before'])}")
        return
    def progress(done: int, total: int) -> None:  # an export of 70 000 images reads for seconds
        if not as_json:
            click.echo(f"importing: {done} of {total} task(s)", err=True)

    doc = import_label_studio(_ws(obj), file, skip_unmatched, media_root, progress)
    if as_json:
        _dump(doc)
    else:
        already = f"; {doc['already_here']} already here (the same labeler's same label)" if doc["already_here"] else ""
        relabeled = f"; {doc['relabeled']} read as data.import's relabel names them" if doc.get("relabeled") else ""
        unmatched = f"; {doc['unmatched']} matched no item here (--skip-unmatched)" if doc.get("unmatched") else ""
        click.echo(f"{doc['labels']} label(s) from {doc['tasks']} task(s); {doc['skipped_tasks']} skipped, "
                   f"{doc['unannotated_tasks']} unannotated, {doc['conflicts']} conflict(s){already}{relabeled}"
                   f"{unmatched}")


@labels.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--config", type=click.Path(dir_okay=False, path_type=Path),
              help="also write the Label Studio labeling config (XML) a project needs to import FILE")
@click.option("--filter", "filter_", help="only these items, as `labels next --filter` takes them: unlabeled, "
              "conflicts, labeled, all, proposal:ID (a retrain proposal's samples left to label)")
@click.option("--json", "as_json", is_flag=True, help='{"tasks", "annotations"[, "config", "classes"]}')
@click.pass_obj
def labels_export(obj: dict[str, Any], file: Path, config: Path | None, filter_: str | None, as_json: bool) -> None:
    """Export items and labels as a Label Studio JSON export."""
    from runtime.labeling import export_label_studio

    def progress(done: int, total: int) -> None:  # Fashion-MNIST's 70 000 images took 14 s without a word
        if not as_json:
            click.echo(f"exporting: {done} of {total} item(s)", err=True)

    doc = export_label_studio(_ws(obj), file, config=config, filter=filter_, progress=progress)
    if as_json:
        _dump(doc)
        return
    click.echo(f"wrote {doc['tasks']} task(s), {doc['annotations']} annotation(s) to {file}")
    if not doc["tasks"] and filter_:  # an empty file, and why (a done proposal's samples are not left to label)
        click.echo(f"no item is left under --filter {filter_}{_proposal_state(_ws(obj), filter_)}", err=True)
    if doc["left_out_undecodable"]:
        bad = doc["left_out_undecodable"]
        click.echo(f"left out {len(bad)} item(s) that cannot be decoded as images: {', '.join(bad[:5])}"
                   + (" …" if len(bad) > 5 else "") + " (data.validate quarantines them)", err=True)
    if config is not None:
        click.echo(f"wrote the labeling config ({len(doc['classes'])} classes) to {config}: paste it into the Label "
                   "Studio project's Settings > Labeling Interface > Code before importing the tasks")


def _proposal_state(ws: Any, filter_: str | None) -> str:  # noqa: ANN401 - a Workspace
    """": proposal p1 is done" for a proposal:ID filter with nothing left, what comes next for it as the monitoring
    panel says; "" for other filters."""
    if not (filter_ or "").startswith("proposal:"):
        return ""
    from runtime.proposals import proposal

    p = proposal(ws, filter_.split(":", 1)[1])
    return (f": proposal {p['id']} is {p['status']}" if p["status"] != "open" else
            f": proposal {p['id']}'s {p['samples']} sample(s) are labeled; `cdl loop` trains on them")


def _queue(obj: dict[str, Any], labeler: str):
    from runtime.labeling import LabelQueue

    return LabelQueue(_ws(obj), labeler)


@labels.command("next")
@click.option("--filter", "filter_", default="unlabeled", help="unlabeled, conflicts, all, labeled, proposal:ID")
@click.option("--labeler", default=lambda: _login_name("labeler"), help="who labels (default: your login name)")
@click.option("--order", type=click.Choice(["queue", "uncertain"]), default="queue", show_default=True,
              help="uncertain: the items `cdl labels suggest` was least sure of first (active learning)")
@click.option("--save-image", type=click.Path(dir_okay=False, path_type=Path),
              help="write an image item to this file (PNG) to look at it")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def labels_next(obj: dict[str, Any], filter_: str, labeler: str, order: str, save_image: Path | None,
                as_json: bool) -> None:
    """Show the next item to label."""
    q = _queue(obj, labeler)
    item = q.next(filter_, order)
    if item is None:
        elsewhere = len(q.store.leased_by_others(q.labeler))
        if as_json:
            _dump({"item": None, "open_with_other_labelers": elsewhere})
        else:
            done = _proposal_state(q.ws, filter_)
            if filter_ == "unlabeled" and not done:  # conflicts are not in this queue: say they wait
                conflicts = q.progress()["conflicts"]
                if conflicts:
                    done = (f"; {conflicts} item(s) in conflict wait for a decision: `cdl labels next --filter "
                            "conflicts`")
            click.echo("nothing left to label" + (f" ({elsewhere} open with other labelers)" if elsewhere else "")
                       + done)
        return
    content = q.content(item.uid)
    if isinstance(content, str):
        preview = content[:500]
    else:  # an image: a terminal shows none, so say how to see it ("<image (28, 28)>" was all)
        shape = "x".join(str(n) for n in getattr(content, "shape", ()))
        if save_image is not None:
            from PIL import Image

            save_image.parent.mkdir(parents=True, exist_ok=True)
            pixels = content[..., 0] if content.ndim == 3 and content.shape[-1] == 1 else content  # (H, W, 1)
            Image.fromarray(pixels).save(save_image, format="PNG")
            preview = f"<image {shape}: written to {save_image}>"
        else:
            preview = f"<image {shape}: --save-image FILE.png writes it>"
    doc = {"item": item.item_id, "uid": item.uid, "source": item.source, "candidates": list(item.candidates),
           "classes": q.classes(), "content": preview, "suggestion": q.suggestion(item.item_id),
           **({"image": str(save_image)} if save_image is not None and not isinstance(content, str) else {})}
    if as_json:
        _dump(doc)
    else:
        sug = doc["suggestion"]
        hint = f"\nsuggested by {sug['model']}: {sug['label']} ({sug['confidence']:.2f})" if sug else ""
        classes = ", ".join(doc["classes"]) or (f"none yet: `cdl labels set {item.item_id[:12]} LABEL --new-class` "
                                                 "starts the first")
        if item.conflict:  # which labels disagree (the JSON's candidates): the item showed as if unlabeled
            hint += f"\nin conflict: the sources label it {' and '.join(item.candidates)}"
        click.echo(f"{item.uid}  ({item.item_id[:12]})\n{preview}\nclasses: {classes}{hint}")


@labels.command("suggest")
@click.option("--model", "ref", default=None, help="NAME:VERSION (default: the champion)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def labels_suggest(obj: dict[str, Any], ref: str | None, as_json: bool) -> None:
    """Pre-annotations: the model's guess, with its confidence, for every item still to decide; the annotation
    panel shows it and Enter takes it. Suggestions are not labels."""
    from runtime.labeling import suggest

    doc = suggest(_ws(obj), ref, log=None if as_json else click.echo)
    if as_json:
        _dump(doc)
        return
    spread = ", ".join(f"{c} {n}" for c, n in doc["by_class"].items())
    click.echo(f"{doc['model']} suggested labels for {doc['items']} item(s)" + (f": {spread}" if spread else "")
               + ("" if doc["items"] else " (no item is unlabeled or in conflict: suggestions are for those)"))


@labels.command("set")
@click.argument("item")
@click.argument("label")
@click.option("--labeler", default=lambda: _login_name("labeler"), help="who labels (default: your login name)")
@click.option("--new-class", is_flag=True, help="LABEL starts a class the dataset does not have yet")
@click.pass_obj
def labels_set(obj: dict[str, Any], item: str, label: str, labeler: str, new_class: bool) -> None:
    """Label ITEM (its id, a prefix of it, or its uid) as LABEL."""
    q = _queue(obj, labeler)
    known = q.classes()
    if known and label not in known and not new_class:  # a typo would have made a class of one item
        import difflib

        close = difflib.get_close_matches(label, known, n=1, cutoff=0.6) or [k for k in known
                                                                            if k.lower() == label.lower()]
        then = (f": did you mean {close[0]!r}? To start" if close else "; to start")
        raise CdlError(f"{label!r} is not one of the classes ({', '.join(known)}){then} a new class with it, pass "
                       "--new-class")
    rec = q.set_label(item, label)
    click.echo(f"{q.item_name(rec.item_id)} -> {rec.label} (by {rec.labeler})")


@labels.command("skip")
@click.argument("item")
@click.option("--labeler", default=lambda: _login_name("labeler"), help="who labels (default: your login name)")
@click.pass_obj
def labels_skip(obj: dict[str, Any], item: str, labeler: str) -> None:
    """Skip ITEM for now."""
    q = _queue(obj, labeler)
    rec = q.skip(item)
    click.echo(f"skipped {q.item_name(rec.item_id)}")


@labels.command("undo")
@click.option("--labeler", default=lambda: _login_name("labeler"), help="who labels (default: your login name)")
@click.pass_obj
def labels_undo(obj: dict[str, Any], labeler: str) -> None:
    """Undo your last label or skip."""
    q = _queue(obj, labeler)
    rec = q.undo()
    if rec is None:
        click.echo("nothing to undo")
        return
    click.echo(q.undone_text(rec))  # what was undone and what the item has now (it said "undid label of 432d…")


@labels.command("stats")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def labels_stats(obj: dict[str, Any], as_json: bool) -> None:
    """Labeling progress on the checked-out version, and labeled items per class."""
    q = _queue(obj, "labeler")
    doc = q.progress()
    by_class = q.class_counts()
    items = q.items_counted()
    quarantined = q.quarantined_count()
    if as_json:
        _dump({**doc, "items": items, "quarantined": quarantined, "by_class": by_class})
        return
    # the counts are of contents: "total 2143" beside data.ingest's "2241 items" was not explained
    copies = f" (contents: {items} items, {items - doc['total']} of them copies of another, which its label covers)"
    left_out = (f"; {quarantined} quarantined by data.validate left out (`cdl data report` says why)"
                if quarantined else "")
    click.echo(", ".join(f"{k} {v}" for k, v in doc.items()) + (copies if items > doc["total"] else "") + left_out)
    if by_class:  # it gave the totals alone: which classes still need examples was not to be seen
        click.echo("by class: " + ", ".join(f"{k} {v}" for k, v in by_class.items()))


@labels.command("agreement")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def labels_agreement(obj: dict[str, Any], as_json: bool) -> None:
    """Per labeler (people and imported sources): items labeled and skipped, agreement with the others where they
    labeled the same items; per pair: shared items, agreement and Cohen's kappa."""
    from runtime.labeling import agreement, workspace_relabel

    ws = _ws(obj)
    doc = agreement(ws.store, workspace_relabel(ws))
    if as_json:
        _dump(doc)
        return
    click.echo(f"{'labeler':<32} {'source':<7} {'labeled':>8} {'skipped':>8} {'shared':>8} {'agreement':>10}")
    for r in doc["labelers"]:
        ag = "-" if r["agreement"] is None else f"{r['agreement']:.1%}"
        click.echo(f"{r['labeler'][:32]:<32} {r['source']:<7} {r['labeled']:>8} {r['skipped']:>8} {r['shared']:>8} "
                   f"{ag:>10}")
    if doc["pairs"]:
        click.echo("")
        for p in doc["pairs"]:
            kappa = "undefined" if p["kappa"] is None else f"{p['kappa']:.3f}"
            click.echo(f"{p['a']} / {p['b']}: {p['items']} shared item(s), {p['agreement']:.1%} agree, kappa {kappa}")
        click.echo(f"{doc['items_with_several']} item(s) with several labelers, {doc['unanimous']:.1%} unanimous")
    else:
        click.echo("no item has labels from two labelers yet")


# -- experiments --------------------------------------------------------------------------------------------


@cli.group()
def experiments() -> None:
    """The experiment registry: tuning and training experiments, their trials, the best one, and the models."""


@experiments.command("list")
@click.option("--kind", type=click.Choice(["tune", "train"]), help="only experiments of this kind")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def experiments_list(obj: dict[str, Any], kind: str | None, as_json: bool) -> None:
    """Every experiment, oldest first: status, dataset version, best trial, trials and the models from it."""
    from runtime.experiments import experiments_json, list_lines

    doc = experiments_json(_ws(obj).store, kind)
    if as_json:
        _dump(doc)
        return
    if not doc["experiments"]:
        _nothing_yet(f"no {kind + ' ' if kind else ''}experiments yet: model.tune and model.train make them "
                     "(`cdl run --until model.train`)")
    for line in list_lines(doc):
        click.echo(line)


@experiments.command("show")
@click.argument("experiment", default="latest")
@click.option("--sort", type=click.Choice(["number", "value"]), default="number", show_default=True,
              help="the trials in order of their number, or best first")
@click.option("--trial", type=int, help="one trial: its parameters and metrics per epoch (its learning curve)")
@click.option("--json", "as_json", is_flag=True, help="with each trial's metrics per epoch (its learning curve)")
@click.pass_obj
def experiments_show(obj: dict[str, Any], experiment: str, sort: str, trial: int | None, as_json: bool) -> None:
    """One EXPERIMENT (its name, such as tune-2, its id, or latest, latest-tune, latest-train; default latest):
    its trials with state, val_accuracy, epochs and the parameters they differ in; a training run's metrics per
    epoch."""
    from runtime.experiments import experiment_json, show_lines, trial_lines

    doc = experiment_json(_ws(obj).store, experiment)
    lines = trial_lines(doc, trial) if trial is not None else show_lines(doc, sort)  # an unknown trial: exit 2
    if as_json:
        _dump({**doc, "trial_list": [t for t in doc["trial_list"] if t["number"] == trial]} if trial is not None
              else doc)
        return
    for line in lines:
        click.echo(line)


@experiments.command("use")
@click.argument("experiment")
@click.option("--trial", type=int, help="the trial's number (default: the experiment's best)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def experiments_use(obj: dict[str, Any], experiment: str, trial: int | None, as_json: bool) -> None:
    """Write a trial's parameters into model.train's in cdl.yaml, with use_tuned off: the next `cdl run` trains
    with that trial, one picked by hand rather than the best (a smaller model close to it, say)."""
    from runtime.experiments import changed_text, use_trial

    doc = use_trial(_ws(obj), experiment, trial)
    if as_json:
        _dump(doc)
        return
    changed = changed_text(doc["changed"])
    value = "" if doc["value"] is None else f", val_accuracy {doc['value']:.4f}"
    click.echo(f"model.train now trains with {doc['experiment']}'s trial {doc['trial']} ({doc['state']}{value}): "
               + (changed or "cdl.yaml had these values already")
               + (f" (cdl.yaml committed, {doc['commit'][:10]})" if doc.get("commit") else ""))
    if doc["left_out"]:
        click.echo(f"not model.train parameters, left out: {', '.join(doc['left_out'])}", err=True)
    if doc["note"]:
        click.echo(f"note: {doc['note']}", err=True)
    if doc["changed"]:
        click.echo("the next `cdl run` trains with them (model.train is stale until then)", err=True)


# -- models -------------------------------------------------------------------------------------------------


@cli.group()
def models() -> None:
    """The model registry: versions, lineage, reviews and aliases."""


@models.command("list")
@click.option("--name", help="only this model")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models_list(obj: dict[str, Any], name: str | None, as_json: bool) -> None:
    """Every model version with aliases, dataset version, metrics and parameters."""
    from runtime.registry import models_json, review_text

    doc = models_json(_ws(obj).store, name)
    if as_json:
        _dump(doc)
        return
    if not doc["models"]:
        _nothing_yet("no model versions yet: model.register registers one (`cdl run --until model.register`)")
    for m in doc["models"]:
        acc = m["metrics"].get("test_accuracy")
        click.echo(f"{m['name']}:{m['version']:<4} {','.join(m['aliases']) or '-':<20} data {m['dataset_version']:<5} "
                   f"{m['framework']:<6} test_accuracy {acc if acc is None else f'{acc:.4f}'}  git {str(m['git_commit'])[:10]}"
                   f"{' (dirty)' if m['git_dirty'] else ''}  {review_text(m['review'], m['passed_over_by'], m['gate_failed'])}")


@models.command("history")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models_history(obj: dict[str, Any], name: str, as_json: bool) -> None:
    """Which version held which alias and when, and every review."""
    from runtime.registry import history_json

    doc = history_json(_ws(obj).store, name)
    if as_json:
        _dump(doc)
        return
    for a in doc["aliases"]:
        until = local_time(a["until"], default="now")
        click.echo(f"{a['alias']:<11} v{a['version']:<3} {local_time(a['since'])} -> {until}  {a['reason']}")
    for r in doc["reviews"]:
        auto = " (automatic)" if r["automatic"] else ""
        click.echo(f"review v{r['version']}: {r['decision']} by {r['reviewer']}{auto}: {r['comment']}")


@models.command("review")
@click.argument("ref")
@click.option("--approve", is_flag=True, help="approve: the version becomes champion")
@click.option("--reject", is_flag=True, help="reject: a champion rejected loses the alias to the one before it")
@click.option("--comment", default="", help="why")
@click.option("--reviewer", default=lambda: _login_name(""), help="who reviews")
@click.option("--override-gate", is_flag=True,
              help="approve a version that failed model.evaluate's gate (refused without it); its review says so")
@click.option("--json", "as_json", is_flag=True,
              help='{"ref", "decision", "reviewer", "comment", "aliases", "champion", "message"}')
@click.pass_obj
def models_review(obj: dict[str, Any], ref: str, approve: bool, reject: bool, comment: str, reviewer: str,
                  override_gate: bool, as_json: bool) -> None:
    """Approve or reject a model version (REF is NAME:VERSION). Rejecting the champion demotes it: the champion
    before it comes back if it is still approved."""
    from runtime.registry import review_and_say

    if approve and reject:  # the last of the two won, without a word: a decision nobody meant
        raise CdlError("--approve and --reject both given: say one")
    if not approve and not reject:
        raise CdlError("say --approve or --reject")
    store = _ws(obj).store
    said = review_and_say(store, ref, approve, comment, reviewer, override_gate)
    if not as_json:
        click.echo(said)
        return
    mv = store.resolve_model(ref)
    try:
        champion = store.model_version(mv.name, "champion").ref
    except NotFoundError:
        champion = None
    comment = store.reviews(mv.name, mv.version)[-1].comment  # as recorded: an overridden gate is said in it
    _dump({"ref": mv.ref, "decision": "approved" if approve else "rejected", "reviewer": reviewer, "comment": comment,
           "aliases": list(mv.aliases), "champion": champion, "message": said})


@models.command("compare")
@click.argument("a")
@click.argument("b")
@click.option("--on", "on", type=click.Choice(["auto", "a", "b", "own"]), default="auto", show_default=True,
              help="where the test splits differ, measure both on B's (auto, b) or A's (a) test split; own: no")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models_compare(obj: dict[str, Any], a: str, b: str, on: str, as_json: bool) -> None:
    """Two model versions side by side (A and B are NAME:VERSION or NAME:ALIAS): data, code, parameters and
    metrics; where they were tested on different test splits, both on one of them."""
    from runtime.ml.versus import compare

    doc = compare(_ws(obj), a, b, on, log=None if as_json else lambda m: click.echo(m, err=True))
    if as_json:
        _dump(doc)
        return
    click.echo(f"{'':<18} {doc['a']:<24} {doc['b']:<24}")

    def line(name: str, x: Any, y: Any, differs: bool, extra: str = "") -> None:  # noqa: ANN401
        def f(v: Any) -> str:  # noqa: ANN401
            return "-" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)

        if max(len(f(x)), len(f(y))) > 24 and not extra:  # a long value (the classes) ran into the next column
            if not differs:
                click.echo(f"  {name:<16} both: {f(x)}")
            else:
                click.echo(f"* {name:<16} {doc['a']}: {f(x)}\n  {'':<16} {doc['b']}: {f(y)}")
            return
        click.echo(f"{'*' if differs else ' '} {name:<16} {f(x):<24} {f(y):<24}{extra}")

    for r in doc["lineage"]:
        line(r["field"], r["a"], r["b"], r["differs"])
    click.echo("parameters")
    for r in doc["params"]:
        line(r["name"], r["a"], r["b"], r["differs"])
    split = "the same test split" if doc["same_test_set"] else "each on its own test split"
    click.echo(f"metrics ({split})")
    for m in doc["metrics"]:
        line(m["name"], m["a"], m["b"], m["change"] not in (None, 0),
             f"change {m['change']:+.4f}" if m["change"] is not None else "")
    o = doc["on_split"]
    if o is not None and "error" in o:
        click.echo(f"not measured on {o['of']}'s test split: {o['error']}")
    elif o is not None:
        click.echo(f"both on {o['of']}'s test split ({o['dataset_version']}, {o['b' if o['of'] == doc['b'] else 'a']['n']} items)")
        for name in ("test_accuracy", "macro_f1"):
            x, y = o["a"][name], o["b"][name]
            line(name, x, y, x != y, f"change {y - x:+.4f}" if x is not None and y is not None else "")
        measured = o["a"] if o["of"] == doc["b"] else o["b"]
        if seen := measured.get("seen_in_training"):
            from runtime.ml.versus import flattered

            whose = f"{measured['ref']}'s"
            click.echo(f"  {flattered(seen, 'these test items', whose)}")
        if measured.get("classes_it_lacks"):
            click.echo(f"  classes {measured['ref']} does not know: {measured['classes_it_lacks']}")
    click.echo("per class F1")
    for r in doc["per_class"]:
        line(r["class"], r["a_f1"], r["b_f1"], r["a_f1"] != r["b_f1"])


@models.command("predict")
@click.argument("refs", nargs=-1, required=True)
@click.option("--text", "texts", multiple=True, help="a text to classify (repeat for more)")
@click.option("--file", "files", multiple=True, type=click.Path(path_type=Path),
              help="a text file (text models) or an image (image models); repeat for more")
@click.option("--input", "source", type=click.Path(path_type=Path),
              help="every item of a data file or folder: a CSV or JSON Lines file's text column, every file of a "
              "folder or zip, idx files, a Label Studio export (read as `cdl data import` reads them)")
@click.option("--text-column", help="--input's text column (default: found as `cdl data import` finds it)")
@click.option("--encoding", help="--input CSV's text encoding where it is not UTF-8 (cp1252: Excel on Windows)")
@click.option("-o", "--output", type=click.Path(path_type=Path),
              help="write the predictions to this file: .csv or .tsv (one column a class), else JSON Lines")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models_predict(obj: dict[str, Any], refs: tuple[str, ...], texts: tuple[str, ...], files: tuple[Path, ...],
                   source: Path | None, text_column: str | None, encoding: str | None, output: Path | None,
                   as_json: bool) -> None:
    """Predict with model versions (NAME:VERSION or NAME:ALIAS; several side by side) from their checkpoints, each
    with its own preprocessing: try a candidate before it is exported or served. NAME:VERSION:VARIANT runs that
    compressed variant in onnxruntime (w1:3 w1:3:dynamic_int8: does quantization change the answer?).
    --input FILE scores a whole file or folder, as `mlflow models predict -i` does; -o writes the answers."""
    from runtime.ml.predict import agreement, predict_items, predict_source, unknown_texts, write_predictions

    ws = _ws(obj)
    if source is not None and (texts or files):
        raise CdlError("give --input alone, or --text/--file: not both")
    if (text_column or encoding) and source is None:
        raise CdlError(f"{'--text-column' if text_column else '--encoding'} is about --input's file: give --input FILE")
    read_as = {k: v for k, v in (("text_column", text_column), ("encoding", encoding)) if v}
    if source is not None:
        doc, named, said = {}, {}, set()
        for ref in refs:
            mv, variant = _ref_variant(ws, ref) if ref.replace("@", ":", 1).count(":") == 2 else (None, None)
            # the file names the version an alias stood for when it ran ("news:champion" moves on)
            named[ref] = f"{mv.ref}:{variant}" if mv else ws.store.resolve_model(ref).ref

            def progress(done: int, total: int, ref: str = ref) -> None:
                if total > 512:
                    click.echo(f"{ref}: {done}/{total}", err=True)

            def note(text: str) -> None:  # what the reader left out (notes.txt among images): once, not a model each
                if text not in said:
                    said.add(text)
                    click.echo(f"{source}: {text}", err=True)

            doc[ref] = predict_source(ws, mv.ref if mv else ref, source, read_as or None, variant, progress, note,
                                      log=lambda m, ref=ref: click.echo(f"{ref}: {m}", err=True))
        rows = [{"model": named[ref], **p} for ref, preds in doc.items() for p in preds]
        if output is not None:
            write_predictions(rows, output)
            click.echo(f"wrote {len(rows)} prediction(s) to {output}", err=True)
        summary = {ref: {**agreement(preds), "no_known_word": unknown_texts(preds)} for ref, preds in doc.items()}
        for ref, a in summary.items():
            if a["no_known_word"]:
                click.echo(f"{ref}: {a['no_known_word']} of {a['items']} text(s) have no word the model knows: "
                           "their answers are its guess for an empty text (known_words 0)", err=True)
            if a["labeled"]:
                click.echo(f"{ref}: {a['agree']} of {a['labeled']} agree with the labels the input gives "
                           f"(accuracy {a['accuracy']:.4f})", err=True)
            if a["other_labels"]:
                click.echo(f"{ref}: labels that are no class of the model, left out of that count: "
                           + ", ".join(f"{k} ({n})" for k, n in list(a["other_labels"].items())[:5]), err=True)
        if as_json:  # with -o, the file holds the predictions: only the summary here
            _dump({"output": str(output), "models": summary} if output is not None
                  else {"predictions": doc, "models": summary})
        elif output is None:
            _echo_predictions(doc)
        return
    if output is not None:
        raise CdlError("-o writes the predictions of --input FILE: give --input")
    if not texts and not files:  # `cdl models predict ws:1 "some text"` took the text for a model reference
        import shlex

        stray = next((r for r in refs if ":" not in r and (" " in r or Path(r).exists())), None)
        if stray is not None:
            flag = "--file" if Path(stray).exists() else "--text"
            raise CdlError(f"nothing to predict: {stray!r} was read as a model reference (NAME:VERSION); inputs "
                           f"follow --text or --file: `cdl models predict {refs[0]} {flag} {shlex.quote(stray)}`")
    doc = {}
    for ref in refs:
        if ref.replace("@", ":", 1).count(":") == 2:  # a variant: that ONNX model, as a device runs it
            mv, variant = _ref_variant(ws, ref)
            doc[ref] = predict_items(ws, mv.ref, list(texts), list(files), variant=variant,
                                     log=lambda m, ref=ref: click.echo(f"{ref}: {m}", err=True))
        else:
            doc[ref] = predict_items(ws, ref, list(texts), list(files),
                                     log=lambda m, ref=ref: click.echo(f"{ref}: {m}", err=True))
    if as_json:
        _dump({"predictions": doc})
        return
    _echo_predictions(doc)


def _echo_predictions(doc: dict[str, list[dict[str, Any]]]) -> None:
    from runtime.ml.predict import NO_KNOWN_WORD

    width = max(12, *(len(r) for r in doc))
    for ref, preds in doc.items():
        for p in preds:
            top = sorted(p["probabilities"].items(), key=lambda kv: -kv[1])[:3]
            click.echo(f"{ref:<{width}} {p['label']:<16} {p['confidence']:.3f}  ({', '.join(f'{c} {v:.3f}' for c, v in top)})"
                       f"  {p['input']!r}" + (f"  ({NO_KNOWN_WORD})" if p.get("known_words") == 0 else ""))


@models.command("delete")
@click.argument("ref")
@click.option("--yes", is_flag=True, help="do not ask")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models_delete(obj: dict[str, Any], ref: str, yes: bool, as_json: bool) -> None:
    """Delete a model version (NAME:VERSION) and its variants; `cdl gc` then frees its files. Not the champion,
    the version model.register made last, or one a device serves."""
    from runtime.registry import delete_version, deletion_refused

    ws = _ws(obj)
    mv = ws.store.resolve_model(ref)
    refused = deletion_refused(ws, mv.ref)
    if refused:  # before the question: it asked, and then refused the answer yes
        raise CdlError(refused)
    acc = mv.metrics.get("test_accuracy")
    if not yes:
        click.confirm(f"Delete {mv.ref} ({', '.join(mv.aliases) or 'no alias'}, test_accuracy "
                      f"{'-' if acc is None else f'{acc:.4f}'}) and its variants? Its reviews and alias history stay",
                      abort=True)
    doc = delete_version(ws, mv.ref)
    if as_json:
        _dump(doc)
        return
    click.echo(f"deleted {doc['deleted']} ({doc['variants']} variant bundle(s)); {doc['next']}")


@models.command("report")
@click.argument("ref")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="the HTML file to write")
@click.pass_obj
def models_report(obj: dict[str, Any], ref: str, output: Path) -> None:
    """One self-contained HTML page on a model version, as a model card: what it was made from, how it did (per
    class, the confusion matrix, the champion on the same test split, the training curves), its variants and its
    history."""
    from runtime.report import write_report

    doc = write_report(_ws(obj), ref, output)
    click.echo(f"wrote {doc['path']} ({doc['bytes'] / 1024:.0f} KiB) on {doc['model']}")


@models.command("lineage")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models_lineage(obj: dict[str, Any], ref: str, as_json: bool) -> None:
    """From a model version back to its dataset version, experiment, trial and code commit."""
    from runtime.registry import lineage, lineage_rows

    store = _ws(obj).store
    doc = lineage(store, ref)
    if as_json:  # the JSON was all it printed, and `--json`, which the other `models` listings take, was refused
        _dump(doc)
        return
    rows = lineage_rows(store, doc)
    click.echo(doc["model"])
    for k, v in rows:
        click.echo(f"  {k:<16} {v}")


@models.command("variants")
@click.argument("ref")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def models_variants(obj: dict[str, Any], ref: str, as_json: bool) -> None:
    """Every variant of a model version: size, latency, test accuracy and its change (deploy.revise)."""
    from runtime.steps.deploy import variants_json

    doc = variants_json(_ws(obj).store, ref)
    if as_json:
        _dump(doc)
        return
    click.echo(f"{doc['model']}")
    if not doc["variants"]:
        from runtime.store.deploy import no_variants, review_waits_on

        _nothing_yet(no_variants(doc["model"], review_waits_on(_ws(obj).store)))
    from runtime.steps.deploy import slower_words

    for v in doc["variants"]:
        if v["status"] != "ok":
            click.echo(f"  {v['name']:<14} {v['status']}: {v['message']}")
            continue
        lat = v["latency_ms"] or {}
        acc = v["test_accuracy"]
        mark = f"  {slower_words(v['details'].get('slower_at'), v['details'].get('vs_fp32'))}" if v["slower_than_fp32"] \
            else ""
        click.echo(f"  {v['name']:<14} {v['size_bytes'] / 1024:9.0f} KiB  acc {acc if acc is None else f'{acc:.4f}'}"
                   f" ({(v['accuracy_delta'] or 0):+.4f})  b1 p50 {lat.get('b1_p50', float('nan')):.3f} ms  "
                   f"b64 p50 {lat.get('b64_p50', float('nan')):.2f} ms{mark}")


@cli.command()
@click.argument("ref")
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="the bundle file to write (.cdlb)")
@click.option("--json", "as_json", is_flag=True, help='{"ref", "variant", "path", "sha256", "size_bytes"}')
@click.pass_obj
def package(obj: dict[str, Any], ref: str, output: Path, as_json: bool) -> None:
    """Write the signed bundle of NAME:VERSION[:VARIANT] (default variant fp32) to a file. VERSION is a number or
    an alias (champion, challenger, latest)."""
    from runtime.bundles import package as do_package

    mv, variant = _ref_variant(_ws(obj), ref)
    info = do_package(_ws(obj), mv.ref, variant, output)
    if as_json:
        _dump({"ref": mv.ref, **info})
        return
    click.echo(f"wrote {output} ({info['size_bytes'] / 1024:.0f} KiB, sha256 {info['sha256']})")


@cli.group()
def devices() -> None:
    """Edge devices: enroll, list, status, scoring collection, deployment history."""


@devices.command("enroll")
@click.argument("name")
@click.option("--address", required=True, help="HOST:PORT where the agent will listen")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="the device's folder (default .cdl/devices/NAME; with --replace, the folder it was enrolled into): "
              "copy it to the device")
@click.option("--inference-auth", type=click.Choice(["open", "token"]), default=None,
              help="open (the default) or token")
@click.option("--raw-below", type=float, default=None,
              help="keep the raw input of predictions less confident than this (default 0.6)")
@click.option("--workers", type=click.IntRange(1, 64), default=None,
              help="agent processes sharing the port, one core each (agent.json `workers`; default 1)")
@click.option("--metrics", "metrics", default=None, metavar="HOST:PORT",
              help="where the agent serves Prometheus metrics, GET /metrics (agent.json `metrics_listen`; default off)")
@click.option("--metrics-auth", type=click.Choice(["open", "token"]), default=None,
              help="token: a scrape of /metrics must send the device token (Authorization: Bearer); default open")
@click.option("--http", "http", default=None, metavar="HOST:PORT",
              help="where the agent serves the Open Inference Protocol's REST binding, https://HOST:PORT/v2, besides "
              "gRPC (agent.json `http_listen`; default off)")
@click.option("--replace", is_flag=True, help="enroll a device of this name again: a new token and certificate, "
              "written into its folder (agent.json and tls/; bundles and the journal stay, and agent.json's settings "
              "too, but for the options given)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def devices_enroll(obj: dict[str, Any], name: str, address: str, out: Path | None, inference_auth: str | None,
                   raw_below: float | None, workers: int | None, metrics: str | None, metrics_auth: str | None,
                   http: str | None, replace: bool, as_json: bool) -> None:
    """Make TLS certificates, a token and the agent's folder for a device, and record it."""
    from runtime.devices import client_hint, enroll

    doc = enroll(_ws(obj), name, address, out, inference_auth, raw_below, workers=workers, replace=replace,
                 metrics_listen=metrics, metrics_auth=metrics_auth, http_listen=http)
    if as_json:
        _dump({k: v for k, v in doc.items() if k != "token"})
        return
    click.echo(f"enrolled {name} at {address}; its folder: {doc['enroll_dir']}\n"
               f"copy that folder to the device and run:\n  {doc['start']}\n"
               f"(it listens on {doc['listen']}: agent.json's listen, from --address)")
    click.echo(client_hint(doc))
    if doc.get("warning"):
        click.echo(f"warning: {doc['warning']}", err=True)


@devices.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def devices_list(obj: dict[str, Any], as_json: bool) -> None:
    """Enrolled devices."""
    from runtime.devices import devices_json

    doc = devices_json(_ws(obj))
    if as_json:
        _dump(doc)
        return
    if not doc["devices"]:
        _nothing_yet("no devices enrolled: `cdl devices enroll NAME --address HOST:PORT` enrolls one")
    for d in doc["devices"]:
        active = d["active"]
        cert = d["cert"]
        if cert is None:
            tls = "cert unknown (its enrollment folder is gone)"
        elif cert["expired"]:
            tls = f"CERT EXPIRED {cert['expires'][:10]}: `cdl devices enroll {d['name']} --address {d['address']} --replace`"
        elif cert["warn"]:
            tls = (f"cert expires in {cert['days_left']:.0f} day(s), {cert['expires'][:10]}: `cdl devices enroll "
                   f"{d['name']} --address {d['address']} --replace`")
        else:
            tls = f"cert until {cert['expires'][:10]}"
        click.echo(f"{d['name']:<16} {d['address']:<22} last seen {local_time(d['last_seen'], default='never')}  active "
                   f"{active['name'] + ':' + active['version'] + ':' + active['variant'] if active else '-'}  {tls}")


@devices.command("status")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="seconds to wait for each device")
@click.pass_obj
def devices_status(obj: dict[str, Any], names: tuple[str, ...], as_json: bool, timeout: float) -> None:
    """Ask devices (every enrolled one without NAMES) for their health: active model, uptime, requests, errors,
    free disk, journal. Exit 1 when one does not answer."""
    from runtime.devices import probe_devices, status_line

    probes = probe_devices(_ws(obj), timeout, list(names) or None)
    docs = [{"device": n, "online": True, **p["health"]} if p["health"] else
            {"device": n, "online": False, "error": p["error"]} for n, p in probes.items()]
    if as_json:
        _dump(docs[0] if len(names) == 1 else {"devices": docs})
    for doc in [] if as_json else docs:
        if not doc["online"]:
            click.echo(doc["error"])  # "device NAME: health failed: UNAVAILABLE: cannot reach it ..."
            continue
        click.echo(status_line(doc))
        for w in doc.get("warnings", []):
            click.echo(f"  warning: {w}")
    if not docs and not as_json:
        click.echo("no device enrolled: `cdl devices enroll NAME --address HOST:PORT`")
    if any(not d["online"] for d in docs):
        sys.exit(1)


@devices.command("collect")
@click.argument("names", nargs=-1)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def devices_collect(obj: dict[str, Any], names: tuple[str, ...], as_json: bool) -> None:
    """Pull scoring records from devices into .cdl/scoring.duckdb (keyed by device and sequence)."""
    from runtime.devices import collect

    doc = collect(_ws(obj), list(names) or None, log=lambda m: None if as_json else click.echo(m))
    if as_json:
        _dump(doc)
    elif not doc:  # it printed nothing at all
        _nothing_yet("no devices enrolled, so nothing to collect: `cdl devices enroll NAME --address HOST:PORT`")
    if any("error" in v for v in doc.values()):
        sys.exit(1)


@devices.command("token")
@click.argument("name")
@click.pass_obj
def devices_token(obj: dict[str, Any], name: str) -> None:
    """Print the device's token, which a client sends (`Authorization: Bearer`) where its agent.json says
    inference_auth or metrics_auth "token": the device keeps its hash only, and the workspace gave it nowhere."""
    click.echo(_ws(obj).store.device(name).token)


@devices.command("remove")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def devices_remove(obj: dict[str, Any], name: str, as_json: bool) -> None:
    """Unenroll a device that is gone: nothing is pushed to, collected from or checked for it any more. Its
    deployment history and scoring data stay; its folder goes if it is the default one (.cdl/devices/NAME)."""
    from runtime.devices import remove

    doc = remove(_ws(obj), name)
    if as_json:
        _dump(doc)
        return
    click.echo(f"{name}: {doc['message']}. The agent on the device was not told: stop it there "
               "(`systemctl disable --now cdl-edge`).")


@devices.command("history")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def devices_history(obj: dict[str, Any], name: str | None, as_json: bool) -> None:
    """Deployments and rollbacks, oldest first."""
    from runtime.devices import history_json

    doc = history_json(_ws(obj), name)
    if as_json:
        _dump(doc)
        return
    if not doc["deployments"]:
        _nothing_yet(f"no deployments{f' to {name}' if name else ''} yet: `cdl deploy NAME:VERSION --device D` (or "
                     "deploy.push) makes one")
    for d in doc["deployments"]:
        click.echo(f"{local_time(d['time'])} {d['device']:<12} {d['action']:<8} {d['ref']} {d['status']} {d['message']}")


@cli.command()
@click.argument("ref")
@click.option("--device", "device_names", multiple=True, help="a device (repeat for more)")
@click.option("--all", "all_devices", is_flag=True, help="every enrolled device, in name order")
@click.option("--no-activate", is_flag=True, help="store the bundle on the device without activating it")
@click.option("--canary", type=int, default=0, help="a staged rollout: the first N devices named get it first, "
              "watched for --watch seconds; the rest only if they did well (else they roll back)")
@click.option("--watch", "watch_s", type=float, default=60.0, show_default=True, help="seconds to watch the canaries")
@click.option("--max-error-rate", type=float, default=0.05, show_default=True,
              help="the share of a canary's requests that may fail while it is watched")
@click.option("--min-requests", type=int, default=0, show_default=True,
              help="requests each canary must answer while watched (0: no traffic is no verdict against it)")
@click.option("--check-drift", is_flag=True, help="also check each canary's predictions while watched for drift "
              "(deploy.monitor's tests and settings); drift rolls it back")
@click.option("--force", is_flag=True, help="deploy a version that was rejected, or failed model.evaluate's gate "
              "unapproved (refused without it)")
@click.option("--json", "as_json", is_flag=True, help="what was done to each device, as `devices history --json` "
              "lists it (the progress goes to stderr)")
@click.pass_obj
def deploy(obj: dict[str, Any], ref: str, device_names: tuple[str, ...], all_devices: bool, no_activate: bool,
           canary: int, watch_s: float, max_error_rate: float, min_requests: int, check_drift: bool, force: bool,
           as_json: bool) -> None:
    """Push NAME:VERSION[:VARIANT] (default variant fp32; VERSION a number or an alias: champion, challenger,
    latest) to devices and activate it. Exit 1 when a device
    fails or a canary does badly, 2 for input errors (before any device is touched)."""
    from runtime.bundles import bundle_path
    from runtime.devices import deploy_each, history_json

    ws = _ws(obj)
    mv, variant = _ref_variant(ws, ref)  # what was asked for must exist before any device is touched (exit 2)
    model = mv.ref
    if all_devices == bool(device_names):
        raise CdlError("name the devices with --device NAME (repeat for more), or give --all for every enrolled one")
    if all_devices:
        device_names = tuple(sorted(d.name for d in ws.store.devices()))
        if not device_names:
            raise CdlError("no device enrolled: `cdl devices enroll NAME --address HOST:PORT`")
    for d in device_names:
        ws.store.device(d)
    from runtime.registry import deploy_refused

    if not force and (why := deploy_refused(ws.store, mv)) is not None:
        raise CdlError(f"{why}: deploying it puts it on {', '.join(device_names)}; --force deploys it all the same")
    bundle_path(ws, mv.ref, variant)  # last: it packages the bundle if it was not
    if canary:
        if no_activate:
            raise CdlError("--canary activates the model on the canaries to watch them: leave out --no-activate")
        from runtime.devices import check_canary

        check_canary(len(device_names), canary)  # an input error (exit 2), before any device is touched
    elif check_drift:
        raise CdlError("--check-drift checks the canaries: give --canary N")
    log = (lambda m: click.echo(m, err=True)) if as_json else click.echo
    since = max((d.id for d in ws.store.deployments()), default=0)
    verdicts = None
    if canary:
        from runtime.devices import drift_settings, staged_deploy

        try:
            verdicts = staged_deploy(ws, model, variant, list(device_names), canary, watch_s, max_error_rate,
                                     min_requests, log=log, drift=drift_settings(ws) if check_drift else None)["canary"]
            errors = []
        except CdlError as exc:  # a rollout that stopped: exit 1, as a failed step
            errors = [str(exc)]
    else:
        errors = deploy_each(ws, model, variant, list(device_names), not no_activate, log=log)
    if as_json:
        _dump({"ref": mv.ref, "variant": variant, "ok": not errors, "errors": errors, "canary": verdicts,
               "deployments": [d for d in history_json(ws)["deployments"] if d["id"] > since]})
    else:
        for e in errors:
            click.echo(f"error: {e}", err=True)
    if errors:
        sys.exit(1)


@cli.command("serve")
@click.argument("ref")
@click.option("--listen", default="127.0.0.1:8001", show_default=True, help="HOST:PORT (port 0: any free one)")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="agent worker processes on the one port (each loads the model)")
@click.option("--http", default=None, metavar="HOST:PORT",
              help="also serve the protocol's REST binding, https://HOST:PORT/v2 (port 0: any free one)")
@click.option("--parent-pid", type=int, default=None, hidden=True)  # the studio's: stop when it is gone
@click.pass_obj
def serve_cmd(obj: dict[str, Any], ref: str, listen: str, workers: int, http: str | None,
              parent_pid: int | None) -> None:
    """Serve NAME:VERSION[:VARIANT] on this machine over the Open Inference Protocol (the edge agent, in a temporary
    folder; nothing recorded, all deleted at Ctrl-C), to try it with tritonclient before it goes to a device."""
    from runtime.serve import serve_model

    mv, variant = _ref_variant(_ws(obj), ref)
    serve_model(_ws(obj), mv.ref, variant, listen, workers, log=lambda m: click.echo(m), parent_pid=parent_pid,
                http=http)


@cli.command()
@click.option("--device", "device_name", required=True, help="the enrolled device to switch back")
@click.option("--json", "as_json", is_flag=True,
              help='{"device", "ok", "error", "active": {"name", "version", "variant", "bundle_id"}}')
@click.pass_obj
def rollback(obj: dict[str, Any], device_name: str, as_json: bool) -> None:
    """Switch a device back to its previous model. Exit 1 when the device refuses or does not answer (as
    `cdl deploy`), 2 for an unknown device."""
    from runtime.devices import DeviceError
    from runtime.devices import rollback as do_rollback

    try:
        res = do_rollback(_ws(obj), device_name)
    except DeviceError as exc:
        if as_json:
            _dump({"device": device_name, "ok": False, "error": str(exc), "active": None, "note": None})
        else:
            click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    from runtime.registry import rolled_back_note

    note = rolled_back_note(_ws(obj).store, res["name"], res["version"], device_name)
    if as_json:  # the note, which only the text output said, in the JSON too: null, or the sentence
        _dump({"device": device_name, "ok": True, "error": None,
               "active": {k: res[k] for k in ("name", "version", "variant", "bundle_id")}, "note": note})
        return
    click.echo(f"{device_name}: active {res['name']}:{res['version']}:{res['variant']} (bundle {res['bundle_id'][:12]})")
    if note is not None:
        click.echo(f"note: {note}", err=True)


@cli.command()
@click.option("--no-collect", is_flag=True, help="check what is already in .cdl/scoring.duckdb")
@click.option("--window", type=click.FloatRange(min=1), help="records (or seconds with --by time), at least 1")
@click.option("--by", type=click.Choice(["count", "time"]),
              help="the window in records (count) or seconds (time); default: deploy.monitor's window_by")
@click.option("--fail-on-drift", is_flag=True, help="exit 1 when a device drifted")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def monitor(obj: dict[str, Any], no_collect: bool, window: float | None, by: str | None, fail_on_drift: bool,
            as_json: bool) -> None:
    """Collect scoring data and run the drift checks (the deploy.monitor step)."""
    from runtime.jobs import Runner
    from runtime.monitor import report_lines
    from runtime.progress import ProgressPrinter

    over: dict[str, Any] = {}
    if no_collect:
        over["collect"] = False
    if window is not None:
        over["window"] = window
    if by:
        over["window_by"] = by
    ws = _ws(obj)
    runner = Runner(ws)
    if not as_json:
        runner.bus.subscribe(ProgressPrinter())
    res = runner.run(steps=["deploy.monitor"], overrides={"deploy.monitor": over} if over else None)
    out = res.steps[0]
    if out.status == "failed":
        raise CdlError(out.error or "deploy.monitor failed")
    checks = [{**{k: c[k] for k in ("device", "model", "version", "window", "tests", "drifted")},
               **({"no_known_word": c["no_known_word"]} if "no_known_word" in c else {})}
              for c in out.summary.get("checks", [])]
    if as_json:
        _dump({"checks": checks})
    else:
        for line in report_lines(out.summary.get("checks", [])):
            click.echo(line)
    if fail_on_drift and any(c["drifted"] for c in checks):
        sys.exit(1)


@cli.command()
@click.option("--auto-approve-if-better", is_flag=True,
              help="approve the retrained model only if it beats the champion on the test split (recorded as automatic)")
@click.option("--retune", is_flag=True, help="search hyperparameters again instead of reusing the champion's")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path),
              help="a Label Studio export with labels for the proposal's samples")
@click.option("--no-deploy", is_flag=True, help="stop after the review")
@click.option("--force", is_flag=True, help="go around even without drift")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def loop(obj: dict[str, Any], auto_approve_if_better: bool, retune: bool, labels: Path | None, no_deploy: bool,
         force: bool, as_json: bool) -> None:
    """One pass around the loop: drift, proposal, labels, new version, retrain, review, deploy.

    Ends done, no-drift, no-verdict, no-data or nothing-to-label (exit 0), waiting for labels, a review or a
    first device (exit 3), or failed (exit 1); --json has the status and the reason."""
    from runtime.loop import run_loop
    from runtime.progress import ProgressPrinter

    cancel = threading.Event()
    with _cancel_on_signals(cancel) as stopped_by:
        res = run_loop(_ws(obj), auto_approve_if_better, retune, labels, not no_deploy, force,
                       subscriber=None if as_json else ProgressPrinter(), cancel=cancel)
    if as_json:
        _dump(dict(res))
    else:
        click.echo(f"loop: {res['status']}: {res.get('reason', '')}")
    sys.exit(128 + stopped_by[0] if res["status"] == "cancelled" and stopped_by else res.code)


@cli.group("proposals")
def proposals_group() -> None:
    """Retrain proposals made after drift."""


@proposals_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def proposals_list(obj: dict[str, Any], as_json: bool) -> None:
    """Every retrain proposal: its state, device, model, samples labeled, the drift that made it, how it ended."""
    from runtime.proposals import proposals

    doc = {"proposals": proposals(_ws(obj))}
    if as_json:
        _dump(doc)
        return
    if not doc["proposals"]:
        _nothing_yet("no retrain proposals: deploy.maintain makes one when deploy.monitor finds drift")
    for p in doc["proposals"]:
        click.echo(f"{p['id']:<5} {p['status']:<9} {p['device']:<12} {p['model']}:{p['version']}  "
                   f"{p['labeled']}/{p['samples']} labeled  drift in {', '.join(p['drifted_tests'])}"
                   + (f"  ({p['note']})" if p.get("note") else ""))


@proposals_group.command("dismiss")
@click.argument("proposal_id")
@click.option("--note", default="", help="why (a false alarm, samples not worth labeling)")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def proposals_dismiss(obj: dict[str, Any], proposal_id: str, note: str, as_json: bool) -> None:
    """Dismiss an open proposal: its unlabeled samples leave the labeling queue and are not proposed again (those
    labeled stay); `cdl loop` stops waiting for them."""
    from runtime.proposals import dismiss

    res = dismiss(_ws(obj), proposal_id, note)
    if as_json:
        _dump(res)
        return
    click.echo(f"{res['id']} dismissed: {res['removed']} unlabeled sample(s) left the labeling queue, "
               f"{res['kept']} labeled kept; they are not proposed again (new scoring data is)")


# -- runtime ------------------------------------------------------------------------------------------------


@cli.group("runtime")
def runtime_group() -> None:
    """The local runtime process the studio talks to."""


@runtime_group.command("serve")
@click.option("--listen", default="127.0.0.1:0", show_default=True,
              help="unix:PATH (owner-only socket) or 127.0.0.1:PORT (loopback only; 0 picks a free port)")
@click.option("--parent-pid", type=int, default=None,
              help="stop (cancelling running jobs) once this process has exited: the studio that started it")
@click.pass_obj
def runtime_serve(obj: dict[str, Any], listen: str, parent_pid: int | None) -> None:
    """Serve jobs over gRPC: SubmitJob, WatchJob, CancelJob, ListJobs, GetStatus."""
    from runtime.server.server import serve

    serve(_ws(obj), listen, parent_pid)


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def studio(args: tuple[str, ...]) -> None:
    """Open the studio: cdl studio [WORKSPACE] [--screenshot FILE.png] [--panel ID]."""
    import subprocess

    # the runtime never imports the studio: it starts it as a program
    sys.exit(subprocess.call([sys.executable, "-m", "studio.app.main", *args]))


@cli.group()
def tune() -> None:
    """Hyperparameter search: join a running model.tune study from more processes or machines."""


@tune.command("worker")
@click.option("--workspace", "workspace", type=click.Path(file_okay=False, path_type=Path),
              help="the workspace (the same project on this machine; on several machines set CDL_DATABASE_URL "
              "to the shared PostgreSQL registry)")
@click.option("--study", help="the study to join (default: the newest running model.tune study)")
@click.option("--wait", type=float, default=0.0, show_default=True,
              help="seconds to wait for a study to appear before giving up")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def tune_worker(obj: dict[str, Any], workspace: Path | None, study: str | None, wait: float,
                as_json: bool) -> None:
    """Pull trials of a running study until its budget is spent (Ctrl-C stops after the current epoch)."""
    import signal
    import time

    from runtime.ml.tuning import Hooks, open_studies, open_study, run_trials, worker_id

    ws = _ws({**obj, "workspace": workspace or obj.get("workspace")})
    deadline = time.monotonic() + wait
    name = study
    while name is None:
        # a study whose model.tune process died on this host is closed first, not joined
        ws.store.mark_interrupted_runs("the process running this step ended before it finished")
        running = open_studies(ws.store)
        if running:
            name = running[0][1]
            break
        if time.monotonic() >= deadline:
            raise CdlError(f"no model.tune study is running in {ws.store.url}: start one with "
                           "`cdl run --until model.tune` (or name it with --study)")
        time.sleep(0.5)
    me = worker_id()
    opened, plan = open_study(ws.store, name, worker_seed=os.getpid())
    stop = {"flag": False}

    def _stop(_sig, _frm) -> None:  # noqa: ANN001
        stop["flag"] = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    say = (lambda _m: None) if as_json else (lambda m: click.echo(f"[{me}] {m}"))
    say(f"joined study {name} ({plan.n_trials} trials, {plan.pruner} pruning)")
    hooks = Hooks(log=say, progress=lambda _f, m="": say(m), cancelled=lambda: stop["flag"])
    ran = run_trials(ws, opened, plan, hooks)
    result = {"worker": me, "study": name, "trials": ran["trials"], "epochs": ran["epochs"],
              "stopped": stop["flag"], "study_closed": bool(ran["closed"])}
    if as_json:
        _dump(result)
    else:
        why = "stopped" if stop["flag"] else "study closed" if ran["closed"] else "budget spent"
        click.echo(f"[{me}] {why}: ran {ran['trials']} trial(s), {ran['epochs']} epoch(s)")
    if stop["flag"]:
        sys.exit(130)


def main() -> None:
    cli(prog_name="cdl")


if __name__ == "__main__":
    main()
