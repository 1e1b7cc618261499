"""A client of the runtime process, with the shapes of the local API (plain dicts and Event objects)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import grpc

from runtime.domain.events import Event, EventKind
from runtime.proto import runtime_pb2 as pb
from runtime.proto import runtime_pb2_grpc as pb_grpc


def to_event(e: pb.JobEvent) -> Event:
    return Event(EventKind(e.kind), step=e.step or None, job=e.job_id,
                 fraction=e.fraction if e.has_fraction else None, message=e.message,
                 data=json.loads(e.data_json or "{}"), time=e.time, seq=e.seq)


class RuntimeClient:
    def __init__(self, address: str, timeout: float = 30.0):
        self.address = address
        self.timeout = timeout
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.RuntimeServiceStub(self.channel)

    def wait_ready(self, timeout: float = 10.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def submit_job(self, steps: list[str] | None = None, until: str | None = None, force: bool = False,
                   overrides: dict[str, Any] | None = None) -> tuple[str, list[str]]:
        flat = {}
        for step, params in (overrides or {}).items():
            for k, v in params.items():
                flat[f"{step}.{k}"] = json.dumps(v)
        r = self.stub.SubmitJob(pb.SubmitJobRequest(steps=steps or [], until=until or "", force=force,
                                                    overrides=flat), timeout=self.timeout)
        return r.job_id, list(r.plan)

    def watch_job(self, job_id: str, from_seq: int = 0, timeout: float | None = None) -> Iterator[Event]:
        for e in self.stub.WatchJob(pb.WatchJobRequest(job_id=job_id, from_seq=from_seq), timeout=timeout):
            yield to_event(e)

    def cancel_job(self, job_id: str) -> str:
        return self.stub.CancelJob(pb.CancelJobRequest(job_id=job_id), timeout=self.timeout).status

    def list_jobs(self, limit: int = 50) -> list[dict[str, Any]]:
        r = self.stub.ListJobs(pb.ListJobsRequest(limit=limit), timeout=self.timeout)
        return [{"job_id": j.job_id, "status": j.status, "plan": list(j.plan), "created": j.created,
                 "started": j.started, "finished": j.finished, "error": j.error, "pid": j.pid} for j in r.jobs]

    def get_status(self) -> dict[str, Any]:
        r = self.stub.GetStatus(pb.GetStatusRequest(), timeout=self.timeout)
        return {"workspace": r.workspace, "dataset_version": r.dataset_version, "running_jobs": r.running_jobs,
                "server_version": r.server_version,
                "steps": [{"id": s.id, "status": s.status, "reason": s.reason, "role": s.role,
                           "pipeline": s.pipeline, "title": s.title, "summary": json.loads(s.summary_json or "{}")}
                          for s in r.steps]}

    def close(self) -> None:
        self.channel.close()
