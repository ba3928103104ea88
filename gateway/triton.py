"""The gateway's one adapter to Triton: async gRPC, explicit deadlines, Triton errors as gateway errors.

The served model describes itself: labels, input contract and metadata are read from its Triton config, and
re-read whenever an answer comes from a version the adapter has not seen, so a newly loaded version is picked
up without restarting the gateway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tritonclient.grpc.aio import InferenceServerClient
from tritonclient.grpc.aio import InferInput as GrpcInferInput
from tritonclient.utils import InferenceServerException

from emotorch import contract
from gateway.errors import BadInputError, InferenceTimeoutError, ModelUnavailableError
from gateway.imaging import FER_MARGIN

logger = logging.getLogger(__name__)

_TIMEOUT_STATUSES = {"StatusCode.DEADLINE_EXCEEDED"}
_BAD_INPUT_STATUSES = {"StatusCode.INVALID_ARGUMENT"}
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),  # tritonclient's defaults, which channel_args replace
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


@dataclass(frozen=True)
class ModelInfo:
    """What the served model says about itself."""

    name: str
    version: str
    labels: tuple[str, ...]
    input_name: str
    input_shape: tuple[int, int, int]  # channels, height, width of one face
    output_name: str
    max_batch_size: int
    metadata: dict[str, Any] = field(default_factory=dict)
    card: str = ""  # the version's model card (Markdown), written by the pipeline

    @property
    def crop_margin(self) -> float:
        """How much the face box is widened before the crop: the registration the model's weights expect."""
        margin = (self.metadata.get("input") or {}).get("crop_margin")
        return float(margin) if isinstance(margin, int | float) and 0.0 <= margin <= 1.0 else FER_MARGIN

    @property
    def abstain_threshold(self) -> float | None:
        """The confidence below which the pipeline says this model's answers are not reliable enough."""
        threshold = ((self.metadata.get("evaluation") or {}).get("abstention") or {}).get("threshold")
        return float(threshold) if threshold is not None else None


def parse_model_info(name: str, version: str, config: dict[str, Any]) -> ModelInfo:
    """Build ModelInfo from Triton's JSON model config; raise ValueError if the contract is broken."""
    labels, metadata, card = contract.read_parameters(config)
    if labels is None:
        raise ValueError(f"model {name!r} config has no {contract.PARAM_LABELS!r} parameter")
    (model_input,) = config["input"]
    (model_output,) = config["output"]
    dims = tuple(int(d) for d in model_input["dims"])
    if len(dims) != 3 or model_input.get("data_type") != contract.INPUT_TRITON_TYPE:
        raise ValueError(f"model {name!r} input must be UINT8 [C, H, W], got {model_input}")
    if [int(d) for d in model_output["dims"]] != [len(labels)]:
        raise ValueError(f"model {name!r} output dims {model_output['dims']} do not match {len(labels)} labels")
    described = metadata.get("version")
    if described is not None and str(described) != str(version):
        # The config is model-level: after a version folder is removed by hand it still describes that version.
        # Another version's threshold, drift reference and card would be wrong for this one: use none.
        logger.warning("the config of %r describes version %s but version %s is serving: its metadata is ignored",
                       name, described, version)  # fmt: skip
        metadata, card = {}, ""
    return ModelInfo(
        name=name,
        version=version,
        labels=labels,
        input_name=model_input["name"],
        input_shape=(dims[0], dims[1], dims[2]),
        output_name=model_output["name"],
        max_batch_size=int(config.get("max_batch_size", 0)),
        metadata=metadata,
        card=card,
    )


class TritonClassifier:
    """Classify batches of face crops with the model served by Triton."""

    def __init__(self, url: str, model_name: str, timeout_s: float, retry_after_s: int = 5) -> None:
        # Reconnect fast after Triton restarts: gRPC's default backoff grows to two minutes.
        self._client = InferenceServerClient(url, channel_args=_CHANNEL_ARGS)
        self._url = url
        self.model_name = model_name
        self.timeout_s = timeout_s
        self._retry_after = {"Retry-After": str(retry_after_s)}
        self._info: ModelInfo | None = None
        self._lock = asyncio.Lock()

    async def close(self) -> None:
        await self._client.close()

    def _translate(self, e: InferenceServerException, action: str) -> Exception:
        status = str(e.status() or "")
        if status in _TIMEOUT_STATUSES:
            return InferenceTimeoutError(f"Triton did not answer {action} within {self.timeout_s:g} s")
        if status in _BAD_INPUT_STATUSES:
            return BadInputError(f"Triton rejected the input: {e.message()}")
        # The address and Triton's own words go to the log, not to clients.
        logger.warning("model %r is not available at %s (%s: %s)", self.model_name, self._url, action, e.message())
        return ModelUnavailableError(
            f"model {self.model_name!r} is not available: the inference server did not answer ({action})",
            headers=self._retry_after,
        )

    async def is_ready(self) -> bool:
        """True when Triton answers and the model is ready to serve."""
        try:
            return bool(await self._client.is_model_ready(self.model_name, client_timeout=self.timeout_s))
        except InferenceServerException:
            return False

    async def model_info(self, refresh: bool = False) -> ModelInfo:
        """The served model's description, cached until a new version answers."""
        if self._info is not None and not refresh:
            return self._info
        async with self._lock:
            if self._info is not None and not refresh:
                return self._info
            try:
                metadata = await self._client.get_model_metadata(
                    self.model_name, as_json=True, client_timeout=self.timeout_s
                )
                config = await self._client.get_model_config(
                    self.model_name, as_json=True, client_timeout=self.timeout_s
                )
            except InferenceServerException as e:
                raise self._translate(e, "model metadata") from e
            versions = sorted(metadata.get("versions", []), key=int)
            if not versions:
                raise ModelUnavailableError(f"model {self.model_name!r} has no ready version", self._retry_after)
            try:
                info = parse_model_info(self.model_name, versions[-1], config["config"])
            except (KeyError, ValueError) as e:
                raise ModelUnavailableError(f"served model breaks the gateway contract: {e}", self._retry_after) from e
            if self._info is None or info.version != self._info.version:
                logger.info("serving %s version %s (labels %s)", info.name, info.version, ",".join(info.labels))
            self._info = info
            return info

    async def wait_until_ready(self, timeout_s: float) -> bool:
        """Poll until the model is ready or the deadline passes; never raises."""
        deadline = time.monotonic() + timeout_s
        while True:
            if await self.is_ready():
                try:
                    await self.model_info(refresh=True)
                    return True
                except (ModelUnavailableError, InferenceTimeoutError) as e:
                    logger.warning("model ready but unusable: %s", e)
            if time.monotonic() >= deadline:
                logger.warning("model %r not ready at %s after %.0f s", self.model_name, self._url, timeout_s)
                return False
            await asyncio.sleep(0.5)

    async def classify(self, faces: np.ndarray) -> tuple[np.ndarray, ModelInfo]:
        """Probabilities (N x labels) for uint8 faces (N x C x H x W) in one request, and the model that answered."""
        info = await self.model_info()
        if faces.shape[1:] != info.input_shape:
            raise BadInputError(f"faces must be {info.input_shape}, got {faces.shape[1:]}")
        infer_input = GrpcInferInput(info.input_name, list(faces.shape), "UINT8")
        infer_input.set_data_from_numpy(np.ascontiguousarray(faces, dtype=np.uint8))
        try:
            result = await self._client.infer(self.model_name, [infer_input], client_timeout=self.timeout_s)
        except InferenceServerException as e:
            raise self._translate(e, "inference") from e
        answered = str(result.get_response().model_version)
        if answered != info.version:
            info = await self.model_info(refresh=True)
            if answered != info.version:
                # The labels we hold are not the answering version's: better 503 than a mislabelled answer.
                raise ModelUnavailableError(f"model version changed during the request ({answered})", self._retry_after)
        probabilities = result.as_numpy(info.output_name)
        if probabilities is None or probabilities.shape != (faces.shape[0], len(info.labels)):
            raise ModelUnavailableError("model answered with an unexpected output shape", self._retry_after)
        return probabilities, info
