"""The linker package on disk (registered in MLflow as `concord-linker`): `linker.json` naming
the encoder it was trained on and M3EL's config and feature sizes, plus `m3el.pt` (the state
dict). The encoder is a model URI (`models:/concord-encoder@production`, a path) or a directory
relative to the package (an encoder copied inside it, so the package is self-contained).

    linker.json: {"kind": "concord-linker", "encoder": URI_OR_RELATIVE_DIR, "m3el": {config},
                  "text_dim": Dt, "image_dim": Di, "embed_dim": H, ...extra}
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from concord.errors import FailedPrecondition
from concord.models.linking.m3el import M3EL, M3ELConfig

KIND = "concord-linker"
META_FILE = "linker.json"
WEIGHTS_FILE = "m3el.pt"
ENCODER_DIR = "encoder"  # where `copy_encoder` puts the encoder inside the package
REQUIRED = ("kind", "encoder", "m3el", "text_dim", "image_dim", "embed_dim")


def write_linker_package(
    directory: Path,
    model: M3EL,
    config: M3ELConfig,
    encoder_uri: str,
    *,
    copy_encoder: Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write linker.json and m3el.pt.

    Args:
        directory: created if missing; files of the same names are overwritten.
        model: the trained M3EL (its state dict is saved on CPU).
        config: its config (recorded in linker.json under "m3el").
        encoder_uri: the encoder the features came from (recorded as is), unless
            `copy_encoder` is given.
        copy_encoder: an encoder directory to copy into `directory/encoder`; linker.json then
            names "encoder" (relative) so the package is self-contained.
        extra: more JSON fields (metrics, the data seed, the source encoder URI...).
    Returns:
        The package directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    encoder = encoder_uri
    if copy_encoder is not None:
        target = directory / ENCODER_DIR
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(Path(copy_encoder), target)
        encoder = ENCODER_DIR
    meta = {
        **(extra or {}),
        "kind": KIND,
        "encoder": encoder,
        "m3el": config.to_dict(),
        "text_dim": model.text_dim,
        "image_dim": model.image_dim,
        "embed_dim": model.embed_dim,
    }
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(state, directory / WEIGHTS_FILE)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def read_linker_package(directory: Path) -> tuple[M3ELConfig, dict[str, Tensor], dict[str, Any]]:
    """Read a package written by `write_linker_package`.

    Returns:
        (config, state dict on CPU, the linker.json dict).
    Raises:
        FailedPrecondition: the directory, a file or a field is missing or malformed (the
            message names which).
    """
    directory = Path(directory).expanduser()
    if not directory.is_dir():
        raise FailedPrecondition(f"linker package {directory} is not a directory")
    missing = [n for n in (META_FILE, WEIGHTS_FILE) if not (directory / n).is_file()]
    if missing:
        raise FailedPrecondition(
            f"{directory} is not a linker package: missing {', '.join(missing)}"
        )
    try:
        meta = json.loads((directory / META_FILE).read_text())
    except (OSError, ValueError) as err:
        raise FailedPrecondition(f"{directory / META_FILE} is not valid JSON: {err}") from err
    if not isinstance(meta, dict):
        raise FailedPrecondition(f"{directory / META_FILE} is not a JSON object")
    absent = [k for k in REQUIRED if k not in meta]
    if absent:
        raise FailedPrecondition(f"{directory / META_FILE} lacks {', '.join(absent)}")
    if meta["kind"] != KIND:
        raise FailedPrecondition(
            f"{directory / META_FILE} has kind {meta['kind']!r}, expected {KIND!r}"
        )
    try:
        config = M3ELConfig.from_dict(dict(meta["m3el"]))
    except (TypeError, ValueError) as err:
        raise FailedPrecondition(f"{directory / META_FILE}: bad m3el config: {err}") from err
    try:
        state = torch.load(directory / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: any unpickling error
        raise FailedPrecondition(f"{directory / WEIGHTS_FILE} is not a state dict: {err}") from err
    if not isinstance(state, dict):
        raise FailedPrecondition(f"{directory / WEIGHTS_FILE} is not a state dict")
    return config, state, meta


def load_linker(directory: Path) -> tuple[M3EL, dict[str, Any]]:
    """Build the M3EL of a package and load its weights (eval mode, CPU).

    Raises:
        FailedPrecondition: as `read_linker_package`, or the weights do not fit the config.
    """
    config, state, meta = read_linker_package(directory)
    model = M3EL(config, int(meta["text_dim"]), int(meta["image_dim"]))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise FailedPrecondition(
            f"{Path(directory) / WEIGHTS_FILE} does not fit its config: {err}"
        ) from err
    if model.embed_dim != int(meta["embed_dim"]):
        raise FailedPrecondition(
            f"{Path(directory) / META_FILE}: embed_dim {meta['embed_dim']} != model's {model.embed_dim}"
        )
    return model.eval(), meta


def encoder_uri(directory: Path, meta: dict[str, Any]) -> str:
    """The encoder URI to load: a relative directory inside the package becomes its absolute
    path; anything else (a registry URI, an absolute path) is returned as recorded."""
    recorded = str(meta["encoder"])
    if recorded.startswith("models:/"):
        return recorded
    inside = Path(directory) / recorded
    if not Path(recorded).is_absolute() and inside.exists():
        return str(inside.resolve())
    return recorded
