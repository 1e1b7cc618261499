"""Store methods of the deployment pipeline: variants, devices, deployments. Mixed into `Store`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select

from runtime.domain.entities import Deployment, Device, Variant
from runtime.domain.errors import NotFoundError
from runtime.domain.steps import StepStatus, run_ending
from runtime.store import tables as t
from runtime.store.models import _aware


def _variant(r: t.SqlVariant) -> Variant:
    return Variant(r.name, r.version, r.variant, r.method, r.status, r.artifact, r.size_bytes, dict(r.params or {}),
                   dict(r.metrics or {}), r.message, r.bundle, _aware(r.created))


def _device(r: t.SqlDevice) -> Device:
    return Device(r.name, r.address, r.token, r.cert_fingerprint, r.enroll_dir, _aware(r.created),
                  _aware(r.last_seen), dict(r.last_health or {}))


def _deployment(r: t.SqlDeployment) -> Deployment:
    return Deployment(r.id or 0, r.device, r.action, r.name, r.version, r.variant, r.bundle, r.status, r.message,
                      _aware(r.time))


class DeployMixin:
    def put_variant(self, name: str, version: int, variant: str, **fields: Any) -> Variant:
        from runtime.store.store import _jsonable

        with self._lock, self.session() as s:
            row = s.execute(select(t.SqlVariant).where(t.SqlVariant.name == name, t.SqlVariant.version == version,
                                                       t.SqlVariant.variant == variant)).scalar_one_or_none()
            if row is None:
                row = t.SqlVariant(name=name, version=version, variant=variant, method=fields.get("method", variant),
                                   status=fields.get("status", "ok"))
            for k, v in fields.items():
                if k in ("params", "metrics"):
                    merged = dict(getattr(row, k) or {}) if k == "metrics" else {}
                    merged.update(_jsonable(v))
                    v = merged
                setattr(row, k, v)
            row.created = t.utcnow()
            s.add(row)
            s.commit()
            s.refresh(row)
            return _variant(row)

    def variants(self, name: str, version: int) -> list[Variant]:
        with self.session() as s:
            q = select(t.SqlVariant).where(t.SqlVariant.name == name, t.SqlVariant.version == version).order_by(
                t.SqlVariant.id)
            return [_variant(r) for r in s.execute(q).scalars()]

    def variant(self, name: str, version: int, variant: str) -> Variant:
        with self.session() as s:
            r = s.execute(select(t.SqlVariant).where(t.SqlVariant.name == name, t.SqlVariant.version == version,
                                                     t.SqlVariant.variant == variant)).scalar_one_or_none()
            if r is None:
                all_ = self.variants(name, version)
                if not all_:
                    raise NotFoundError(no_variants(f"{name}:{version}", review_waits_on(self)))
                known = ", ".join(v.variant for v in all_ if v.status == "ok") or "none"
                skipped = ", ".join(v.variant for v in all_ if v.status != "ok")
                raise NotFoundError(f"{name}:{version} has no variant {variant!r} (built: {known}"
                                    + (f"; not built: {skipped}" if skipped else "")
                                    + "); deploy.compress makes the variants cdl.yaml lists")
            return _variant(r)

    def add_device(self, **fields: Any) -> Device:
        with self._lock, self.session() as s:
            row = t.SqlDevice(**fields)
            s.merge(row)
            s.commit()
        return self.device(fields["name"])

    def device(self, name: str) -> Device:
        with self.session() as s:
            r = s.get(t.SqlDevice, name)
            if r is None:
                known = ", ".join(d.name for d in self.devices()) or "none enrolled"
                said = f"device {name!r} is not enrolled (devices: {known})"
                # one removed from the workspace: said, with when (it read as a name never enrolled)
                gone = s.execute(select(t.SqlDeployment).where(t.SqlDeployment.device == name,
                                                               t.SqlDeployment.action == "remove")
                                 .order_by(t.SqlDeployment.id.desc()).limit(1)).scalars().first()
                if gone is not None:
                    from runtime.domain.text import local_time

                    said += (f"; it was removed from this workspace {local_time(gone.time, seconds=False)} (`cdl "
                             f"devices history {name}`; `cdl devices enroll {name} --address HOST:PORT` brings it back)")
                raise NotFoundError(said)
            return _device(r)

    def devices(self) -> list[Device]:
        with self.session() as s:
            return [_device(r) for r in s.execute(select(t.SqlDevice).order_by(t.SqlDevice.name)).scalars()]

    def remove_device(self, name: str, message: str | None = None) -> Device:
        """Forget a device (its token and certificate fingerprint); its deployment history stays. message: the
        history's "remove" row, written in the same transaction (a reader never sees the device gone without it)."""
        with self._lock, self.session() as s:
            r = s.get(t.SqlDevice, name)
            if r is None:
                raise NotFoundError(f"device {name!r} is not enrolled")
            dev = _device(r)
            s.execute(delete(t.SqlDevice).where(t.SqlDevice.name == name))
            if message is not None:
                s.add(t.SqlDeployment(device=name, action="remove", status="done", message=message))
            s.commit()
            return dev

    def update_device(self, name: str, **fields: Any) -> None:
        from runtime.store.store import _jsonable

        with self._lock, self.session() as s:
            r = s.get(t.SqlDevice, name)
            for k, v in fields.items():
                setattr(r, k, _jsonable(v) if k == "last_health" else v)
            s.add(r)
            s.commit()

    def add_deployment(self, **fields: Any) -> Deployment:
        with self._lock, self.session() as s:
            row = t.SqlDeployment(**fields)
            s.add(row)
            s.commit()
            s.refresh(row)
            return _deployment(row)

    def deployments(self, device: str | None = None) -> list[Deployment]:
        with self.session() as s:
            q = select(t.SqlDeployment).order_by(t.SqlDeployment.id)
            if device:
                q = q.where(t.SqlDeployment.device == device)
            return [_deployment(r) for r in s.execute(q).scalars()]


def no_variants(ref: str, review_waits_on: str | None = None) -> str:
    """What a model version without variants says (`cdl package`, `cdl deploy`, `cdl models variants`): which
    version deploy.compress works on, and the command that makes this one's. It said "has no variant 'fp32'
    (built: none)", and `cdl models variants` printed the name alone. Where model.review waits for a candidate's
    review (`review_waits_on`), a run up to deploy.revise stops there, so the command given did nothing for the
    champion while a challenger waited: the steps run one at a time instead."""
    out = (f"{ref} has no variants: deploy.export and deploy.compress make them for the version deploy.export's "
           f"model parameter names (champion unless cdl.yaml says otherwise); for this one: "
           f"`cdl run --until deploy.revise --set deploy.export.model={ref}`")
    if review_waits_on:
        out += (f"; but model.review waits for {review_waits_on}'s review, and that run stops there: review it "
                f"first (`cdl models review {review_waits_on} --approve|--reject --comment TEXT --reviewer NAME`), "
                f"or run the three steps on their own: `cdl run deploy.export --set deploy.export.model={ref}`, "
                "then `cdl run deploy.compress` and `cdl run deploy.revise`")
    return out


def review_waits_on(store: Any) -> str | None:  # noqa: ANN401 - the workspace's Store
    """The candidate model.review's last run waits for, while it still has no review; None where nothing waits."""
    run = store.last_step_run("model.review")
    if run is None or run_ending(run.status, run.error, run.summary) != StepStatus.WAITING.value:
        return None
    ref = str((run.summary or {}).get("candidate") or "")  # recorded by model.review's waiting run
    name, _, version = ref.rpartition(":")
    if not name or not version.isdigit() or store.reviews(name, int(version)):
        return None
    return ref
