"""Align jobs on disk: `<home>/linker/align-jobs/<job id>/` holds `status.pb` (the latest
AlignJobStatus), `request.pb` (graphs too large for one Kafka record) and `result.pb` (the
aligned pairs, written once when the job succeeds). Files are replaced atomically, so a
reader never sees half a status or half a result.

On disk rather than in memory: a job outlives the process that ran it (GetAlignJob and
GetAlignResult answer after a restart), and replicas that share the home volume (a
ReadWriteMany volume in the chart) share the jobs. Every status change is also published
on `concord.aligned` for consumers that follow jobs by event.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
import uuid
from pathlib import Path

from concord.errors import InvalidArgument, NotFound
from concord.proto.v1 import linker_pb2
from concord.wire import ModelId, model_ref
from services.linker.convert import now

STATUS_FILE = "status.pb"
REQUEST_FILE = "request.pb"
RESULT_FILE = "result.pb"
JOB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]{0,63}$")

QUEUED = linker_pb2.ALIGN_JOB_STATE_QUEUED
RUNNING = linker_pb2.ALIGN_JOB_STATE_RUNNING
SUCCEEDED = linker_pb2.ALIGN_JOB_STATE_SUCCEEDED
FAILED = linker_pb2.ALIGN_JOB_STATE_FAILED
TERMINAL = frozenset({SUCCEEDED, FAILED})


def new_job_id() -> str:
    return f"align-{uuid.uuid4().hex[:16]}"


def check_job_id(job_id: str, field: str = "job_id") -> str:
    """Returns: `job_id`. Raises: InvalidArgument unless 1-64 of [A-Za-z0-9_-]."""
    if not job_id:
        raise InvalidArgument(field, "is empty")
    if not JOB_ID_RE.match(job_id):
        raise InvalidArgument(field, f"{job_id[:80]!r} is not a job id (1-64 of A-Z a-z 0-9 _ -)")
    return job_id


class AlignJobs:
    """The job directory of one linker (thread-safe).

    Args:
        root: where the jobs live (`<home>/linker/align-jobs`).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.Lock()

    def _dir(self, job_id: str) -> Path:
        return self.root / check_job_id(job_id)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    # ----------------------------------------------------------------- status

    def status(self, job_id: str) -> linker_pb2.AlignJobStatus | None:
        """Returns: the job's latest status, None for an unknown job."""
        path = self._dir(job_id) / STATUS_FILE
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return linker_pb2.AlignJobStatus.FromString(data)

    def require(self, job_id: str) -> linker_pb2.AlignJobStatus:
        """Returns: the job's status. Raises: NotFound naming the job."""
        found = self.status(job_id)
        if found is None:
            raise NotFound(f"align job {job_id!r} does not exist")
        return found

    def put(
        self,
        job_id: str,
        state: int,
        message: str = "",
        progress: float = 0.0,
        pairs: int = 0,
        model: ModelId | None = None,
    ) -> linker_pb2.AlignJobStatus:
        """Write the job's status (replacing the last). Returns: what was written."""
        status = linker_pb2.AlignJobStatus(
            job_id=job_id,
            state=state,  # type: ignore[arg-type]
            message=message,
            progress=progress,
            pairs=pairs,
            updated_at=now(),
        )
        if model is not None:
            status.model.CopyFrom(model_ref(model))
        with self._lock:
            self._write(self._dir(job_id) / STATUS_FILE, status.SerializeToString())
        return status

    def create(self, job_id: str) -> tuple[linker_pb2.AlignJobStatus, bool]:
        """Queue job `job_id` unless it exists. Returns: (its status, whether it is new)."""
        with self._lock:
            existing = self.status(job_id)
            if existing is not None:
                return existing, False
            self._dir(job_id).mkdir(parents=True, exist_ok=True)
        return self.put(job_id, QUEUED, "queued"), True

    def remove(self, job_id: str) -> None:
        shutil.rmtree(self._dir(job_id), ignore_errors=True)

    # ----------------------------------------------------------------- request

    def store_request(self, job_id: str, request: linker_pb2.AlignGraphsRequest) -> str:
        """Keep graphs too large for one record. Returns: the path the job event names."""
        path = self._dir(job_id) / REQUEST_FILE
        self._write(path, request.SerializeToString())
        return str(path)

    def load_request(self, job: linker_pb2.AlignJob) -> linker_pb2.AlignGraphsRequest:
        """The job's graphs, inline or from the path it names.

        Raises:
            InvalidArgument: the path is not this linker's job file, or it is unreadable.
        """
        if job.WhichOneof("graphs") == "request":
            return job.request
        path = Path(job.request_path)
        if (
            not job.request_path
            or path.resolve() != (self._dir(job.job_id) / REQUEST_FILE).resolve()
        ):
            raise InvalidArgument("request_path", "does not name this job's request file")
        try:
            return linker_pb2.AlignGraphsRequest.FromString(path.read_bytes())
        except (OSError, ValueError) as err:
            raise InvalidArgument("request_path", f"cannot be read ({err})") from err

    # ----------------------------------------------------------------- result

    def store_result(self, job_id: str, pairs: list[linker_pb2.AlignedPair]) -> None:
        result = linker_pb2.AlignResult(pairs=pairs)
        self._write(self._dir(job_id) / RESULT_FILE, result.SerializeToString())

    def result(self, job_id: str) -> list[linker_pb2.AlignedPair]:
        """Returns: the stored pairs. Raises: NotFound when there is no result (yet)."""
        path = self._dir(job_id) / RESULT_FILE
        try:
            return list(linker_pb2.AlignResult.FromString(path.read_bytes()).pairs)
        except FileNotFoundError:
            raise NotFound(f"align job {job_id!r} has no result") from None
