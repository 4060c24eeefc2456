"""The generator's job table: what GetJob answers for customization and generation jobs.

The table lives in this process (thread-safe: the gRPC loop writes QUEUED, the Kafka worker
thread writes RUNNING / SUCCEEDED / FAILED). It is enough for one replica, or for replicas
whose callers stick to the replica that accepted their job *and* consume their own jobs.

A multi-replica deployment needs the state somewhere every replica reads: e.g. a compacted
`concord.generation.job-status` topic (key = job id) that each worker publishes its updates
to and every replica folds into this table, or a small shared database. The Kafka job itself
is the durable part: a replica that dies mid-job leaves its offset uncommitted, and the next
owner of the partition runs the job again (concept registration is idempotent per job id).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, replace
from typing import Literal

JobState = Literal["QUEUED", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED"]
TERMINAL: frozenset[str] = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
MAX_JOBS = 10_000  # oldest finished jobs are forgotten beyond this


@dataclass(frozen=True)
class JobRecord:
    """One job's state as GetJob reports it."""

    id: str
    kind: Literal["customize", "generate"]
    state: JobState = "QUEUED"
    message: str = ""
    progress: float = 0.0  # 0..1
    concept: str = ""
    updated_at: float = 0.0  # time.time()


class JobTable:
    """Job id -> latest JobRecord, bounded (finished jobs age out first)."""

    def __init__(self, max_jobs: int = MAX_JOBS) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[str, JobRecord] = {}
        self._max = max_jobs

    def put(self, record: JobRecord) -> JobRecord:
        """Store `record` (replacing any record of its id). Returns: the stored record."""
        record = replace(record, updated_at=time.time())
        with self._lock:
            self._jobs.pop(record.id, None)
            self._jobs[record.id] = record  # re-insert: dict order is update order
            self._evict()
        return record

    def update(self, job_id: str, **changes: object) -> JobRecord | None:
        """Change fields of a known job. Returns: the new record, None for an unknown id."""
        with self._lock:
            current = self._jobs.get(job_id)
        if current is None:
            return None
        return self.put(replace(current, **changes))  # type: ignore[arg-type]

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._jobs.get(job_id)

    def __len__(self) -> int:
        with self._lock:
            return len(self._jobs)

    def _evict(self) -> None:
        if len(self._jobs) <= self._max:
            return
        finished = [k for k, v in self._jobs.items() if v.state in TERMINAL]
        for key in finished[: len(self._jobs) - self._max]:
            del self._jobs[key]
