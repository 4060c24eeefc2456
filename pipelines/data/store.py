"""Writes a versioned dataset directory: deterministic PNGs, JSON lines, and `manifest.json`.

Bytes depend only on the inputs (no timestamps, no PNG metadata, sorted JSON keys), so the
same seed gives a byte-identical directory; the manifest lists every file with its sha256.
"""

from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

MANIFEST = "manifest.json"
T = TypeVar("T")


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of a uint8 (H, W) or (H, W, 3) array, with no metadata chunks."""
    if array.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {array.dtype}")
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def decode_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def item_rng(seed: int, dataset: str, split: str, index: int) -> np.random.Generator:
    """The generator for one item: independent of worker count and of other items."""
    tag = int.from_bytes(hashlib.sha256(f"{dataset}/{split}".encode()).digest()[:4], "big")
    return np.random.default_rng([seed, tag, index])


def parallel_map(fn: Callable[[int], T], indices: Iterable[int], workers: int) -> Iterator[T]:
    """`map(fn, indices)` in order, across `workers` processes when > 1."""
    idx = list(indices)
    if workers <= 1 or len(idx) < 64:
        yield from map(fn, idx)
        return
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from pool.imap(fn, idx, chunksize=32)


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    seed: int
    params: dict[str, Any]
    counts: dict[str, int]
    files: tuple[dict[str, Any], ...]  # {"path", "sha256", "bytes"}, sorted by path

    @staticmethod
    def load(root: Path) -> Manifest:
        path = Path(root) / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{root} is not a Concord dataset (no {MANIFEST})")
        d = json.loads(path.read_text())
        return Manifest(d["name"], d["version"], d["seed"], d["params"], d["counts"], tuple(d["files"]))


class DatasetWriter:
    """Collects a dataset's files under `root` and seals them with a manifest."""

    def __init__(self, root: Path, name: str, version: str, seed: int, params: dict[str, Any],
                 overwrite: bool = False) -> None:
        root = Path(root)
        if root.exists() and any(root.iterdir()):
            if not overwrite:
                raise FileExistsError(f"{root} is not empty; pass overwrite to replace it")
            if not (root / MANIFEST).is_file():
                raise FileExistsError(f"refusing to overwrite {root}: it is not a Concord dataset")
            shutil.rmtree(root)
        root.mkdir(parents=True, exist_ok=True)
        self.root, self.name, self.version, self.seed, self.params = root, name, version, seed, params
        self._paths: set[str] = set()

    def put(self, rel: str, data: bytes) -> str:
        """Write `data` at `rel` (relative to the root); returns `rel`."""
        if rel in self._paths:
            raise ValueError(f"{rel} written twice")
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        self._paths.add(rel)
        return rel

    def put_items(self, make_item: Callable[[int], dict[str, Any]], count: int,
                  workers: int) -> list[dict[str, Any]]:
        """Build items 0..count-1 (in parallel, in order), write each item's `files` and return
        their `record`s - the loop every split of a rendered dataset runs."""
        records = []
        for item in parallel_map(make_item, range(count), workers):
            for rel, data in item["files"].items():
                self.put(rel, data)
            records.append(item["record"])
        return records

    def put_png(self, rel: str, array: np.ndarray) -> str:
        return self.put(rel, encode_png(array))

    def put_jsonl(self, rel: str, records: Iterable[dict[str, Any]]) -> int:
        lines = [dumps(r) for r in records]
        self.put(rel, ("\n".join(lines) + "\n" if lines else "").encode())
        return len(lines)

    def put_json(self, rel: str, obj: Any) -> str:
        return self.put(rel, (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False) + "\n").encode())

    def put_tsv(self, rel: str, rows: Iterable[Iterable[Any]]) -> int:
        lines = ["\t".join(str(c) for c in row) for row in rows]
        self.put(rel, ("\n".join(lines) + "\n" if lines else "").encode())
        return len(lines)

    def finish(self, counts: dict[str, int]) -> Manifest:
        """Hash every file written and write `manifest.json`."""
        files = tuple(
            {"path": rel, "sha256": hashlib.sha256((self.root / rel).read_bytes()).hexdigest(),
             "bytes": (self.root / rel).stat().st_size}
            for rel in sorted(self._paths)
        )
        m = Manifest(self.name, self.version, self.seed, self.params, dict(counts), files)
        body = {"name": m.name, "version": m.version, "seed": m.seed, "params": m.params,
                "counts": m.counts, "files": list(m.files)}
        (self.root / MANIFEST).write_text(json.dumps(body, sort_keys=True, indent=1) + "\n")
        return m


def verify(root: Path) -> list[str]:
    """Paths whose bytes no longer match the manifest (empty when intact)."""
    m = Manifest.load(root)
    return [f["path"] for f in m.files
            if hashlib.sha256((Path(root) / f["path"]).read_bytes()).hexdigest() != f["sha256"]]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]
