"""The encoder's Open Inference Protocol v2 contract, shared by the KServe runtime, the Triton
model repository export and the encoder service's `triton` backend.

Two models per encoder, one per modality (a Triton model has one fixed set of required inputs,
and its dynamic batcher needs every input to share the batch dimension):

| model            | inputs                                           | outputs                        |
|------------------|--------------------------------------------------|--------------------------------|
| `<name>-image`   | `IMAGE` UINT8 [B, S, S, 3] (RGB, HWC, 0-255)     | `EMBEDDING` FP32 [B, E],       |
| `<name>-text`    | `INPUT_IDS` INT64 [B, T], `ATTENTION_MASK` INT64 [B, T] | `TOKENS` FP32 [B, N, E] |

S is the model's `image_size`: images are already resized (shorter side) and centre-cropped,
exactly as `concord.models.preprocess.images_to_tensor` does, so UINT8 pixels / 255 are the
model's float pixels bit for bit (4x less on the wire than FP32). `EMBEDDING` rows and
`TOKENS` vectors are L2-normalised; text `TOKENS` are zero at padding positions (N = T), image
`TOKENS` are the N patch embeddings. The KServe runtime also serves `<name>` itself, which
accepts either input set and resizes IMAGE inputs of any H x W.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

IMAGE = "IMAGE"
INPUT_IDS = "INPUT_IDS"
ATTENTION_MASK = "ATTENTION_MASK"
EMBEDDING = "EMBEDDING"
TOKENS = "TOKENS"
OUTPUTS = (EMBEDDING, TOKENS)
IMAGE_SUFFIX = "-image"
TEXT_SUFFIX = "-text"


@dataclass(frozen=True)
class TensorSpec:
    """One tensor of the contract; -1 is a variable dimension (the batch is included)."""

    name: str
    datatype: str  # v2 datatype: UINT8, INT64, FP32
    shape: tuple[int, ...]

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def image_model(name: str) -> str:
    """Returns: the name of the image model of the encoder served as `name`."""
    return name + IMAGE_SUFFIX


def text_model(name: str) -> str:
    """Returns: the name of the text model of the encoder served as `name`."""
    return name + TEXT_SUFFIX


def image_inputs(image_size: int) -> tuple[TensorSpec, ...]:
    return (TensorSpec(IMAGE, "UINT8", (-1, image_size, image_size, 3)),)


def text_inputs() -> tuple[TensorSpec, ...]:
    return (TensorSpec(INPUT_IDS, "INT64", (-1, -1)), TensorSpec(ATTENTION_MASK, "INT64", (-1, -1)))


def outputs(embed_dim: int) -> tuple[TensorSpec, ...]:
    return (
        TensorSpec(EMBEDDING, "FP32", (-1, embed_dim)),
        TensorSpec(TOKENS, "FP32", (-1, -1, embed_dim)),
    )


def pixels_to_uint8(pixels: np.ndarray) -> np.ndarray:
    """float (B, 3, S, S) in [0, 1] (from `images_to_tensor`) -> UINT8 (B, S, S, 3), exact for
    pixels that came from 8-bit images."""
    scaled = np.rint(np.asarray(pixels, dtype=np.float32) * 255.0)
    return np.ascontiguousarray(np.clip(scaled, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1))


def uint8_to_pixels(images: np.ndarray) -> np.ndarray:
    """UINT8 (B, S, S, 3) -> float32 (B, 3, S, S) in [0, 1], the same arithmetic as
    `images_to_tensor` (float then divide by 255)."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2)).astype(np.float32) / np.float32(255.0)
