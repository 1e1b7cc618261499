"""Store methods of the model pipeline: transforms, experiments, trials, metrics, model versions, aliases,
reviews, jobs and their events. Mixed into `Store`; the same contract holds."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, update

from runtime.domain.entities import (
    AliasRecord,
    Experiment,
    JobRecord,
    ModelVersion,
    Review,
    TransformRecord,
    Trial,
)
from runtime.domain.errors import CdlError, NotFoundError
from runtime.domain.processes import pid_alive
from runtime.domain.steps import was_cancelled
from runtime.store import tables as t


def fail_orphan_trials(s: Any, experiments: Any, now: datetime, state: str = "failed") -> int:
    """In session `s`: the running trials of `experiments` (a select of experiment ids) that no live process
    runs are failed. A trial's worker is "host:pid"; one on another host is left to that host (the tuning
    heartbeat catches it if it dies), and one with no worker recorded is failed."""
    here = socket.gethostname()
    trials = s.execute(select(t.SqlTrial).where(t.SqlTrial.state == "running",
                                                t.SqlTrial.experiment_id.in_(experiments))).scalars().all()
    failed = 0
    for tr in trials:
        host, _, pid = (tr.worker or "").rpartition(":")
        if not tr.worker or (host == here and not pid_alive(int(pid) if pid.isdigit() else 0)):
            tr.state, tr.finished = state, now
            s.add(tr)
            failed += 1
    return failed


def _aware(dt: datetime | None) -> datetime | None:
    from datetime import UTC

    if dt is None:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _exp(r: t.SqlExperiment) -> Experiment:
    return Experiment(r.id or 0, r.name, r.kind, r.step, r.job, r.dataset_version, r.transform, r.framework,
                      r.template, r.study, r.git_commit, r.git_dirty, r.status, _aware(r.created),
                      _aware(r.finished), dict(r.summary or {}))


def _trial(r: t.SqlTrial) -> Trial:
    return Trial(r.id or 0, r.experiment_id, r.number, dict(r.params or {}), r.state, r.value, r.epochs,
                 _aware(r.started), _aware(r.finished), r.worker, r.retry_of)


def _review(r: t.SqlReview) -> Review:
    return Review(r.name, r.version, r.reviewer, r.decision, r.comment, r.automatic, _aware(r.created))


def _job(r: t.SqlJob) -> JobRecord:
    return JobRecord(r.id, r.status, dict(r.spec or {}), _aware(r.created), _aware(r.started),
                     _aware(r.finished), r.error, r.pid, r.host, r.runtime_pid)


def parse_ref(ref: str) -> tuple[str, int | str | None]:
    """'name:3' -> (name, 3); 'name@champion' or 'name:champion' -> (name, 'champion'); 'name' or 'name:latest'
    -> (name, None), the newest version (`cdl package` took `bbc:latest`, and `models predict` said "no version with
    alias 'latest'")."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, None if alias == "latest" else alias
    if ":" in ref:
        name, v = ref.split(":", 1)
        return name, int(v) if v.isdigit() else None if v == "latest" else v
    return ref, None


class ModelRegistryMixin:
    # provided by Store
    def session(self): ...  # noqa: ANN201, D102

    # -- transforms ---------------------------------------------------------------------------------------

    def get_transform(self, key: str) -> TransformRecord | None:
        with self.session() as s:
            r = s.get(t.SqlTransform, key)
            if r is None:
                return None
            return TransformRecord(r.key, r.dataset_version, r.spec_hash, dict(r.spec), r.path, dict(r.stats),
                                   _aware(r.created))

    def transforms(self) -> list[TransformRecord]:
        with self.session() as s:
            return [TransformRecord(r.key, r.dataset_version, r.spec_hash, dict(r.spec), r.path, dict(r.stats),
                                    _aware(r.created))
                    for r in s.execute(select(t.SqlTransform).order_by(t.SqlTransform.created)).scalars()]

    def put_transform(self, key: str, dataset_version: str, spec_hash: str, spec: dict[str, Any], path: str,
                      stats: dict[str, Any]) -> None:
        from runtime.store.store import _jsonable

        with self._lock, self.session() as s:
            s.merge(t.SqlTransform(key=key, dataset_version=dataset_version, spec_hash=spec_hash,
                                   spec=_jsonable(spec), path=path, stats=_jsonable(stats)))
            s.commit()

    # -- experiments, trials, metrics ---------------------------------------------------------------------

    def create_experiment(self, **fields: Any) -> Experiment:
        with self._lock, self.session() as s:
            n = s.execute(select(func.count()).select_from(t.SqlExperiment).where(
                t.SqlExperiment.kind == fields["kind"])).scalar_one()
            fields.setdefault("name", f"{fields['kind']}-{n + 1}")
            row = t.SqlExperiment(**fields)
            s.add(row)
            s.commit()
            s.refresh(row)
            return _exp(row)

    def finish_experiment(self, exp_id: int, status: str, summary: dict[str, Any] | None = None) -> None:
        from runtime.store.store import _jsonable

        with self._lock, self.session() as s:
            row = s.get(t.SqlExperiment, exp_id)
            row.status = status
            row.finished = t.utcnow()
            if summary is not None:
                row.summary = _jsonable(summary)
            s.add(row)
            s.commit()

    def update_experiment_study(self, exp_id: int, study: str) -> None:
        with self._lock, self.session() as s:
            row = s.get(t.SqlExperiment, exp_id)
            row.study = study
            s.add(row)
            s.commit()

    def experiments(self) -> list[Experiment]:
        with self.session() as s:
            return [_exp(r) for r in s.execute(select(t.SqlExperiment).order_by(t.SqlExperiment.id)).scalars()]

    def experiment(self, exp_id: int) -> Experiment:
        with self.session() as s:
            r = s.get(t.SqlExperiment, exp_id)
            if r is None:
                raise NotFoundError(f"experiment {exp_id} does not exist")
            return _exp(r)

    def create_trial(self, experiment_id: int, number: int, params: dict[str, Any],
                     worker: str | None = None, retry_of: int | None = None) -> Trial:
        from runtime.store.store import _jsonable

        with self._lock, self.session() as s:
            row = t.SqlTrial(experiment_id=experiment_id, number=number, params=_jsonable(params), worker=worker,
                             retry_of=retry_of)
            s.add(row)
            s.commit()
            s.refresh(row)
            return _trial(row)

    def finish_trial(self, trial_id: int, state: str, value: float | None, epochs: int) -> None:
        with self._lock, self.session() as s:
            row = s.get(t.SqlTrial, trial_id)
            row.state, row.value, row.epochs, row.finished = state, value, epochs, t.utcnow()
            s.add(row)
            s.commit()

    def trials(self, experiment_id: int) -> list[Trial]:
        with self.session() as s:
            q = select(t.SqlTrial).where(t.SqlTrial.experiment_id == experiment_id).order_by(t.SqlTrial.number)
            return [_trial(r) for r in s.execute(q).scalars()]

    def trial(self, trial_id: int) -> Trial:
        with self.session() as s:
            r = s.get(t.SqlTrial, trial_id)
            if r is None:
                raise NotFoundError(f"trial {trial_id} does not exist")
            return _trial(r)

    def log_metrics(self, trial_id: int, epoch: int, values: dict[str, float]) -> None:
        rows = [{"trial_id": trial_id, "epoch": epoch, "name": k, "value": float(v)} for k, v in values.items()]
        with self._lock, self.session() as s:
            s.execute(insert(t.SqlMetric), rows)
            s.execute(update(t.SqlTrial).where(t.SqlTrial.id == trial_id).values(epochs=epoch))
            s.commit()

    def metrics(self, trial_id: int) -> list[dict[str, Any]]:
        """Per-epoch metrics of a trial: [{"epoch": 1, "train_loss": ..., "val_accuracy": ...}, ...]."""
        with self.session() as s:
            q = select(t.SqlMetric).where(t.SqlMetric.trial_id == trial_id).order_by(t.SqlMetric.epoch, t.SqlMetric.id)
            out: dict[int, dict[str, Any]] = {}
            for r in s.execute(q).scalars():
                out.setdefault(r.epoch, {"epoch": r.epoch})[r.name] = r.value
            return [out[e] for e in sorted(out)]

    # -- model versions -----------------------------------------------------------------------------------

    def register_model(self, name: str, **fields: Any) -> ModelVersion:
        from runtime.store.store import _jsonable

        with self._lock, self.session() as s:
            n = s.execute(select(func.max(t.SqlModelVersion.version)).where(t.SqlModelVersion.name == name)).scalar_one_or_none() or 0
            for k in ("params", "metrics", "evaluation", "artifacts", "extra", "classes"):
                if k in fields:
                    fields[k] = _jsonable(fields[k])
            row = t.SqlModelVersion(name=name, version=n + 1, **fields)
            s.add(row)
            s.commit()
        return self.model_version(name, n + 1)

    def update_model(self, name: str, version: int, **fields: Any) -> ModelVersion:
        from runtime.store.store import _jsonable

        with self._lock, self.session() as s:
            row = s.execute(select(t.SqlModelVersion).where(t.SqlModelVersion.name == name,
                                                            t.SqlModelVersion.version == version)).scalar_one()
            for k, v in fields.items():
                if k in ("metrics", "evaluation", "artifacts", "extra"):
                    merged = dict(getattr(row, k) or {})
                    merged.update(_jsonable(v))
                    v = merged
                setattr(row, k, v)
            s.add(row)
            s.commit()
        return self.model_version(name, version)

    def _aliases_now(self, s, name: str) -> dict[int, list[str]]:  # noqa: ANN001
        q = select(t.SqlAlias).where(t.SqlAlias.name == name, t.SqlAlias.until.is_(None))
        out: dict[int, list[str]] = {}
        for r in s.execute(q).scalars():
            out.setdefault(r.version, []).append(r.alias)
        return out

    def _mv(self, s, r: t.SqlModelVersion, aliases: dict[int, list[str]] | None = None) -> ModelVersion:  # noqa: ANN001
        aliases = aliases if aliases is not None else self._aliases_now(s, r.name)
        return ModelVersion(r.name, r.version, r.framework, r.template, r.dataset_version, r.transform,
                            r.experiment_id, r.trial_id, r.tune_experiment_id, dict(r.params or {}),
                            dict(r.metrics or {}), dict(r.evaluation or {}), dict(r.artifacts or {}),
                            r.git_commit, r.git_dirty, list(r.classes or []), _aware(r.created),
                            tuple(sorted(aliases.get(r.version, []))), dict(r.extra or {}))

    def model_versions(self, name: str | None = None) -> list[ModelVersion]:
        with self.session() as s:
            q = select(t.SqlModelVersion).order_by(t.SqlModelVersion.name, t.SqlModelVersion.version)
            if name:
                q = q.where(t.SqlModelVersion.name == name)
            rows = list(s.execute(q).scalars())
            cache: dict[str, dict[int, list[str]]] = {}
            out = []
            for r in rows:
                if r.name not in cache:
                    cache[r.name] = self._aliases_now(s, r.name)
                out.append(self._mv(s, r, cache[r.name]))
            return out

    def model_version(self, name: str, version: int | str | None = None) -> ModelVersion:
        """By number, by alias ('champion'), or the newest when version is None."""
        with self.session() as s:
            if isinstance(version, str):
                r = s.execute(select(t.SqlAlias).where(t.SqlAlias.name == name, t.SqlAlias.alias == version,
                                                       t.SqlAlias.until.is_(None))).scalar_one_or_none()
                if r is None:
                    if not self.model_versions(name):
                        raise NotFoundError(self._no_model(name))
                    from runtime.domain.errors import did_you_mean

                    held = sorted({a for v in self.model_versions(name) for a in v.aliases} | {"latest"})
                    raise NotFoundError(f"model {name} has no version with alias {version!r}"
                                        f"{did_you_mean(version, held)}; its aliases: {', '.join(held)}")
                version = r.version
            q = select(t.SqlModelVersion).where(t.SqlModelVersion.name == name)
            q = q.where(t.SqlModelVersion.version == version) if version is not None else q.order_by(
                t.SqlModelVersion.version.desc()).limit(1)
            row = s.execute(q).scalars().first()
            if row is None:
                versions = sorted(m.version for m in self.model_versions(name))
                if versions:  # the model exists, this version does not
                    have = f"versions {versions[0]} to {versions[-1]}" if len(versions) > 1 else "version 1"
                    raise NotFoundError(f"model {name} has no version {version} ({have})")
                raise NotFoundError(self._no_model(name))
            return self._mv(s, row)

    def _no_model(self, name: str) -> str:
        known = sorted({m.name for m in self.model_versions()})
        said = f"model {name!r} does not exist (models: {', '.join(known) or 'none yet'})"
        if known and name in ("champion", "challenger", "latest"):  # an alias alone, as deploy.export's model takes it
            said += f"; an alias goes after its model's name: {known[0]}@{name}"
        return said

    def resolve_model(self, ref: str) -> ModelVersion:
        name, version = parse_ref(ref)
        if not name:
            raise CdlError(f"{ref!r}: expected NAME:VERSION, NAME@ALIAS or NAME")
        return self.model_version(name, version)

    def set_alias(self, name: str, alias: str, version: int, reason: str = "") -> None:
        """Move an alias to a version; the history keeps who held it and when."""
        now = t.utcnow()
        with self._lock, self.session() as s:
            cur = s.execute(select(t.SqlAlias).where(t.SqlAlias.name == name, t.SqlAlias.alias == alias,
                                                     t.SqlAlias.until.is_(None))).scalars().all()
            if any(c.version == version for c in cur):
                return
            for c in cur:
                c.until = now
                s.add(c)
            s.add(t.SqlAlias(name=name, alias=alias, version=version, since=now, reason=reason))
            s.commit()

    def remove_alias(self, name: str, alias: str, version: int | None = None) -> None:
        now = t.utcnow()
        with self._lock, self.session() as s:
            q = select(t.SqlAlias).where(t.SqlAlias.name == name, t.SqlAlias.alias == alias, t.SqlAlias.until.is_(None))
            for c in s.execute(q).scalars().all():
                if version is None or c.version == version:
                    c.until = now
                    s.add(c)
            s.commit()

    def delete_model_version(self, name: str, version: int) -> None:
        """A model version and its variants go, in one transaction; the aliases it held end now (their history,
        and its reviews, stay). Its artifacts stay until `cdl gc`, which finds nothing refers to them."""
        now = t.utcnow()
        with self._lock, self.session() as s:
            row = s.execute(select(t.SqlModelVersion).where(t.SqlModelVersion.name == name,
                                                            t.SqlModelVersion.version == version)).scalar_one_or_none()
            if row is None:
                raise NotFoundError(f"model {name} has no version {version}")
            for c in s.execute(select(t.SqlAlias).where(t.SqlAlias.name == name, t.SqlAlias.version == version,
                                                        t.SqlAlias.until.is_(None))).scalars().all():
                c.until = now
                s.add(c)
            s.execute(delete(t.SqlVariant).where(t.SqlVariant.name == name, t.SqlVariant.version == version))
            s.delete(row)
            s.commit()

    def alias_history(self, name: str) -> list[AliasRecord]:
        with self.session() as s:
            q = select(t.SqlAlias).where(t.SqlAlias.name == name).order_by(t.SqlAlias.id)
            return [AliasRecord(r.name, r.alias, r.version, _aware(r.since), _aware(r.until), r.reason)
                    for r in s.execute(q).scalars()]

    def add_review(self, name: str, version: int, reviewer: str, decision: str, comment: str,
                   automatic: bool = False) -> Review:
        with self._lock, self.session() as s:
            row = t.SqlReview(name=name, version=version, reviewer=reviewer, decision=decision, comment=comment,
                              automatic=automatic)
            s.add(row)
            s.commit()
            s.refresh(row)
            return _review(row)

    def reviews(self, name: str, version: int | None = None) -> list[Review]:
        with self.session() as s:
            q = select(t.SqlReview).where(t.SqlReview.name == name)
            if version is not None:
                q = q.where(t.SqlReview.version == version)
            return [_review(r) for r in s.execute(q.order_by(t.SqlReview.id)).scalars()]

    # -- jobs ---------------------------------------------------------------------------------------------

    def create_job(self, job_id: str, spec: dict[str, Any]) -> JobRecord:
        from runtime.store.store import _jsonable

        with self._lock, self.session() as s:
            row = t.SqlJob(id=job_id, spec=_jsonable(spec), host=socket.gethostname(), runtime_pid=os.getpid())
            s.add(row)
            s.commit()
            s.refresh(row)
            return _job(row)

    def update_job(self, job_id: str, **fields: Any) -> None:
        with self._lock, self.session() as s:
            row = s.get(t.SqlJob, job_id)
            if row is None:
                raise NotFoundError(f"job {job_id} does not exist")
            for k, v in fields.items():
                setattr(row, k, v)
            s.add(row)
            s.commit()

    def job(self, job_id: str) -> JobRecord:
        with self.session() as s:
            row = s.get(t.SqlJob, job_id)
            if row is None:
                raise NotFoundError(f"job {job_id} does not exist")
            return _job(row)

    def jobs(self, limit: int = 100) -> list[JobRecord]:
        with self.session() as s:
            q = select(t.SqlJob).order_by(t.SqlJob.created.desc()).limit(limit)
            return [_job(r) for r in s.execute(q).scalars()]

    def add_job_events(self, events: Sequence[dict[str, Any]]) -> None:
        if not events:
            return
        from runtime.store.store import _jsonable

        rows = [{"job": e["job"], "seq": e["seq"], "kind": e["kind"], "step": e.get("step"),
                 "fraction": e.get("fraction"), "message": e.get("message", ""),
                 "data": _jsonable(e.get("data") or {}), "time": e.get("time", 0.0)} for e in events]
        with self._lock, self.session() as s:
            s.execute(insert(t.SqlJobEvent), rows)
            s.commit()

    def job_events(self, job_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        with self.session() as s:
            q = select(t.SqlJobEvent).where(t.SqlJobEvent.job == job_id, t.SqlJobEvent.seq > after_seq).order_by(
                t.SqlJobEvent.seq)
            return [{"job": r.job, "seq": r.seq, "kind": r.kind, "step": r.step, "fraction": r.fraction,
                     "message": r.message, "data": dict(r.data or {}), "time": r.time}
                    for r in s.execute(q).scalars()]

    def fail_job_runs(self, job_id: str, reason: str) -> int:
        """Step runs a killed job left 'running' are failed with the reason, with its experiments and their
        running trials that no live process runs (as `mark_interrupted_runs` does: a `cdl tune worker` still at
        a trial of the job's study finishes it, then sees the study closed)."""
        with self._lock, self.session() as s:
            q = select(t.SqlStepRun).where(t.SqlStepRun.job == job_id, t.SqlStepRun.status == "running")
            rows = s.execute(q).scalars().all()
            for r in rows:
                r.status, r.error, r.finished = "failed", reason, t.utcnow()
                s.add(r)
            # a job a person cancelled leaves its study and trials cancelled, as a cancel the step saw does
            state = "cancelled" if was_cancelled(reason) else "failed"
            fail_orphan_trials(s, select(t.SqlExperiment.id).where(t.SqlExperiment.job == job_id), t.utcnow(), state)
            s.execute(update(t.SqlExperiment).where(t.SqlExperiment.job == job_id,
                                                    t.SqlExperiment.status == "running")
                      .values(status=state, finished=t.utcnow()))
            s.commit()
            return len(rows)

    def delete_job_events_before(self, when: datetime) -> None:  # housekeeping
        with self._lock, self.session() as s:
            old = select(t.SqlJob.id).where(t.SqlJob.finished < when)
            s.execute(delete(t.SqlJobEvent).where(t.SqlJobEvent.job.in_(old)))
            s.commit()
