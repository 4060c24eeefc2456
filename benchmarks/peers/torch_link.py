"""Lend the project's torch to the peer's venv instead of downloading it again.

clip-server asks for an unpinned `torch` / `torchvision`. Rather than fetching a second
multi-GB CUDA build, `install.sh` puts a directory of symlinks to *this* venv's torch,
torchvision, triton and their CUDA wheels on the peer venv's path (a `.pth` file), so pip sees
them as installed and both services run the very same torch build (same kernels, a fair
comparison). Only those distributions are exposed: everything else the peer needs (numpy,
grpcio, protobuf, ...) is installed into its own venv at the versions it pins.

    python benchmarks/peers/torch_link.py TARGET_DIR   # run with the project's python
"""

from __future__ import annotations

import importlib.metadata as md
import shutil
import sys
from pathlib import Path

LENT = ("torch", "torchvision", "triton")
LENT_PREFIXES = ("nvidia-", "nvidia_", "cuda-", "cuda_")


def lent_distributions() -> list[md.Distribution]:
    """torch, torchvision, triton and the CUDA wheels torch depends on, from this interpreter."""
    out = []
    for dist in md.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name in LENT or name.startswith(LENT_PREFIXES):
            out.append(dist)
    return out


def top_level_entries(dist: md.Distribution) -> set[str]:
    """The first path component of every file the distribution installed (packages, the
    dist-info directory, shared-library directories), skipping scripts outside site-packages."""
    entries = set()
    for file in dist.files or ():
        first = file.parts[0]
        if first not in ("..", "__pycache__"):
            entries.add(first)
    return entries


def link(target: Path) -> list[str]:
    """Recreate `target` as symlinks to the lent distributions' files; returns their names."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    names = []
    for dist in lent_distributions():
        site = Path(str(dist.locate_file("")))
        for entry in sorted(top_level_entries(dist)):
            source, dest = site / entry, target / entry
            if source.exists() and not dest.exists():
                dest.symlink_to(source)
        names.append(f"{dist.metadata['Name']}=={dist.version}")
    return sorted(names)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: torch_link.py TARGET_DIR")
    for name in link(Path(sys.argv[1])):
        print(name)
