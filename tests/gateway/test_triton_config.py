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


@pytest.mark.parametrize(("size", "margin"), [(48, None), (64, 0.07)])
def test_a_config_rendered_by_publish_is_parsed_with_its_input_size_and_registration(
    size: int, margin: float | None
) -> None:
    """The pipeline's renderer and the gateway's parser meet through Triton's own protobuf and JSON mapping."""
    from google.protobuf import json_format, text_format
    from tritonclient.grpc import model_config_pb2

    from gateway.imaging import FER_MARGIN
    from pipelines.triton_config import PublishParams, render_config

    model_input: dict[str, Any] = {"shape": [-1, 1, size, size]}
    if margin is not None:
        model_input["crop_margin"] = margin
    metadata = {"version": 3, "input": model_input, "evaluation": {"abstention": {"threshold": 0.4}}}
    text = render_config(PublishParams(), LABELS, metadata, "# card")
    parsed = text_format.Parse(text, model_config_pb2.ModelConfig())
    info = parse_model_info("emotion", "3", json_format.MessageToDict(parsed, preserving_proto_field_name=True))
    assert info.input_shape == (1, size, size) and info.labels == tuple(LABELS)
    assert info.crop_margin == (FER_MARGIN if margin is None else margin)
    assert info.abstain_threshold == 0.4 and info.card == "# card"
