"""The job store: ids, the status state machine, and each job's event log.

Jobs move queued -> running -> succeeded | failed (or cancelled from either
non-terminal state), never backwards: a poller that saw `succeeded` must
never see `running` again. Every transition and every progress report is an
event with a per-job sequence number, which is what the SDK's
`events?since_seq=` paging reads. The store is shared by the HTTP handlers
(uvicorn's loop) and readers in other threads (tests), hence the lock.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Literal

JobStatus = Literal["queued", "running", "succeeded", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
_ALLOWED: dict[str, frozenset[str]] = {
    "queued": frozenset({"running", "failed", "cancelled"}),
    "running": frozenset({"succeeded", "failed", "cancelled"}),
}
EVENT_PREFIX = "learning.policy.mipro"


class JobStateError(RuntimeError):
    """A transition the state machine does not allow (a bug, or a race with cancel)."""


def new_job_id() -> str:
    """`pl_` + 16 hex digits: the SDK refuses ids without the `pl_` prefix."""
    return f"pl_{secrets.token_hex(8)}"


@dataclass
class Event:
    seq: int
    type: str
    message: str
    data: dict[str, Any]
    level: str = "info"
    created_at: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "type": self.type,
            "level": self.level,
            "message": self.message,
            "data": self.data,
            "created_at": self.created_at,
        }


@dataclass
class Job:
    id: str
    owner: str  # the API key that created it; other keys get 404
    algorithm: str
    mode: str  # offline | online
    config_body: dict[str, Any]
    metadata: dict[str, Any]
    status: JobStatus = "queued"
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    result: dict[str, Any] = field(default_factory=dict)  # best_score, best_prompt, ...
    events: list[Event] = field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def view(self, *, include_metadata: bool = False) -> dict[str, Any]:
        """What GET .../jobs/{id} answers: status and results at the top level."""
        out: dict[str, Any] = {
            "job_id": self.id,
            "id": self.id,
            "algorithm": self.algorithm,
            "mode": self.mode,
            "status": self.status,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "error": self.error,
            "backend": "local",
            "best_score": None,
            "best_prompt": None,
            **self.result,
        }
        if include_metadata:
            out["metadata"] = dict(self.metadata)
        return out


class JobStore:
    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._jobs: dict[str, Job] = {}

    def create(self, **fields: Any) -> Job:
        with self._lock:
            job = Job(id=new_job_id(), **fields)
            while job.id in self._jobs:  # 64 random bits; still, never reuse an id
                job.id = new_job_id()
            self._jobs[job.id] = job
            self._emit(job, f"{EVENT_PREFIX}.job.created", "job created",
                       {"algorithm": job.algorithm, "mode": job.mode})
            return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return list(self._jobs.values())

    def transition(self, job: Job, status: JobStatus, *, error: str | None = None) -> None:
        with self._lock:
            if status not in _ALLOWED.get(job.status, frozenset()):
                raise JobStateError(f"job {job.id}: {job.status} -> {status} is not allowed")
            job.status = status
            now = time.time()
            if status == "running":
                job.started_at = now
                self._emit(job, f"{EVENT_PREFIX}.job.started", "job started", {})
            if status in TERMINAL:
                job.finished_at = now
            if status == "failed":
                job.error = error or "failed"
                self._emit(job, f"{EVENT_PREFIX}.job.failed", job.error, {"error": job.error},
                           level="error")
            elif status == "cancelled":
                job.error = error
                self._emit(job, f"{EVENT_PREFIX}.job.cancelled", error or "cancelled", {})

    def finish(self, job: Job, result: dict[str, Any], completed: dict[str, Any]) -> None:
        """Store the result and mark the job succeeded, with its job.completed event."""
        with self._lock:
            job.result.update(result)
            self._emit(job, f"{EVENT_PREFIX}.job.completed", "job completed", completed)
            self.transition(job, "succeeded")

    def fail(self, job: Job, error: str) -> None:
        """Fail a job unless it already ended (a cancel may have won the race)."""
        with self._lock:
            if not job.terminal:
                self.transition(job, "failed", error=error)

    def update_result(self, job: Job, **values: Any) -> None:
        with self._lock:
            job.result.update(values)

    def emit(self, job: Job, kind: str, message: str, data: dict[str, Any] | None = None,
             *, level: str = "info") -> Event:
        """Append `learning.policy.mipro.<kind>`."""
        with self._lock:
            return self._emit(job, f"{EVENT_PREFIX}.{kind}", message, data or {}, level=level)

    def events(self, job: Job, *, since_seq: int = 0, limit: int = 1000) -> list[Event]:
        with self._lock:
            return [e for e in job.events if e.seq > since_seq][:limit]

    def _emit(self, job: Job, type_: str, message: str, data: dict[str, Any],
              *, level: str = "info") -> Event:
        event = Event(seq=len(job.events) + 1, type=type_, message=message, data=data,
                      level=level)
        job.events.append(event)
        return event
