"""The gRPC servicer of the runtime process: thin, maps domain errors to status codes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc

from runtime import __version__
from runtime.domain.errors import CdlError, ConfigError, NotFoundError
from runtime.jobs.manager import JobManager, job_dict
from runtime.jobs.runner import Runner
from runtime.proto import runtime_pb2 as pb
from runtime.proto import runtime_pb2_grpc as pb_grpc


def _abort(context: grpc.ServicerContext, exc: Exception) -> None:
    if isinstance(exc, NotFoundError):
        context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
    if isinstance(exc, ConfigError):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))


def parse_overrides(flat: dict[str, str]) -> dict[str, dict[str, Any]]:
    import yaml

    out: dict[str, dict[str, Any]] = {}
    for key, value in flat.items():
        step, _, param = key.rpartition(".")
        if not step or not param:
            raise ConfigError(f"override {key!r}: expected STEP.PARAM")
        try:
            out.setdefault(step, {})[param] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            from runtime.workspace.config import yaml_problem

            raise ConfigError(f"override {key!r}: not valid YAML at {yaml_problem(exc)}") from None
    return out


def event_pb(e: dict[str, Any]) -> pb.JobEvent:
    return pb.JobEvent(seq=e["seq"], job_id=e["job"], kind=e["kind"], step=e.get("step") or "",
                       has_fraction=e.get("fraction") is not None, fraction=e.get("fraction") or 0.0,
                       message=e.get("message") or "", data_json=json.dumps(e.get("data") or {}, default=str),
                       time=e.get("time") or 0.0)


class RuntimeServicer(pb_grpc.RuntimeServiceServicer):
    def __init__(self, manager: JobManager):
        self.manager = manager

    def SubmitJob(self, request: pb.SubmitJobRequest, context: grpc.ServicerContext) -> pb.SubmitJobResponse:
        try:
            job_id, plan = self.manager.submit(list(request.steps) or None, request.until or None, request.force,
                                               parse_overrides(dict(request.overrides)))
        except CdlError as exc:
            _abort(context, exc)
        return pb.SubmitJobResponse(job_id=job_id, plan=plan)

    def WatchJob(self, request: pb.WatchJobRequest, context: grpc.ServicerContext) -> Iterator[pb.JobEvent]:
        try:
            for e in self.manager.watch(request.job_id, request.from_seq):
                if not context.is_active():
                    return
                yield event_pb(e)
        except CdlError as exc:
            _abort(context, exc)

    def CancelJob(self, request: pb.CancelJobRequest, context: grpc.ServicerContext) -> pb.CancelJobResponse:
        try:
            return pb.CancelJobResponse(status=self.manager.cancel(request.job_id))
        except CdlError as exc:
            _abort(context, exc)

    def ListJobs(self, request: pb.ListJobsRequest, context: grpc.ServicerContext) -> pb.ListJobsResponse:
        jobs = [pb.Job(**job_dict(j)) for j in self.manager.jobs(request.limit or 50)]
        return pb.ListJobsResponse(jobs=jobs)

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.GetStatusResponse:
        try:
            ws = self.manager.ws
            states = Runner(ws).statuses()
        except CdlError as exc:
            _abort(context, exc)
        return pb.GetStatusResponse(
            workspace=str(ws.root),
            dataset_version=ws.current_version() or "",
            running_jobs=self.manager.running(),
            server_version=__version__,
            steps=[pb.StepState(id=s.id, status=s.status.value, reason=s.reason, role=s.spec.role.value,
                                pipeline=s.spec.pipeline, title=s.spec.title,
                                summary_json=json.dumps(s.summary, default=str)) for s in states],
        )
