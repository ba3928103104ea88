"""Reading the served model's description from its Triton config (the JSON Triton's API returns)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from prometheus_client import generate_latest

from gateway.metrics import GatewayMetrics
from gateway.triton import parse_model_info

LABELS = ["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]


def config(described_version: int) -> dict[str, Any]:
    metadata = {"version": described_version, "evaluation": {"abstention": {"threshold": 0.79}}}
    return {
        "max_batch_size": 64,
        "input": [{"name": "image", "data_type": "TYPE_UINT8", "dims": ["1", "48", "48"]}],
        "output": [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": ["7"]}],
        "parameters": {
            "labels": {"string_value": json.dumps(LABELS)},
            "metadata": {"string_value": json.dumps(metadata)},
            "model_card": {"string_value": "# Model card"},
        },
    }


def test_the_metadata_of_the_serving_version_is_used() -> None:
    info = parse_model_info("emotion", "2", config(described_version=2))
    assert info.abstain_threshold == 0.79 and info.card == "# Model card" and info.labels == tuple(LABELS)


def test_metadata_describing_another_version_is_ignored(caplog: pytest.LogCaptureFixture) -> None:
    """Version 2's folder removed by hand: Triton serves 1 while the model-level config still describes 2."""
    info = parse_model_info("emotion", "1", config(described_version=2))
    assert info.metadata == {} and info.card == "" and info.abstain_threshold is None
    assert any("describes version 2 but version 1 is serving" in r.message for r in caplog.records)


def test_a_version_without_a_reference_clears_the_previous_one() -> None:
    metrics = GatewayMetrics.create()
    with_reference = {"reference": {"class_distribution": {"happy": 1.0}, "mean_confidence": 0.8},
                      "input_reference": {"brightness": 0.5, "contrast": 0.16}}  # fmt: skip
    metrics.observe_model("emotion", "2", tuple(LABELS), with_reference)
    assert 'emotorch_reference_class_ratio{emotion="happy"} 1.0' in generate_latest(metrics.registry).decode()
    metrics.observe_model("emotion", "1", tuple(LABELS), {})
    text = generate_latest(metrics.registry).decode()
    assert "emotorch_reference_class_ratio{" not in text
    assert "emotorch_reference_face_contrast NaN" in text and "emotorch_reference_mean_confidence NaN" in text
