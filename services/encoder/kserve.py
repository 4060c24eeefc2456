"""The encoder as a KServe predictor: `kserve.Model`s served by `kserve.ModelServer` over the
Open Inference Protocol v2 (REST and gRPC). The Helm chart's InferenceService runs

    python -m services.encoder.kserve --model_name=encoder --http_port=8080 --grpc_port=8081

Three models share one loaded encoder (tensor contract: `concord.runtimes.v2`):

- `<model_name>`: `IMAGE` UINT8 [B, H, W, 3] (RGB; resized and centre-cropped to the model's
  image size like the gRPC service does, unless already S x S), or `INPUT_IDS` +
  `ATTENTION_MASK` INT64 [B, T] (token ids from the model's tokenizer);
- `<model_name>-image` / `<model_name>-text`: one modality each, the same models
  `concord export triton` writes for Triton (so the encoder service's `triton` backend can
  point at this server or at Triton alike).

Outputs: `EMBEDDING` FP32 [B, E] and `TOKENS` FP32 [B, N, E]; all of them unless the request
names some. Binary outputs follow the request (`use_binary_outputs`). The model comes from
`--model_uri`, else `CONCORD_ENCODER_MODEL`, through the same loading code as the gRPC service.

With `CONCORD_SERVING__AUTH_TOKEN` set, every inference call (REST `/v2/models/*/infer`,
`/v1/models/*:predict`, gRPC `ModelInfer`) must carry `authorization: Bearer <token>`:
without it REST answers 401 and gRPC UNAUTHENTICATED. Liveness, readiness, model metadata and
`/metrics` stay open, like health and reflection on the gRPC services.

Never import this module beside `tritonclient.grpc` (both register the `inference` proto
package); `tritonclient.http` is fine.
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import logging
from collections.abc import Callable
from typing import Any, Literal

import kserve
import numpy as np
import torch
from fastapi import HTTPException
from grpc_interceptor.exceptions import Unauthenticated
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse, RequestedOutput
from PIL import Image

from concord.checkpoints import LoadedModel, load_model
from concord.config import Settings, load_settings
from concord.devices import Precision, configure_torch_threads, describe, inference, service_device
from concord.models.dual_encoder import Encoded
from concord.models.preprocess import images_to_tensor
from concord.registry import Registry
from concord.runtimes import v2

log = logging.getLogger(__name__)

Modality = Literal["any", "image", "text"]
GRPC_MAX_MESSAGE_BYTES = 256 << 20


class EncoderKServeModel(kserve.Model):
    """One v2 model over the encoder.

    Args:
        name: the model name in the v2 URLs (`/v2/models/<name>/infer`).
        uri: what to load (`models:/...` or a model directory); see `load_model`.
        registry: returns the registry (called only for `models:/` URIs).
        modality: "any" accepts IMAGE or INPUT_IDS + ATTENTION_MASK; "image"/"text" only one.
        shared: another EncoderKServeModel whose loaded encoder this one reuses.
        auth_token: when set, inference calls need `authorization: Bearer <auth_token>`.
        device: where the model runs (the pod's GPU under the chart's InferenceService).
        precision: autocast dtype on a GPU (see `concord.devices.autocast`).
    """

    def __init__(
        self,
        name: str,
        uri: str,
        registry: Callable[[], Registry],
        modality: Modality = "any",
        shared: EncoderKServeModel | None = None,
        auth_token: str | None = None,
        device: torch.device | None = None,
        precision: Precision = "auto",
    ) -> None:
        super().__init__(name)
        self.uri = uri
        self.device = device or torch.device("cpu")
        self.precision = precision
        self._expected = f"Bearer {auth_token}" if auth_token else None
        self.modality = modality
        self._registry = registry
        self._shared = shared
        self.loaded: LoadedModel | None = None

    def load(self) -> bool:
        if self._shared is not None:
            if self._shared.loaded is None:
                self._shared.load()
            self.loaded = self._shared.loaded
        else:
            self.loaded = load_model(self.uri, self._registry)
            self.loaded.torch_model().to(self.device)
            log.info(
                "kserve model %s serving %s from %s on %s",
                self.name,
                self.loaded.id,
                self.uri,
                describe(self.device, self.precision),
            )
        self.ready = True
        return self.ready

    # ------------------------------------------------------------------ auth

    async def __call__(  # type: ignore[override]
        self, body: Any, headers: dict[str, str] | None = None, *args: Any, **kwargs: Any
    ) -> Any:
        """Every inference verb enters here (REST v1/v2 and gRPC), after the request is parsed;
        health, readiness and metadata do not."""
        if self._expected is not None:
            given = {k.lower(): v for k, v in (headers or {}).items()}.get("authorization", "")
            if not hmac.compare_digest(str(given).encode(), self._expected.encode()):
                if isinstance(body, InferRequest) and body.from_grpc:
                    raise Unauthenticated("missing or wrong bearer token")
                raise HTTPException(
                    401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
                )
        return await super().__call__(body, headers, *args, **kwargs)

    # ------------------------------------------------------------------ metadata

    def get_input_types(self) -> list[dict[str, Any]]:
        size = self._require().image_size
        specs = {
            "any": (*v2.image_inputs(size), *v2.text_inputs()),
            "image": v2.image_inputs(size),
            "text": v2.text_inputs(),
        }[self.modality]
        return [s.as_dict() for s in specs]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [s.as_dict() for s in v2.outputs(self._require().embed_dim)]

    # ------------------------------------------------------------------ predict

    async def predict(
        self,
        payload: InferRequest,  # type: ignore[override]
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> InferResponse:
        if not isinstance(payload, InferRequest):
            raise InvalidInput("the encoder speaks the Open Inference Protocol v2 only")
        names = {i.name for i in payload.inputs}
        wanted = self._requested(payload)
        if v2.IMAGE in names and self.modality in ("any", "image"):
            if names != {v2.IMAGE}:
                raise InvalidInput(f"IMAGE goes alone, got inputs {sorted(names)}")
            images = _input(payload, v2.IMAGE, np.uint8, ndim=4)
            if images.shape[-1] != 3:
                raise InvalidInput(f"IMAGE must be [B, H, W, 3] RGB, got {list(images.shape)}")
            encoded = await asyncio.to_thread(self._encode_images, images)
        elif {v2.INPUT_IDS, v2.ATTENTION_MASK} == names and self.modality in ("any", "text"):
            ids = _input(payload, v2.INPUT_IDS, np.int64, ndim=2)
            mask = _input(payload, v2.ATTENTION_MASK, np.int64, ndim=2)
            if ids.shape != mask.shape:
                raise InvalidInput(f"INPUT_IDS {ids.shape} and ATTENTION_MASK {mask.shape} differ")
            encoded = await asyncio.to_thread(self._encode_texts, ids, mask)
        else:
            expected = {
                "any": "IMAGE, or INPUT_IDS and ATTENTION_MASK",
                "image": "IMAGE",
                "text": "INPUT_IDS and ATTENTION_MASK",
            }[self.modality]
            raise InvalidInput(f"model {self.name} takes {expected}; got {sorted(names)}")
        arrays = {
            v2.EMBEDDING: encoded.pooled.float().numpy(),
            v2.TOKENS: encoded.tokens.float().numpy(),
        }
        outputs = []
        for name in wanted:
            output = InferOutput(name, list(arrays[name].shape), "FP32")
            # raw bytes; to_rest re-encodes as JSON when the request asked for that
            output.set_data_from_numpy(arrays[name], binary_data=True)
            outputs.append(output)
        requested = None
        if payload.request_outputs and not payload.from_grpc:
            # REST: each named output may ask for binary or JSON; unset follows the request
            requested = []
            for r in payload.request_outputs:
                binary = payload.use_binary_outputs if r.binary_data is None else r.binary_data
                requested.append(
                    RequestedOutput(r.name, {**(r.parameters or {}), "binary_data": bool(binary)})
                )
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            model_version=str(self._require().id.version),
            infer_outputs=outputs,
            use_binary_outputs=payload.use_binary_outputs,
            requested_outputs=requested,
        )

    def _requested(self, payload: InferRequest) -> list[str]:
        if not payload.request_outputs:
            return list(v2.OUTPUTS)  # the v2 protocol: no outputs named -> all of them
        names = [r.name for r in payload.request_outputs]
        unknown = sorted(set(names) - set(v2.OUTPUTS))
        if unknown:
            raise InvalidInput(f"unknown outputs {unknown}; the encoder has {list(v2.OUTPUTS)}")
        return names

    def _encode_images(self, images: np.ndarray) -> Encoded:
        model = self._require().torch_model()
        size = self._require().image_size
        if images.shape[1:3] == (size, size):
            pixels = torch.from_numpy(v2.uint8_to_pixels(images))
        else:
            pixels = images_to_tensor([Image.fromarray(a) for a in images], size)
        with inference(self.device, self.precision):
            return _on_cpu(model.encode_image(pixels.to(self.device)))

    def _encode_texts(self, ids: np.ndarray, mask: np.ndarray) -> Encoded:
        model = self._require().torch_model()
        inputs = torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device)
        with inference(self.device, self.precision):
            return _on_cpu(model.encode_text(*inputs))

    def _require(self) -> LoadedModel:
        if self.loaded is None:
            raise InvalidInput(f"model {self.name} is not loaded")
        return self.loaded


def _on_cpu(encoded: Encoded) -> Encoded:
    """float32 CPU tensors whatever device and autocast dtype produced them."""
    return Encoded(encoded.pooled.float().cpu(), encoded.tokens.float().cpu(), encoded.mask.cpu())


def _input(payload: InferRequest, name: str, dtype: type, ndim: int) -> np.ndarray:
    tensor = payload.get_input_by_name(name)
    assert tensor is not None
    array = tensor.as_numpy()
    if array.dtype != np.dtype(dtype):
        raise InvalidInput(f"{name} must be {np.dtype(dtype).name}, got {tensor.datatype}")
    if array.ndim != ndim or array.shape[0] < 1:
        raise InvalidInput(f"{name} must have {ndim} dims and a batch >= 1, got {array.shape}")
    return np.array(array, copy=True, order="C")  # writable: torch.from_numpy needs that


def build_models(
    name: str,
    uri: str,
    registry: Callable[[], Registry],
    auth_token: str | None = None,
    device: torch.device | None = None,
    precision: Precision = "auto",
) -> list[EncoderKServeModel]:
    """Returns: `name` (either modality), `name-image` and `name-text`, sharing one encoder
    on `device` (and, when `auth_token` is set, each refusing inference calls without it)."""
    options: dict[str, Any] = {"auth_token": auth_token, "device": device, "precision": precision}
    main = EncoderKServeModel(name, uri, registry, **options)
    return [
        main,
        EncoderKServeModel(v2.image_model(name), uri, registry, "image", shared=main, **options),
        EncoderKServeModel(v2.text_model(name), uri, registry, "text", shared=main, **options),
    ]


def main(argv: list[str] | None = None) -> None:
    """`python -m services.encoder.kserve`: KServe's standard model-server flags plus
    `--model_uri` (default: the `encoder_model` setting)."""
    parser = argparse.ArgumentParser(parents=[kserve.model_server.parser])
    parser.add_argument("--model_uri", default=None, help="models:/NAME@ALIAS or a model dir")
    parser.set_defaults(  # token tensors outgrow KServe's 8 MiB default at batch 32
        grpc_max_send_message_length=GRPC_MAX_MESSAGE_BYTES,
        grpc_max_receive_message_length=GRPC_MAX_MESSAGE_BYTES,
    )
    args, _ = parser.parse_known_args(argv)
    shared = kserve.model_server.args  # what ModelServer hands its gRPC server
    shared.grpc_max_send_message_length = args.grpc_max_send_message_length
    shared.grpc_max_receive_message_length = args.grpc_max_receive_message_length
    settings: Settings = load_settings()
    uri = args.model_uri or settings.encoder_model
    token = settings.serving.auth_token
    configure_torch_threads(settings.device)
    models = build_models(
        args.model_name,
        uri,
        lambda: Registry.from_settings(settings),
        token.get_secret_value() if token else None,
        # a GPU asked and not visible fails here, before the server starts
        service_device(settings.device, "encoder"),
        settings.device.precision,
    )
    for model in models:
        model.load()
    kserve.ModelServer(http_port=args.http_port, grpc_port=args.grpc_port).start(models)


if __name__ == "__main__":
    main()
