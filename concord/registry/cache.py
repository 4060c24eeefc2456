"""The local model cache: one complete copy per `NAME/VERSION`, published atomically.

A download lands in a staging folder beside its target and is renamed into place with a
completion marker, so readers (other threads or processes) never see half a model.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from concord.registry.refs import ModelVersionInfo

_COMPLETE = ".concord-complete"  # marker: a cached download finished


def cached_copy(
    cache_dir: Path, info: ModelVersionInfo, fetch: Callable[[ModelVersionInfo, Path], None]
) -> Path:
    """Return the cached copy of a version, fetching it first when it is not complete.

    Args:
        cache_dir: the cache root; the copy lives at `cache_dir/NAME/VERSION`.
        info: the resolved version.
        fetch: puts the version's files directly in the folder it is given.

    Returns:
        The folder holding the version's files.
    """
    target = cache_dir / info.name / str(info.version)
    if (target / _COMPLETE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{info.version}-", dir=target.parent))
    fetch(info, staging)
    (staging / _COMPLETE).touch()
    try:
        staging.rename(target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)
    return target
