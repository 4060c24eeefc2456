"""The encoder's `triton` backend: the batched model call goes through `tritonclient.grpc` to
any Open Inference Protocol v2 endpoint (Triton serving `concord export triton`'s repository,
or Concord's own KServe runtime). Tokenization and image preprocessing stay in the service.

Imported only when `encoder_backend="triton"`: `tritonclient.grpc` cannot share a process with
`kserve` (both register the `inference` protobuf package).
"""

from __future__ import annotations

import numpy as np
import torch
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from concord.errors import FailedPrecondition, Unavailable
from concord.models.dual_encoder import Encoded
from concord.runtimes import v2

_UNAVAILABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")


class TritonEncoderBackend:
    """Calls `<model>-image` and `<model>-text` at `url` (host:port of the v2 gRPC endpoint).

    Thread-safe: the batchers call it from worker threads; one gRPC channel is shared.
    """

    def __init__(
        self, url: str, model: str, timeout_s: float = 60.0, token: str | None = None
    ) -> None:
        self.url = url
        self.model = model
        # Concord's KServe predictor refuses inference without the bearer token (readiness
        # stays open); Triton ignores the header.
        self._headers = {"authorization": f"Bearer {token}"} if token else None
        self.image_model = v2.image_model(model)
        self.text_model = v2.text_model(model)
        self.timeout_s = timeout_s
        self._client = grpcclient.InferenceServerClient(url)

    def ready(self, timeout_s: float = 5.0) -> bool:
        """Returns: whether both models answer ready (False when the endpoint is down)."""
        try:
            return all(
                self._client.is_model_ready(name, client_timeout=timeout_s)
                for name in (self.image_model, self.text_model)
            )
        except InferenceServerException:
            return False

    def encode_image(self, pixels: torch.Tensor) -> Encoded:
        """float (B, 3, S, S) in [0, 1] -> Encoded, sent as UINT8 (B, S, S, 3)."""
        images = v2.pixels_to_uint8(pixels.numpy())
        pooled, tokens = self._infer(self.image_model, [(v2.IMAGE, images)])
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool)
        return Encoded(torch.from_numpy(pooled), torch.from_numpy(tokens), mask)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Encoded:
        """int64 (B, T) ids and mask -> Encoded (mask = attention_mask)."""
        ids = input_ids.to(torch.int64).numpy()
        mask = attention_mask.to(torch.int64).numpy()
        pooled, tokens = self._infer(
            self.text_model, [(v2.INPUT_IDS, ids), (v2.ATTENTION_MASK, mask)]
        )
        return Encoded(torch.from_numpy(pooled), torch.from_numpy(tokens), attention_mask.bool())

    def close(self) -> None:
        self._client.close()

    def _infer(self, model: str, arrays: list[tuple[str, np.ndarray]]) -> tuple[np.ndarray, ...]:
        inputs = []
        for name, array in arrays:
            tensor = grpcclient.InferInput(name, list(array.shape), _datatype(array))
            tensor.set_data_from_numpy(np.ascontiguousarray(array))
            inputs.append(tensor)
        outputs = [grpcclient.InferRequestedOutput(name) for name in v2.OUTPUTS]
        try:
            result = self._client.infer(
                model, inputs, outputs=outputs, client_timeout=self.timeout_s, headers=self._headers
            )
        except InferenceServerException as err:
            raise _concord_error(err, self.url, model) from err
        batch = arrays[0][1].shape[0]
        found = []
        for name in v2.OUTPUTS:
            array = result.as_numpy(name)
            if array is None or array.shape[0] != batch:
                raise FailedPrecondition(
                    f"{self.url} model {model!r} returned no {name} of batch {batch}"
                )
            found.append(np.array(array, dtype=np.float32, copy=True))  # writable for torch
        return tuple(found)


def _datatype(array: np.ndarray) -> str:
    return {np.dtype(np.uint8): "UINT8", np.dtype(np.int64): "INT64"}[array.dtype]


def _concord_error(err: InferenceServerException, url: str, model: str) -> Exception:
    status = str(err.status() or "")
    message = f"triton endpoint {url} model {model!r}: {err.message()}"
    if status in _UNAVAILABLE or not status:
        return Unavailable(message)
    return FailedPrecondition(message)  # the remote model does not fit this one: a deployment error
