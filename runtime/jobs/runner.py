"""The runner: executes steps of a workspace's pipeline in order, records each run, and decides what is stale.

A step's input fingerprint has three parts, "<params>.<upstream>.<external>":
- params: its resolved parameters;
- upstream: the output fingerprints of the last successful runs of the steps feeding it;
- external: what the step itself hashes (source files, the labels table, the checked-out version).
A done step whose recorded fingerprint differs from the current one is *stale*, and the part that differs
says why. `run(..., until=X)` runs X's ancestors and X in order, skipping steps that are up to date.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runtime.domain.errors import CdlError, ConfigError, GateFailed, did_you_mean, first_line, user_code_frame
from runtime.domain.events import Event, EventKind
from runtime.domain.steps import StepSpec, StepStatus, run_ending
from runtime.domain.text import UNSET, change_text
from runtime.jobs.bus import EventBus
from runtime.steps import Cancelled, StepContext, get_step
from runtime.steps.base import hash_text
from runtime.workspace.config import PipelineConfig
from runtime.workspace.workspace import Workspace


@dataclass(frozen=True)
class StepState:
    id: str
    spec: StepSpec
    status: StepStatus
    reason: str = ""
    last_run: Any = None  # StepRun | None
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepOutcome:
    step: str
    status: str  # done | drifted | failed | skipped | cancelled | not-run
    duration: float = 0.0
    summary: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    error: str | None = None
    traceback: str | None = None
    gate: bool = False

    def to_dict(self) -> dict[str, Any]:
        out = {"id": self.step, "status": self.status, "duration": round(self.duration, 3),
               "message": self.message, "error": self.error, "summary": self.summary}
        if self.traceback:  # a bug's, or the workspace's own code's (src/): where it failed
            out["traceback"] = self.traceback
        return out


@dataclass
class JobResult:
    job: str
    status: str  # done | failed | cancelled
    steps: list[StepOutcome]

    @property
    def ok(self) -> bool:
        return self.status == "done"

    @property
    def waiting_at(self) -> str | None:
        """The step the run stopped at to wait for a person (model.review's review, deploy.push's first device),
        where nothing failed: None for a run that succeeded, failed or was cancelled."""
        if self.status != "failed":
            return None
        stopped = next((o for o in self.steps if o.status == "failed"), None)
        if stopped is None or run_ending(stopped.status, stopped.error, stopped.summary) != StepStatus.WAITING.value:
            return None
        return stopped.step


class Runner:
    def __init__(self, workspace: Workspace, bus: EventBus | None = None, job: str | None = None,
                 cancel: threading.Event | None = None):
        self.ws = workspace
        self.bus = bus or EventBus()
        self.job = job or uuid.uuid4().hex[:12]
        self.cancel = cancel or threading.Event()

    # -- fingerprints and status --------------------------------------------------------------------------

    def _ctx(self, cfg: PipelineConfig, step: str, params: dict[str, Any],
             given: Mapping[str, Any] | None = None) -> StepContext:
        return StepContext(self.ws, step, params, cfg, self._emit, self.job, self.cancel, given=frozenset(given or ()))

    def input_fp(self, cfg: PipelineConfig, step: str, params: dict[str, Any], done: Mapping[str, Any]) -> str:
        impl = get_step(step)
        p = hash_text(sorted(params.items()))[:16]
        ups = sorted((u, done[u].output_fp if u in done else None) for u in cfg.upstream(step))
        u = hash_text(ups)[:16]
        e = hash_text(impl.fingerprint(self._ctx(cfg, step, params)))[:16]
        return f"{p}.{u}.{e}"

    def statuses(self, cfg: PipelineConfig | None = None) -> list[StepState]:
        cfg = cfg or self.ws.config()
        store = self.ws.store
        store.mark_interrupted_runs("the process running this step ended before it finished")
        last = store.last_step_runs()
        done = store.last_done_runs()
        drifted = {s: r for s, r in last.items() if r.status == "drifted"}
        done = {**done, **drifted}
        out: dict[str, StepState] = {}
        for step in cfg.order():
            spec = get_step(step).spec
            run = last.get(step)
            if run is None:
                # a step after a failed one has never run because the run stopped there: it says which (it said
                # nothing, as if it were only waiting for a first run)
                failed = [(a, out[a].status) for a in cfg.order() if a in cfg.ancestors(step)
                          and out[a].status in (StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.WAITING)]
                note = "; ".join(x for x in (_upstream_reason(failed) if failed else "",
                                             get_step(step).never_run_note(self.ws)) if x)
                out[step] = StepState(step, spec, StepStatus.NEVER_RUN, note)
                continue
            if run.status == "running":
                # how long, where and how far: a step another process runs (a `cdl run` in a terminal, a tuning
                # job the studio watches) showed "running" and nothing more
                how_far, fraction = _safe_note(get_step(step), self.ws, run)
                note = "; ".join(x for x in (_running_for(run), how_far) if x)
                # its share done, for the flowchart's progress bar (a running step has no summary of its own)
                out[step] = StepState(step, spec, StepStatus.RUNNING, note, last_run=run,
                                      summary={} if fraction is None else {"progress": round(fraction, 4)})
                continue
            since = ""
            if run.status == "failed":
                ok = self._done_despite(cfg, step, run, done)
                cancelled = run_ending(run.status, run.error, run.summary) == StepStatus.CANCELLED.value
                if ok is None and cancelled:
                    # a run a person stopped, of a step whose finished run still matches its inputs (`cdl run
                    # model.tune` again, then Ctrl-C): that run stands, and the next run skips the step ("up to
                    # date"); it showed "cancelled: the next run runs it again", which the next run did not
                    ok = self._done_before(cfg, step, done)
                    if ok is not None:
                        since = "a later run was cancelled; this one's result stands"
                        run = ok
                if ok is None:
                    # the error's first line: the rest is its traceback (`cdl runs STEP`, the Runs dialog show it)
                    # a run a person stopped, or one that waits for a review, is no failure (both showed red, "failed")
                    ending = StepStatus(run_ending(run.status, run.error, run.summary))
                    reason = ("cancelled: the next run runs it again" if ending == StepStatus.CANCELLED
                              else (run.error or "").split("\n", 1)[0])
                    if ending == StepStatus.WAITING:
                        reason = "; ".join(x for x in (reason, get_step(step).waiting_note(self.ws, run)) if x)
                    out[step] = StepState(step, spec, ending, reason, run, run.summary)
                    continue
                if run is not ok:
                    # it failed with inputs cdl.yaml does not give (a refused `cdl data import`, a `--set` run): the
                    # run that did what cdl.yaml asks stands, as `cdl run` (which skips the step) sees it
                    since = (f"a later run with other inputs than cdl.yaml gives failed: "
                             f"{first_line(run.error or 'failed')}")
                    run = ok
            reason = ""
            try:
                fp = self.input_fp(cfg, step, cfg.params(step), done)
            except CdlError as exc:
                fp, reason = "", f"cannot check inputs: {exc}"
            if not fp or not _same_inputs(run, fp, cfg.params(step), step):
                old = run.input_fp.split(".")
                new = fp.split(".")
                impl = get_step(step)
                parts = ["parameters", "upstream outputs", impl.reads]
                changed = [parts[i] for i in range(3) if len(old) == 3 and len(new) == 3 and old[i] != new[i]]
                if "parameters" in changed and same_params(run.params, cfg.params(step), step):
                    changed.remove("parameters")
                which = param_changes(run.params, cfg.params(step), step) if "parameters" in changed else ""
                if which and _loop_trained(step, run.params, cfg.params(step)):
                    which = _LOOP_TRAINED
                if "upstream outputs" in changed:  # which of them: "upstream outputs changed" named none
                    ran = _upstream_changed(store, cfg.upstream(step), done, run)
                    if ran:
                        changed[changed.index("upstream outputs")] = (
                            f"{ran[0]}'s output" if len(ran) == 1 else f"{', '.join(ran)}'s outputs")
                if impl.reads_changed and impl.reads in changed:  # a reason of its own, named when it is the only one
                    changed.remove(impl.reads)
                    reason = reason or ("" if changed else impl.reads_changed)
                reason = reason or f"{' and '.join(changed) or 'inputs'} changed since it ran{which}"
            else:
                bad_up = [u for u in cfg.upstream(step) if out[u].status in (
                    StepStatus.STALE, StepStatus.NEVER_RUN, StepStatus.FAILED, StepStatus.CANCELLED, StepStatus.WAITING)]
                if bad_up:
                    reason = _upstream_reason([(u, out[u].status) for u in bad_up])
                reason = get_step(step).unmet(self.ws) or reason
            if reason and run.status == "drifted":
                # drift stays visible (red) until a new check says otherwise, even when the check is old
                out[step] = StepState(step, spec, StepStatus.DRIFTED, f"drifted at the last check; {reason}", run,
                                      run.summary)
            elif reason:
                out[step] = StepState(step, spec, StepStatus.STALE, reason, run, run.summary)
            else:
                status = StepStatus.DRIFTED if run.status == "drifted" else StepStatus.DONE
                later = get_step(step).done_note(self.ws, run) if status == StepStatus.DONE else ""
                note = "; ".join(x for x in (_undecided(run.summary), since, later) if x)
                out[step] = StepState(step, spec, status, note, run, run.summary)
        return list(out.values())

    def _done_despite(self, cfg: PipelineConfig, step: str, failed, done: Mapping[str, Any]):  # noqa: ANN001, ANN202
        """The step's last done run, where the failed run after it ran with other inputs than cdl.yaml gives now
        while the done one still matches them; else None (the failure is the step's state)."""
        found = self._done_matching(cfg, step, done)
        if found is None:
            return None
        ok, fp = found
        if ok.input_fp == failed.input_fp or _same_inputs(failed, fp, cfg.params(step), step):
            return None
        return ok

    def _done_before(self, cfg: PipelineConfig, step: str, done: Mapping[str, Any]):  # noqa: ANN202
        """The step's last done run where it still matches the inputs cdl.yaml gives; else None."""
        found = self._done_matching(cfg, step, done)
        return found[0] if found is not None else None

    def _done_matching(self, cfg: PipelineConfig, step: str, done: Mapping[str, Any]):  # noqa: ANN202
        """(the step's last done run, the input fingerprint cdl.yaml gives now) where that run matches it; else None."""
        ok = done.get(step)
        if ok is None or ok.status != "done":
            return None
        try:
            fp = self.input_fp(cfg, step, cfg.params(step), done)
        except CdlError:
            return None
        return (ok, fp) if _same_inputs(ok, fp, cfg.params(step), step) else None

    # -- planning -----------------------------------------------------------------------------------------

    def plan(self, cfg: PipelineConfig, steps: list[str] | None = None, until: str | None = None) -> list[str]:
        order = cfg.order()
        for s in [*(steps or []), *([until] if until else [])]:
            if s not in order:
                raise ConfigError(f"step {s!r} is not in this pipeline{did_you_mean(s, order)} "
                                  f"(steps: {', '.join(order)})")
        if until:
            wanted = cfg.ancestors(until) | {until}
            return [s for s in order if s in wanted]
        if steps:
            return [s for s in order if s in steps]
        return order

    # -- running ------------------------------------------------------------------------------------------

    def _emit(self, event: Event) -> None:
        self.bus.emit(event)

    def run(self, steps: list[str] | None = None, until: str | None = None, force: bool = False,
            overrides: Mapping[str, Mapping[str, Any]] | None = None, config: PipelineConfig | None = None) -> JobResult:
        """Run steps (exactly these, forced) or everything up to `until` (skipping what is up to date)."""
        cfg = config or self.ws.config()
        overrides = {k: dict(v) for k, v in (overrides or {}).items()}
        for sid, given in overrides.items():
            if sid not in cfg.steps:
                raise ConfigError(f"override for {sid!r}: not a step of this pipeline"
                                  f"{did_you_mean(sid, list(cfg.steps))}")
            # checked on their own first, so that a wrong value names the override (`--set`, the studio), not
            # cdl.yaml, and stops the run before anything runs
            get_step(sid).spec.resolve_params(given, f"override {sid}")
        plan = self.plan(cfg, steps, until)
        check_plan(cfg, plan, overrides, self.ws)
        with _RunLock(self.ws.root / ".cdl" / "run.lock", self.job, self._waiting, self.cancel) as lock:
            if not lock.held:  # cancelled while it waited
                self._emit(Event(EventKind.JOB_FINISHED, job=self.job, data={"status": "cancelled"}))
                return JobResult(self.job, "cancelled", [StepOutcome(s, "not-run") for s in plan])
            return self._run_plan(cfg, plan, steps, until, force, overrides)

    def _waiting(self, holder: str) -> None:
        self._emit(Event(EventKind.LOG, job=self.job,
                         message=f"waiting for another run in this workspace to finish ({holder})"))

    def _run_plan(self, cfg: PipelineConfig, plan: list[str], steps: list[str] | None, until: str | None,
                  force: bool, overrides: dict[str, dict[str, Any]]) -> JobResult:
        explicit = bool(steps) and not until
        store = self.ws.store
        # the steps of this run see its overrides in each other's parameters too: model.tune reads model.train's
        # framework and template, and searched cdl.yaml's under `cdl run --set model.train.template=mlp`
        cfg = _with(cfg, overrides)
        store.mark_interrupted_runs("the process running this step ended before it finished")
        from runtime.ml.distributed import sweep_stale

        sweep_stale(self.ws.root / ".cdl" / "tmp")  # what a killed distributed model.train left
        self._emit(Event(EventKind.JOB_STARTED, job=self.job, data={"steps": plan}))
        outcomes: list[StepOutcome] = []
        status = "done"
        for n, step in enumerate(plan):
            done = {**store.last_done_runs(), **{s: r for s, r in store.last_step_runs().items() if r.status == "drifted"}}
            if explicit:
                try:
                    needs = get_step(step).needs(cfg.params(step, overrides.get(step)), cfg)
                except CdlError:
                    needs = None
                needs = set(cfg.upstream(step)) if needs is None else needs
                missing = [u for u in needs if u not in done and u not in plan]
                if missing:
                    msg = (f"needs {', '.join(sorted(missing, key=cfg.order().index))} to run first; "
                           f"use `cdl run --until {step}` (the studio: Run up to here)")
                    outcomes.append(StepOutcome(step, "failed", error=msg, message=msg))
                    self._emit(Event(EventKind.FAILED, step=step, job=self.job, message=msg))
                    status = "failed"
                    break
            outcome = self._run_one(cfg, step, overrides.get(step), done, force or explicit)
            outcomes.append(outcome)
            if outcome.status in ("failed", "cancelled"):
                status = outcome.status
                outcomes.extend(StepOutcome(s, "not-run") for s in plan[n + 1 :])
                break
        self._emit(Event(EventKind.JOB_FINISHED, job=self.job, data={"status": status}))
        return JobResult(self.job, status, outcomes)

    def _run_one(self, cfg: PipelineConfig, step: str, override: Mapping[str, Any] | None,
                 done: Mapping[str, Any], force: bool) -> StepOutcome:
        store = self.ws.store
        impl = get_step(step)
        try:
            params = cfg.params(step, override)
            fp = self.input_fp(cfg, step, params, done)
        except Cancelled:  # while its inputs were hashed (a new folder of 100 000 photos is read whole for it)
            return StepOutcome(step, "cancelled", error="cancelled before it started")
        except CdlError as exc:
            self._emit(Event(EventKind.FAILED, step=step, job=self.job, message=str(exc)))
            return StepOutcome(step, "failed", error=str(exc), message=str(exc))
        prev = done.get(step)
        if not force and prev is not None and _same_inputs(prev, fp, params, step) and not impl.unmet(self.ws):
            self._emit(Event(EventKind.SKIPPED, step=step, job=self.job, message="up to date", data=prev.summary))
            return StepOutcome(step, "skipped", summary=prev.summary, message="up to date")
        if self.cancel.is_set():
            return StepOutcome(step, "cancelled", error="cancelled before it started")
        run_id = store.start_step_run(step, self.job, fp, params)
        self._emit(Event(EventKind.STARTED, step=step, job=self.job, message=impl.spec.title,
                         data={"role": impl.spec.role.value}))
        t0 = time.perf_counter()
        ctx = self._ctx(cfg, step, params, override)
        try:
            result = impl.run(ctx)
        except Cancelled:
            dt = time.perf_counter() - t0
            store.finish_step_run(run_id, "failed", error="cancelled")
            self._emit(Event(EventKind.FAILED, step=step, job=self.job, message="cancelled"))
            return StepOutcome(step, "cancelled", dt, error="cancelled", message="cancelled")
        except CdlError as exc:
            dt = time.perf_counter() - t0
            reason = getattr(exc, "reason", None) or str(exc)
            summary = getattr(exc, "summary", None) or {}
            tb = getattr(exc, "traceback", None)  # a UserCodeError's: the user's code failed, and where is theirs
            store.finish_step_run(run_id, "failed", error=f"{reason}\n{tb}" if tb else reason, summary=summary)
            self._emit(Event(EventKind.FAILED, step=step, job=self.job, message=reason,
                             data={**summary, "traceback": tb} if tb else summary))
            return StepOutcome(step, "failed", dt, summary=summary, error=reason, message=reason, traceback=tb,
                               gate=isinstance(exc, GateFailed))
        except Exception as exc:  # a bug or a library error: keep the traceback for the user
            dt = time.perf_counter() - t0
            tb = traceback.format_exc()
            # where the workspace's own code (src/) is in it, that line: "(src/net.py, line 12, in forward)"
            reason = f"{type(exc).__name__}: {exc}{user_code_frame(exc.__traceback__)}"
            store.finish_step_run(run_id, "failed", error=f"{reason}\n{tb}")
            self._emit(Event(EventKind.FAILED, step=step, job=self.job, message=reason, data={"traceback": tb}))
            return StepOutcome(step, "failed", dt, error=reason, message=reason, traceback=tb)
        dt = time.perf_counter() - t0
        status = result.status.value if result.status in (StepStatus.DONE, StepStatus.DRIFTED) else "done"
        summary = dict(result.summary)
        fp_after = None  # the inputs as the step left them, where it changes them itself (Step.changes_own_reads)
        if impl.changes_own_reads:
            with contextlib.suppress(CdlError):
                fp_after = self.input_fp(cfg, step, params, done)
        store.finish_step_run(run_id, status, output_fp=result.output_fp, summary=summary, message=result.message,
                              input_fp=fp_after)
        self._emit(Event(EventKind.FINISHED, step=step, job=self.job, message=result.message,
                         data={"summary": summary, "status": status, "duration": dt}))
        return StepOutcome(step, status, dt, summary=summary, message=result.message)


@contextlib.contextmanager
def holding_workspace(ws: Workspace, what: str, when_busy: str):  # noqa: ANN201
    """The workspace's run lock for `what` (gc, backup) without waiting: beside a pipeline run it raises
    CdlError naming the run, ending with `when_busy` ("run gc when it has finished")."""
    holder: list[str] = []
    stop = threading.Event()
    stop.set()  # do not wait: say who holds the workspace and stop
    with _RunLock(ws.root / ".cdl" / "run.lock", what, holder.append, stop) as lock:
        if not lock.held:
            raise CdlError(f"{ws.root}: a pipeline run holds the workspace ({holder[0] if holder else 'unknown'}); "
                           f"{when_busy}")
        yield


def run_in_progress(ws: Workspace) -> str | None:
    """Who holds the workspace's run lock now ("pid 123, cdl run"), or None."""
    import fcntl

    path = ws.root / ".cdl" / "run.lock"
    if not path.exists():
        return None
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            return fh.read().strip() or "its owner unknown"
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
    return None


class _RunLock:
    """One run of the pipeline at a time in a workspace folder (`.cdl/run.lock`, flock): a `cdl run` in a
    terminal and a studio's job, or the jobs of two studios, wait for each other instead of writing the same
    files at once. The holder writes who it is; a waiting run says so once, then polls (a cancel ends the wait).
    Re-entrant within a process (a step that runs steps). The kernel releases the lock however its holder dies."""

    _held: dict[str, int] = {}
    _guard = threading.Lock()

    def __init__(self, path, job: str | None, on_wait, cancel: threading.Event):  # noqa: ANN001
        self.path, self.job, self.on_wait, self.cancel = path, job, on_wait, cancel
        self.fh = None
        self.nested = False

    def __enter__(self) -> _RunLock:
        import fcntl
        import os

        key = str(self.path)
        with self._guard:
            if self._held.get(key):
                self._held[key] += 1
                self.nested = True
                return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.path, "a+")  # noqa: SIM115 - held until __exit__
        said = False
        while True:
            try:
                fcntl.flock(self.fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    self.fh.seek(0)
                    self.on_wait(self.fh.read().strip() or "its owner unknown")
                    said = True
                if self.cancel.wait(0.5):
                    self.fh.close()
                    self.fh = None
                    return self
        self.fh.seek(0)
        self.fh.truncate()
        who = "a runtime job" if os.environ.get("CDL_EVENT_FD") else "cdl run"  # the runtime's workers set it
        self.fh.write(f"pid {os.getpid()}, {who}" + (f" {self.job}" if self.job else ""))
        self.fh.flush()
        with self._guard:
            self._held[key] = 1
        return self

    @property
    def held(self) -> bool:
        return self.nested or self.fh is not None

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        key = str(self.path)
        with self._guard:
            if self.nested:
                self._held[key] -= 1
                return
            if self.fh is None:  # cancelled while waiting: never held
                return
            self._held.pop(key, None)
        self.fh.close()  # releases the flock


def _param_diffs(then: Mapping[str, Any], now: Mapping[str, Any], step: str | None) -> list[tuple[str, Any, Any]]:
    """(name, old, new) for each parameter that differs between a run's recorded parameters and `now`. A
    parameter the run did not record (one a later release added) that `now` holds at its default is no change:
    a new parameter's default keeps what the step did before it existed, so an upgrade alone reruns nothing."""
    from runtime.steps import get_step, known_steps
    from runtime.store.store import _jsonable

    now = _jsonable(dict(now))
    defaults = ({p.name: _jsonable({"v": p.default})["v"] for p in get_step(step).spec.params}
                if step in known_steps() else {})
    out = []
    for k in sorted(set(then) | set(now)):
        old, new = then.get(k, _UNSET), now.get(k, _UNSET)
        if old == new or (old is _UNSET and k in defaults and new == defaults[k]):
            continue
        out.append((k, old, new))
    return out


def _same_inputs(run, fp: str, params: Mapping[str, Any], step: str) -> bool:  # noqa: ANN001
    """Whether a run's input fingerprint still holds: equal, or equal but for the parameter part where the only
    difference is parameters added since the run at their defaults."""
    if run.input_fp == fp:
        return True
    old, new = run.input_fp.split("."), fp.split(".")
    return len(old) == 3 and len(new) == 3 and old[1:] == new[1:] and same_params(run.params, params, step)


def same_params(then: Mapping[str, Any] | None, now: Mapping[str, Any], step: str) -> bool:
    """Whether a run with recorded parameters `then` ran with what `now` asks for (see `_param_diffs`)."""
    return then is not None and not _param_diffs(then, now, step)


def param_changes(then: Mapping[str, Any] | None, now: Mapping[str, Any], step: str | None = None) -> str:
    """': name old → new; ...' for the parameters that differ between a run and cdl.yaml now; '' where the run
    recorded none (before schema 0007). With `step`, parameters added since the run and left at their
    defaults are not listed."""
    if then is None:
        return ""

    diffs = [change_text(k, old, new) for k, old, new in _param_diffs(then, now, step)]
    if not diffs:
        return ""
    more = f"; and {len(diffs) - 3} more" if len(diffs) > 3 else ""
    return f": {'; '.join(diffs[:3])}{more}"


_UNSET = UNSET

_LOOP_TRAINED = (": it ran with use_tuned off and the champion's parameters, as `cdl loop` retrains (or a --set for "
                 "one run); cdl.yaml has use_tuned on, so the next run tunes on this data and trains with the best "
                 "trial")


def _loop_trained(step: str, then: Mapping[str, Any] | None, now: Mapping[str, Any]) -> bool:
    """Whether model.train's last run differs from cdl.yaml only as `cdl loop` makes it differ: use_tuned off and
    tunable values. The list of those values ("batch_size 32 → 64; dropout 0.16 → 0.3; …") named what cdl.yaml
    says, which a run with use_tuned on does not train with, so that a loop that had just deployed a model left
    model.train stale for reasons that read like somebody's edit."""
    from runtime.ml.common import TUNABLE

    if step != "model.train" or not then or then.get("use_tuned") is not False or not now.get("use_tuned"):
        return False
    return all(k in TUNABLE or k == "use_tuned" for k, _old, _new in _param_diffs(then, now, step))


def step_history(ws, step: str, limit: int = 50) -> dict[str, Any]:  # noqa: ANN001
    """A step's runs, newest first, as an experiment tracker lists runs: when, how long, how it ended, what it
    said, and which parameters it ran with that differ from the run before it."""
    from runtime.steps import known_steps

    if step not in known_steps():
        raise CdlError(f"step {step!r} does not exist{did_you_mean(step, list(known_steps()))} "
                       f"(steps: {', '.join(known_steps())})")
    runs = ws.store.step_runs(step, limit + 1)  # one more: the oldest shown is compared with the one before it
    try:
        upstream = ws.config().upstream(step)
    except CdlError:  # a cdl.yaml that does not parse: the history without the upstream steps' names
        upstream = []
    ups = {u: ws.store.step_runs(u, 500) for u in upstream}
    out = []
    for i, r in enumerate(runs[:limit]):
        before = runs[i + 1] if i + 1 < len(runs) else None
        if before is None:
            changed = "first run" if len(runs) <= limit else ""
        elif r.params is None or before.params is None:
            changed = ""  # recorded before schema 0007
        else:
            changed = param_changes(_ran_with(before, step), _ran_with(r, step), step).removeprefix(": ")
            if not changed:
                changed = _same_params(r, before, _which_inputs(step, r, before, ups))
            elif _inputs_moved(r, before):  # new data as well as new parameters: it named the parameters alone
                changed += f"; and {_which_inputs(step, r, before, ups)}"
        out.append({"id": r.id, "status": run_ending(r.status, r.error, r.summary), "started": r.started.isoformat(),
                    "finished": r.finished.isoformat() if r.finished else None,
                    "seconds": round(r.duration, 2) if r.duration is not None else None, "job": r.job,
                    "message": r.message or "", "error": (r.error or "").split("\n", 1)[0],
                    # the rest of a failed run's error: the traceback of a bug, or of the workspace's own code
                    "traceback": (r.error or "").split("\n", 1)[1].strip() or None if "\n" in (r.error or "") else None,
                    "changed": changed, "params": r.params, "output": (r.output_fp or "")[:12]})
    return {"step": step, "runs": out}


def _inputs_moved(run: Any, before: Any) -> bool:  # noqa: ANN401
    """Whether what a run read (upstream outputs, the step's own reads) differs from the run before it, parameters
    aside: an input fingerprint is "params.upstream.reads"."""
    a, b = (run.input_fp or "").split("."), (before.input_fp or "").split(".")
    return len(a) == 3 and len(b) == 3 and a[1:] != b[1:]


def _ran_with(run: Any, step: str) -> dict[str, Any]:  # noqa: ANN401
    """The parameters a run ran with: model.train's with use_tuned on trained with model.tune's best values, not
    cdl.yaml's, so that its history compared the configured ones ("batch_size 64 → 32", between two runs that both
    trained with 32)."""
    params = dict(run.params)
    if step == "model.train" and params.get("use_tuned"):
        params.update((run.summary or {}).get("tuned") or {})
    return params


def _same_params(run: Any, before: Any, inputs: str = "its inputs changed") -> str:  # noqa: ANN401
    """Why a run with the parameters of the run before it ran at all (the history said nothing, as if nothing had
    happened between them)."""
    if before.status not in ("done", "drifted"):
        what = run_ending(before.status, before.error, before.summary)
        if what == StepStatus.WAITING:
            return "again after a run that waited for a person (same parameters)"
        return f"again after a {what} run (same parameters)"
    if run.input_fp != before.input_fp:
        return f"{inputs} (same parameters)"  # upstream outputs, or what the step reads
    return "nothing (forced)"


def _output_at(rs: list[Any], when: Any) -> str | None:  # noqa: ANN401
    """The output a step's runs (rs) offered at a time: that of its last done run finished by then."""
    done = [x for x in rs if x.status in ("done", "drifted") and x.finished is not None and x.finished <= when]
    return max(done, key=lambda x: x.finished).output_fp if done else None


def _upstream_changed(store: Any, upstream: list[str], done: Mapping[str, Any], run: Any) -> list[str]:  # noqa: ANN401
    """The upstream steps whose output now is not the one they offered when the run started: the stale reason
    names them ("model.preprocess's output changed since it ran"); empty where the runs do not tell."""
    if run.started is None:
        return []
    return [u for u in upstream
            if (done[u].output_fp if u in done else None) != _output_at(store.step_runs(u, 500), run.started)]


def _which_inputs(step: str, run: Any, before: Any, ups: Mapping[str, list[Any]]) -> str:  # noqa: ANN401
    """What changed between two runs with the same parameters, from the input fingerprint's parts ("params.upstream.
    reads"): the upstream steps that ran between them ("model.tune ran again since, with another output"), and what the step
    reads itself ("labels changed"). It said "its inputs changed" whichever it was."""
    a, b = (run.input_fp or "").split("."), (before.input_fp or "").split(".")
    if len(a) != 3 or len(b) != 3:
        return "its inputs changed"
    said = []
    if a[1] != b[1]:
        ran = [u for u, rs in ups.items() if _output_at(rs, run.started) != _output_at(rs, before.started)]
        said.append(f"{' and '.join(ran)} ran again since, with another output" if ran
                    else "its upstream steps' output changed")
    if a[2] != b[2]:
        said.append(f"{get_step(step).reads} changed")
    return " and ".join(said) or "its inputs changed"


def _undecided(summary: dict[str, Any] | None) -> str:
    """A drift check that had too few records to test is "done", not a clean bill of health: say so, as the
    monitoring panel does, wherever the step's state shows (the node's header, `cdl status`)."""
    checks = (summary or {}).get("checks") or []
    if not isinstance(checks, list) or not any(isinstance(c, dict) and not c.get("tests") for c in checks):
        return ""
    from runtime.monitor import verdict

    status, line = verdict(checks)
    return line if status in ("no-verdict", "no-drift") else ""


def check_plan(cfg: PipelineConfig, plan: list[str], overrides: Mapping[str, Mapping[str, Any]] | None = None,
               ws: Any = None) -> None:  # noqa: ANN401
    """Each planned step's own rules (a search space, compression options; with `ws`, the devices it names) before
    anything runs (`cdl run`, a job the studio submits): a hand-edited cdl.yaml was checked only when its step
    started, after the steps before it had run. Raises ConfigError naming the field."""
    for sid in plan:
        params = cfg.params(sid, (overrides or {}).get(sid))
        get_step(sid).check_params(params)
        get_step(sid).check_in(params, _with(cfg, overrides))
        if ws is not None:
            get_step(sid).check_here(params, ws)


def _with(cfg: PipelineConfig, overrides: Mapping[str, Mapping[str, Any]] | None) -> PipelineConfig:
    """The pipeline as this run sees it: cdl.yaml with the run's overrides (a step checks another's parameters)."""
    if not overrides:
        return cfg
    out = cfg.copy()
    for sid, values in overrides.items():
        if sid in out.steps:
            out.steps[sid] = {**out.steps[sid], **values}
    return out


def _running_for(run: Any) -> str:  # noqa: ANN401
    """"for 7 min, process 13359" (", on HOST" where another machine runs it)."""
    import socket
    from datetime import UTC, datetime

    secs = max(0.0, (datetime.now(UTC) - run.started).total_seconds())
    took = f"{secs:.0f} s" if secs < 90 else f"{secs / 60:.0f} min" if secs < 5400 else f"{secs / 3600:.1f} h"
    where = f"process {run.pid}" if run.pid else ""
    if run.host and run.host != socket.gethostname():
        where += f" on {run.host}"
    return f"for {took}" + (f", {where}" if where else "")


def _safe_note(impl: Any, ws: Workspace, run: Any) -> tuple[str, float | None]:  # noqa: ANN401
    """The step's running_note; a registry the running process is writing may refuse a read for a moment, and a
    status must not fail for it."""
    try:
        return impl.running_note(ws, run)
    except Exception:  # noqa: BLE001 - progress is a courtesy
        return "", None


def _upstream_reason(bad: list[tuple[str, StepStatus]]) -> str:
    """"upstream model.preprocess is stale; model.tune failed": each step with what it really is (a list of steps
    used to take the first one's status, so a failed one read as stale)."""
    words = {StepStatus.STALE: ("is stale", "are stale"), StepStatus.NEVER_RUN: ("has never run", "have never run"),
             StepStatus.FAILED: ("failed", "failed"), StepStatus.CANCELLED: ("was cancelled", "were cancelled"),
             StepStatus.WAITING: ("waits for a person", "wait for a person")}
    parts = []
    for status, (one, many) in words.items():
        steps = [u for u, st in bad if st == status]
        if steps:
            parts.append(f"{', '.join(steps)} {one if len(steps) == 1 else many}")
    return "upstream " + "; ".join(parts)
