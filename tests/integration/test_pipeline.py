"""The DVC pipeline end to end, and the contract of what it publishes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from pipelines.labels import LABELS
from tests.integration.conftest import run_dvc

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_second_repro_does_nothing(pipeline_project: Path) -> None:
    result = run_dvc(pipeline_project, "repro")
    assert result.returncode == 0, result.stderr
    for stage in ("generate", "ingest", "validate", "train", "export", "publish"):
        assert f"Stage '{stage}' didn't change, skipping" in result.stdout
    assert "Data and pipelines are up to date." in result.stdout
    assert not any("Running stage" in line for line in result.stdout.splitlines())


def test_data_metrics_count_every_label_in_every_split(pipeline_project: Path) -> None:
    data = json.loads((pipeline_project / "metrics" / "data.json").read_text())
    assert set(data["splits"]) == {"train", "validation", "test"}
    for counts in data["splits"].values():
        assert list(counts) == list(LABELS) and all(n > 0 for n in counts.values())
    assert sum(sum(c.values()) for c in data["splits"].values()) == 3000
    assert len(data["fingerprint"]) == 64


def test_published_version_honours_the_serving_contract(pipeline_project: Path) -> None:
    model_dir = pipeline_project / "model_repository" / "emotion"
    version_dir = model_dir / "1"
    config = text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    (model_input,) = config.input
    (model_output,) = config.output
    assert (model_input.name, model_config_pb2.DataType.Name(model_input.data_type)) == ("image", "TYPE_UINT8")
    assert list(model_input.dims) == [1, 48, 48]
    assert (model_output.name, list(model_output.dims)) == ("probabilities", [len(LABELS)])
    assert json.loads(config.parameters["labels"].string_value) == list(LABELS)

    model = torch.jit.load(str(version_dir / "model.pt"))
    assert list(model.labels) == list(LABELS) == (version_dir / "labels.txt").read_text().split()
    batch = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (config.max_batch_size, 1, 48, 48), np.uint8))
    probs = model(batch)
    assert probs.shape == (config.max_batch_size, len(LABELS)) and probs.dtype == torch.float32
    assert torch.allclose(probs.sum(1), torch.ones(len(batch)), atol=1e-5)

    metadata = json.loads((version_dir / "metadata.json").read_text())
    data = json.loads((pipeline_project / "metrics" / "data.json").read_text())
    assert metadata["data_fingerprint"] == data["fingerprint"]
    assert metadata["version"] == 1 and len(metadata["run_id"]) == 32
    assert list(metadata["reference"]["class_distribution"]) == list(LABELS)


def test_training_is_tracked_in_mlflow(pipeline_project: Path) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{pipeline_project / 'mlflow.db'}")
    metadata = json.loads((pipeline_project / "model_repository" / "emotion" / "1" / "metadata.json").read_text())
    run = client.get_run(metadata["run_id"])
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(metadata["val_accuracy"])
    assert run.data.params["model"] == "small"
    assert run.data.tags["data_fingerprint"] == metadata["data_fingerprint"]
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) >= 1
    artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "torchscript")]
    assert artifacts == ["torchscript/model.pt"]
