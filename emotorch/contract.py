"""The Triton contract between the pipeline that publishes a model and the gateway that calls it: the tensor
names and types, the config's parameter keys, and one face's input dims.

`pipelines/triton_config.py` renders configs from it; `gateway/triton.py` parses what Triton returns with it;
the python-backend model (which runs inside Triton's stub and imports nothing of ours) reads the names from its
config. Light on purpose (standard library only): the gateway image and the pipeline both import it. A test
feeds a config rendered by publish into the gateway's parser (tests/gateway/test_triton_config.py).
"""

from __future__ import annotations

import json
from typing import Any

INPUT_NAME = "image"
INPUT_DTYPE = "uint8"  # numpy / metadata name
INPUT_TRITON_TYPE = "TYPE_UINT8"  # Triton config
INPUT_WIRE_TYPE = "UINT8"  # Triton's inference protocol
OUTPUT_NAME = "probabilities"
OUTPUT_DTYPE = "float32"
OUTPUT_TRITON_TYPE = "TYPE_FP32"

PARAM_LABELS = "labels"  # JSON list, in output order
PARAM_METADATA = "metadata"  # JSON object: the served version's export metadata, evaluation and references
PARAM_MODEL_CARD = "model_card"  # Markdown

# Exports written before the input size became the model's own (2026-11) read FER2013's 48x48 faces.
LEGACY_INPUT_SIZE = 48


def input_dims(metadata: dict[str, Any]) -> list[int]:
    """One face's input dims [C, H, W] from a version's export metadata."""
    shape = (metadata.get("input") or {}).get("shape", [-1, 1, LEGACY_INPUT_SIZE, LEGACY_INPUT_SIZE])
    return [int(d) for d in shape[1:]]


def tensor_metadata(size: int, n_labels: int) -> dict[str, dict[str, Any]]:
    """The `input` and `output` entries of export metadata (the gateway reads the crop margin from `input`)."""
    return {
        "input": {"name": INPUT_NAME, "dtype": INPUT_DTYPE, "shape": [-1, 1, size, size], "color": "grayscale"},
        "output": {"name": OUTPUT_NAME, "dtype": OUTPUT_DTYPE, "shape": [-1, n_labels]},
    }


def parameters(labels: list[str], metadata: dict[str, Any], card_markdown: str | None) -> dict[str, str]:
    """The contract's config parameters (string values), in a stable order."""
    out = {
        PARAM_LABELS: json.dumps(labels),
        PARAM_METADATA: json.dumps(metadata, separators=(",", ":"), sort_keys=True),
    }
    if card_markdown is not None:
        out[PARAM_MODEL_CARD] = card_markdown
    return out


def read_parameters(config: dict[str, Any]) -> tuple[tuple[str, ...] | None, dict[str, Any], str]:
    """Labels (None when absent), metadata and card from a config as Triton's JSON API returns it."""
    params = {k: v.get("string_value", "") for k, v in config.get("parameters", {}).items()}
    labels = tuple(json.loads(params[PARAM_LABELS])) if PARAM_LABELS in params else None
    metadata = json.loads(params[PARAM_METADATA]) if params.get(PARAM_METADATA) else {}
    return labels, metadata, params.get(PARAM_MODEL_CARD, "")
