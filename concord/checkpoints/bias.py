"""The bias detector's package (the model MLflow registers as `concord-bias`): a directory with
`bias.json` (kind, the encoder it is built on, the classifier config, the calibration, the label
threshold, the inconsistency map) and `bias.pt` (the classifier's own weights: heads, LoRA
adapters and, for a full fine-tune, MiniLM; never the encoder's unchanged weights, which come
from the encoder the package names).

`write_bias_package` / `read_bias_package` handle the files; `load_bias` resolves a package URI
(registry or local), loads its encoder through `concord.checkpoints.load_model`, and returns a
ready `BiasDetector`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from concord.checkpoints.loading import LoadedModel, load_model
from concord.errors import FailedPrecondition
from concord.models.bias import BiasClassifier, BiasConfig, BiasDetector, InconsistencyCalibration
from concord.models.preprocess import TextTokenizer
from concord.registry import Registry, is_registry_uri, resolve_model
from concord.wire import ModelId

KIND = "concord-bias"
PACKAGE_FILE = "bias.json"
WEIGHTS_FILE = "bias.pt"
REQUIRED_KEYS = ("kind", "encoder", "classifier", "calibration")


@dataclass(frozen=True)
class BiasPackage:
    """bias.json, checked."""

    encoder: str  # encoder URI; a relative local path is relative to the package directory
    config: BiasConfig
    temperature: float
    threshold: float
    inconsistency: InconsistencyCalibration
    extra: Mapping[str, Any] = field(default_factory=dict)  # anything else bias.json holds

    def encoder_uri(self, directory: Path) -> str:
        """The encoder to load: registry URIs and absolute paths as they are, else relative."""
        if is_registry_uri(self.encoder) or Path(self.encoder).expanduser().is_absolute():
            return self.encoder
        return str(Path(directory) / self.encoder)


@dataclass(frozen=True)
class LoadedBias:
    """A bias detector ready to serve and what to call it in responses."""

    detector: BiasDetector
    encoder: LoadedModel
    package: BiasPackage
    id: ModelId  # the package (concord-bias / 3, or <dir> / local-<hash>)
    uri: str  # what the settings asked for

    @property
    def image_size(self) -> int:
        """Side in pixels `detect` expects (concord.models.preprocess.images_to_tensor)."""
        return self.encoder.image_size


def write_bias_package(
    directory: Path,
    classifier: BiasClassifier,
    *,
    encoder: str,
    temperature: float = 1.0,
    threshold: float = 0.5,
    inconsistency: InconsistencyCalibration | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write bias.json and bias.pt into `directory` (created if missing; files overwritten).

    Args:
        classifier: the trained classifier (only its own weights are written).
        encoder: the encoder URI it was built on (pin a version, e.g. models:/concord-encoder/3,
            or a path, relative to `directory` if it lives inside the package).
        temperature, threshold, inconsistency: the calibration (see concord.models.bias).
        extra: more JSON-ready keys for bias.json (metrics, data, created_by, ...).
    Returns: the directory.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    body: dict[str, Any] = {
        **dict(extra or {}),
        "kind": KIND,
        "encoder": str(encoder),
        "classifier": classifier.config.to_dict(),
        "calibration": {"temperature": float(temperature)},
        "threshold": float(threshold),
        "inconsistency": (inconsistency or InconsistencyCalibration()).to_dict(),
    }
    torch.save(classifier.own_state_dict(), directory / WEIGHTS_FILE)
    (directory / PACKAGE_FILE).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n")
    return directory


def read_bias_package(directory: Path, uri: str | None = None) -> BiasPackage:
    """Read and check bias.json (not the weights).

    Raises:
        FailedPrecondition: naming what is missing or unusable (the file, a key, a value).
    """
    directory = Path(directory)
    name = f"bias model {uri or str(directory)!r}"
    path = directory / PACKAGE_FILE
    if not directory.is_dir():
        raise FailedPrecondition(f"{name} is not a directory")
    if not path.is_file():
        raise FailedPrecondition(f"{name} is not a bias package (needs {PACKAGE_FILE})")
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise FailedPrecondition(f"{name}: {PACKAGE_FILE} is not JSON ({err})") from err
    if not isinstance(body, dict):
        raise FailedPrecondition(f"{name}: {PACKAGE_FILE} is not a JSON object")
    missing = [k for k in REQUIRED_KEYS if not body.get(k)]
    if missing:
        raise FailedPrecondition(
            f"{name}: {PACKAGE_FILE} has no {' or '.join(repr(k) for k in missing)}"
        )
    if body["kind"] != KIND:
        raise FailedPrecondition(f"{name}: {PACKAGE_FILE} kind is {body['kind']!r}, not {KIND!r}")
    try:
        config = BiasConfig.from_dict(dict(body["classifier"]))
        temperature = float(body["calibration"]["temperature"])
        threshold = float(body.get("threshold", 0.5))
        inconsistency = InconsistencyCalibration.from_dict(body.get("inconsistency") or {})
        if not temperature > 0 or not 0.0 <= threshold <= 1.0:
            raise ValueError(f"temperature {temperature} must be > 0, threshold in [0, 1]")
    except (KeyError, TypeError, ValueError) as err:
        raise FailedPrecondition(f"{name}: {PACKAGE_FILE} is unusable ({err})") from err
    known = {*REQUIRED_KEYS, "threshold", "inconsistency"}
    extra = {k: v for k, v in body.items() if k not in known}
    return BiasPackage(
        str(body["encoder"]), config, temperature, threshold, inconsistency, extra
    )


def build_detector(
    package: BiasPackage, directory: Path, encoder: LoadedModel, device: torch.device | None = None
) -> BiasDetector:
    """The detector of a package whose encoder is already loaded.

    Raises:
        FailedPrecondition: bias.pt is missing or does not fit the config, or the encoder is not
            a Concord encoder.
    """
    weights = Path(directory) / WEIGHTS_FILE
    if not weights.is_file():
        raise FailedPrecondition(f"bias model {str(directory)!r} has no {WEIGHTS_FILE}")
    model = encoder.torch_model()
    try:
        classifier = BiasClassifier.from_encoder(package.config, model)
        state = torch.load(weights, map_location="cpu", weights_only=True)
        classifier.load_own_state_dict(state)
    except (TypeError, ValueError, RuntimeError, OSError) as err:
        raise FailedPrecondition(f"bias model {str(directory)!r}: {err}") from err
    if device is not None:
        model.to(device)
        classifier.to(device)
    tokenizer = TextTokenizer(encoder.tokenizer.hf_tokenizer, package.config.max_length)
    return BiasDetector(
        classifier,
        model,
        tokenizer,
        temperature=package.temperature,
        threshold=package.threshold,
        inconsistency=package.inconsistency,
    )


def load_bias(
    uri: str, registry: Callable[[], Registry], device: torch.device | None = None
) -> LoadedBias:
    """Load the bias package named by `uri` and the encoder it is built on.

    Args:
        uri: `models:/concord-bias@production`, `models:/NAME/VERSION`, or a package directory.
        registry: returns the platform registry (called only for registry URIs).
        device: where the models run (None: the CPU).
    Returns:
        The loaded detector. A local directory is called by its name and
        `local-<8 hex of bias.json + bias.pt's sha256>`.
    Raises:
        FailedPrecondition: the package or its encoder is missing or incomplete (named).
    """

    def package_files(directory: Path) -> tuple[Path, ...]:
        read_bias_package(directory, uri)
        if not (directory / WEIGHTS_FILE).is_file():
            raise FailedPrecondition(f"bias model {uri!r} has no {WEIGHTS_FILE}")
        return (directory / PACKAGE_FILE, directory / WEIGHTS_FILE)

    model_id, directory = resolve_model(uri, registry, kind="bias", files=package_files)
    package = read_bias_package(directory, uri)
    encoder = load_model(package.encoder_uri(directory), registry)
    detector = build_detector(package, directory, encoder, device)
    return LoadedBias(detector, encoder, package, model_id, uri)
