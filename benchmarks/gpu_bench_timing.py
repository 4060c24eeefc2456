"""Timing helpers of the GPU benchmark: device sync, CUDA-graph capture, and the items/s of
work run by several threads (each on its own CUDA stream) so that batches overlap."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def graphed(fn: Callable[[torch.Tensor], torch.Tensor], example: torch.Tensor) -> Callable:
    """`fn` captured as a CUDA graph for `example`'s shape: returns x -> fn(x) by replay.
    Call inside torch.inference_mode()."""
    static = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn(static)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fn(static)

    def replay(x: torch.Tensor) -> torch.Tensor:
        if x.data_ptr() != static.data_ptr():
            static.copy_(x)
        graph.replay()
        return out

    return replay


def pipelined_rate(
    work: Callable[[int], int], workers: int, seconds: float, device: torch.device
) -> float:
    """Items/s of `work(i)` (one batch; returns items) run by `workers` threads, each on its own
    CUDA stream on a GPU, so that more than one batch is in flight."""
    stop = threading.Event()
    counts = [0] * workers
    errors: list[BaseException] = []

    def loop(k: int) -> None:
        stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
        try:
            with ctx, torch.inference_mode():
                i = 0
                while not stop.is_set():
                    counts[k] += work(k * 1_000_003 + i)
                    i += 1
                if stream is not None:
                    stream.synchronize()
        except BaseException as err:
            errors.append(err)

    with torch.inference_mode():
        work(0)  # warm-up (and the check that it works at all)
    sync(device)
    threads = [threading.Thread(target=loop, args=(k,)) for k in range(workers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    sync(device)
    if errors:
        raise errors[0]
    return sum(counts) / (time.perf_counter() - started)
