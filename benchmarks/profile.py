"""Where a served path's time goes: a sampling profiler on the server process (py-spy) with its
samples grouped into named stages, and a per-stage timer for code that runs in the benchmark
process. Both give milliseconds per request and each stage's share, for a report's notes.

    with sample(served_pid) as profile:        # py-spy on the service, while load runs
        n = run_load()
    breakdown = profile.breakdown(ENCODER_STAGES, requests=n)
    notes = breakdown.markdown("encoder under 4 clients")

    timer = StageTimer()
    with timer("decode"):
        ...
    timer.markdown(requests=n)

py-spy (`pip install py-spy`) samples the Python threads of a running process without
changing it; threads waiting in a syscall (an idle event loop, a pool thread waiting for work)
are left out, so a stage's samples are time a thread was busy in it. Torch's own OpenMP
threads run no Python and are not sampled: a forward counts once, as the Python thread that
waits for it. Without py-spy (or without permission to trace) `sample` yields a profile whose
breakdown says so instead of failing the benchmark.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# (stage, substrings of a frame "function (file)"): a sample belongs to the stage of its
# innermost frame that matches; earlier stages win when one frame matches several.
Stages = Sequence[tuple[str, Sequence[str]]]

SERVING_STAGES: Stages = (
    ("image decode", ("decode_image", "decode_images", "decode_pairs")),
    ("preprocess (resize/tokenize)", ("images_to_tensor", "TextTokenizer.__call__", "tokenizer")),
    ("forward", ("encode_image", "encode_text", "AlignmentScorer", "_attribute")),
    ("split outputs", ("_split (services/",)),
    (
        "proto conversion",
        ("encoding_proto", "encode_response", "score_response", "explain_response", "convert.py"),
    ),
    ("request checks", ("requests.py", "check_texts", "check_count")),
    ("interceptor/auth", ("interceptors.py",)),
    ("batcher", ("batcher.py", "run_pinned")),
    ("worker-thread handoff", ("to_thread", "concurrent/futures", "run_in_executor")),
    ("grpc runtime (parse/serialize/transport)", ("grpc/", "cygrpc", "protobuf")),
    ("asyncio event loop", ("asyncio/",)),
)
ENCODER_STAGES = SERVING_STAGES


@dataclass
class Breakdown:
    """Samples per stage. `seconds` is the sampling window; `rate` samples/s per thread."""

    samples: Counter[str]
    rate: float
    seconds: float
    requests: int = 0
    error: str = ""

    @property
    def total(self) -> int:
        return sum(self.samples.values())

    def ms_per_request(self, stage: str) -> float:
        if not self.requests:
            return 0.0
        return self.samples[stage] / self.rate * 1e3 / self.requests

    def rows(self) -> list[tuple[str, float, float]]:
        """(stage, busy ms per request, share of busy samples), largest first."""
        total = self.total or 1
        return [
            (stage, self.ms_per_request(stage), n / total)
            for stage, n in self.samples.most_common()
        ]

    def markdown(self, title: str) -> str:
        if self.error:
            return f"**{title}**: no profile ({self.error})\n"
        busy = self.total / self.rate
        lines = [
            f"**{title}** (py-spy, {self.total} samples at {self.rate:.0f}/s over "
            f"{self.seconds:.1f} s, {self.requests} requests; busy thread-seconds {busy:.2f}, "
            f"i.e. {busy / max(self.seconds, 1e-9):.2f} threads busy on average)",
            "",
            "| stage | busy ms / request | share |",
            "|---|---:|---:|",
        ]
        for stage, ms, share in self.rows():
            lines.append(f"| {stage} | {ms:.2f} | {share:.1%} |")
        return "\n".join(lines) + "\n"


@dataclass
class Profile:
    """Collapsed stacks from one py-spy recording (empty with `error` when none was taken)."""

    stacks: Counter[str] = field(default_factory=Counter)
    rate: float = 100.0
    seconds: float = 0.0
    error: str = ""

    def breakdown(self, stages: Stages = SERVING_STAGES, requests: int = 0) -> Breakdown:
        out: Counter[str] = Counter()
        for stack, n in self.stacks.items():
            out[classify(stack.split(";"), stages)] += n
        return Breakdown(out, self.rate, self.seconds, requests, self.error)

    def top(self, n: int = 15) -> list[tuple[str, float]]:
        """The innermost Python frames with the most samples (share), for a closer look."""
        leaves: Counter[str] = Counter()
        for stack, count in self.stacks.items():
            leaves[stack.rsplit(";", 1)[-1]] += count
        total = sum(leaves.values()) or 1
        return [(frame, c / total) for frame, c in leaves.most_common(n)]


def classify(frames: Sequence[str], stages: Stages) -> str:
    """The stage of the innermost frame (frames run outermost first) that matches one."""
    for frame in reversed(frames):
        for stage, patterns in stages:
            if any(p in frame for p in patterns):
                return stage
    return "other"


def py_spy() -> str | None:
    """The py-spy executable beside this interpreter, else on PATH."""
    local = Path(sys.executable).with_name("py-spy")
    return str(local) if local.exists() else shutil.which("py-spy")


@contextmanager
def sample(pid: int, rate: float = 100.0) -> Iterator[Profile]:
    """Sample process `pid` with py-spy while the block runs; the yielded Profile is filled in
    when the block ends."""
    profile = Profile(rate=rate)
    exe = py_spy()
    if exe is None:
        profile.error = "py-spy is not installed"
        yield profile
        return
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "stacks.txt"
        cmd = [exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(raw)]
        cmd += ["--rate", str(int(rate)), "--nolineno", "--nonblocking"]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(0.5)  # attach before the load starts
        started = time.perf_counter()
        try:
            yield profile
        finally:
            profile.seconds = time.perf_counter() - started
            proc.send_signal(signal.SIGINT)  # py-spy writes its file on Ctrl-C
            try:
                output, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                output, _ = proc.communicate()
            if raw.exists():
                profile.stacks = read_collapsed(raw.read_text())
            else:
                lines = output.decode(errors="replace").strip().splitlines()
                said = [line for line in lines if "rror" in line][:2] or lines[-1:]
                profile.error = f"py-spy wrote nothing: {' / '.join(said) or proc.returncode}"


def read_collapsed(text: str) -> Counter[str]:
    """Collapsed stacks ("frame;frame;frame COUNT" per line) as a Counter."""
    stacks: Counter[str] = Counter()
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


class StageTimer:
    """Wall time per named stage, summed over calls (thread-safe), for in-process stages."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            with self._lock:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + elapsed
                self.calls[stage] += 1

    def markdown(self, title: str, requests: int) -> str:
        total = sum(self.seconds.values()) or 1e-12
        lines = [
            f"**{title}** (wall time per stage, {requests} requests)",
            "",
            "| stage | ms / request | share |",
            "|---|---:|---:|",
        ]
        for stage, s in self.seconds.items():
            lines.append(f"| {stage} | {s * 1e3 / max(requests, 1):.2f} | {s / total:.1%} |")
        return "\n".join(lines) + "\n"


def prioritise(pid: int | None = None, nice: int = -10) -> None:
    """Give a process's autogroup priority (the session's benchmarks share 2 busy cores);
    silently nothing where the kernel or permissions do not allow it."""
    with suppress(OSError):
        Path(f"/proc/{pid or os.getpid()}/autogroup").write_text(str(nice))


def load_note() -> str:
    """The machine's load averages, for a report beside the figures measured under it."""
    one, five, fifteen = os.getloadavg()
    return (
        f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min), {os.cpu_count()} CPUs"
    )


def child_pid(contains: str = "concord serve") -> int:
    """The pid of this process's child whose command line contains `contains` (e.g. the
    `concord serve` subprocess benchmarks.harness.serve started). Raises: LookupError."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == me and contains in cmdline:
            return int(entry.name)
    raise LookupError(f"no child process of {me} runs {contains!r}")


def same_threads(threads: int, module: str) -> None:
    """Re-run this process with OMP_NUM_THREADS=threads unless it already has it: OpenMP sizes
    its pool when torch loads, and the service gets this environment too (benchmarks.harness),
    so both sides run torch alike (set_num_threads alone left in-process figures up to 3x
    slower than the service's on a loaded machine)."""
    if os.environ.get("OMP_NUM_THREADS") != str(threads):
        os.environ["OMP_NUM_THREADS"] = str(threads)
        os.execv(sys.executable, [sys.executable, "-m", module, *sys.argv[1:]])
    import torch  # after the environment is settled

    torch.set_num_threads(threads)


def best(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The best of alternating rounds, figure by figure: the highest rate, the latency sample
    with the lowest median. A burst of load elsewhere then costs neither side its figure."""
    out: dict[str, Any] = {}
    for key in runs[0]:
        values = [run[key] for run in runs]
        if isinstance(values[0], np.ndarray):
            out[key] = min(values, key=lambda v: float(np.median(v)))
        else:
            out[key] = max(values)
    return out


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system, all threads) a process has used so far: this one by default."""
    if pid is None:
        return time.process_time()
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def cpu_used(pids: Mapping[str, int | None]) -> Iterator[dict[str, float]]:
    """CPU seconds each named process used while the block ran (filled in at its end)."""
    start = {name: cpu_seconds(pid) for name, pid in pids.items()}
    used: dict[str, float] = {}
    try:
        yield used
    finally:
        for name, pid in pids.items():
            used[name] = cpu_seconds(pid) - start[name]
