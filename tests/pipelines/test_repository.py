"""The model repository on disk (pipelines/repository.py): atomic version folders, numbers never reused, configs
pointed at a version and restored on a rollback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from pipelines.inference import ServingModel, script
from pipelines.labels import LABELS
from pipelines.model import build_model
from pipelines.repository import STAGING_PREFIX, existing_versions, publish_version, rollback
from pipelines.triton_config import PublishParams, render_config


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "model.pt"
    script(ServingModel(build_model("small"), list(LABELS), 0.5, 0.25)).save(str(path))
    metadata = {
        "labels": list(LABELS),
        "run_id": "abc",
        "data_fingerprint": "f00",
        "val_accuracy": 0.5,
        "reference": {"class_distribution": dict.fromkeys(LABELS, 1 / 7)},
    }
    return path, metadata


def parse_config(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_config_is_valid_triton_protobuf_with_the_contract() -> None:
    params = PublishParams(instance_count=3, max_queue_delay_us=250)
    config = parse_config(render_config(params, list(LABELS), {"version": 4, "note": 'quotes " and \\ ok'}))
    assert config.name == "emotion" and config.backend == "python" and config.max_batch_size == 64
    (image,) = config.input
    assert image.name == "image" and list(image.dims) == [1, 48, 48]
    assert model_config_pb2.DataType.Name(image.data_type) == "TYPE_UINT8"
    (probs,) = config.output
    assert probs.name == "probabilities" and list(probs.dims) == [len(LABELS)]
    assert config.instance_group[0].count == 3
    assert config.dynamic_batching.max_queue_delay_microseconds == 250
    assert json.loads(config.parameters["labels"].string_value) == list(LABELS)
    assert json.loads(config.parameters["metadata"].string_value)["note"] == 'quotes " and \\ ok'


def test_versions_count_up_and_ignore_non_versions(tmp_path: Path, exported: tuple[Path, dict[str, Any]]) -> None:
    repo = tmp_path / "repo"
    (repo / "emotion" / "007").mkdir(parents=True)  # Triton ignores leading zeros; so do we
    (repo / "emotion" / "notes").mkdir()
    assert publish_version(repo, *exported, PublishParams())[0] == 1
    assert publish_version(repo, *exported, PublishParams())[0] == 2
    assert existing_versions(repo / "emotion") == [1, 2]
    version_dir = repo / "emotion" / "2"
    assert sorted(p.name for p in version_dir.iterdir()) == ["labels.txt", "metadata.json", "model.pt", "model.py"]
    assert (version_dir / "labels.txt").read_text().split() == list(LABELS)
    assert json.loads((version_dir / "metadata.json").read_text())["version"] == 2
    config = parse_config((repo / "emotion" / "config.pbtxt").read_text())
    assert json.loads(config.parameters["metadata"].string_value)["version"] == 2


def test_a_version_removed_by_hand_keeps_its_number(tmp_path: Path, exported: tuple[Path, dict[str, Any]]) -> None:
    repo = tmp_path / "repo"
    assert [publish_version(repo, *exported, PublishParams())[0] for _ in range(2)] == [1, 2]
    shutil.rmtree(repo / "emotion" / "2")  # a rollback by hand
    assert publish_version(repo, *exported, PublishParams())[0] == 3  # 2 named another model: never reused
    assert existing_versions(repo / "emotion") == [1, 3]


def test_leftovers_of_an_interrupted_publish_are_removed(tmp_path: Path, exported: tuple[Path, dict[str, Any]]) -> None:
    repo = tmp_path / "repo"
    leftover = repo / "emotion" / f"{STAGING_PREFIX}dead"
    leftover.mkdir(parents=True)
    (leftover / "model.pt").write_bytes(b"half")
    version, _ = publish_version(repo, *exported, PublishParams())
    assert version == 1 and not leftover.exists()


def test_rollback_restores_the_previous_version_and_config(
    tmp_path: Path, exported: tuple[Path, dict[str, Any]]
) -> None:
    repo = tmp_path / "repo"
    publish_version(repo, *exported, PublishParams())
    first_config = (repo / "emotion" / "config.pbtxt").read_text()
    version, previous = publish_version(repo, *exported, PublishParams())
    rollback(repo, PublishParams(), version, previous)
    assert existing_versions(repo / "emotion") == [1]
    assert (repo / "emotion" / "config.pbtxt").read_text() == first_config


def test_backend_model_file_is_the_one_triton_runs(tmp_path: Path, exported: tuple[Path, dict[str, Any]]) -> None:
    repo = tmp_path / "repo"
    publish_version(repo, *exported, PublishParams())
    source = (repo / "emotion" / "1" / "model.py").read_text()
    assert "class TritonPythonModel" in source and "torch.jit.load" in source
    assert torch.jit.load(str(repo / "emotion" / "1" / "model.pt")).labels == list(LABELS)


def test_a_libtorch_config_for_the_ngc_image_is_published_beside_the_python_one(
    tmp_path: Path, exported: tuple[Path, dict[str, Any]]
) -> None:
    repo = tmp_path / "repo"
    params = PublishParams(libtorch_instance_count=2, libtorch_intra_op_threads=4)
    version, _ = publish_version(repo, *exported, params)
    python = parse_config((repo / "emotion" / "config.pbtxt").read_text())
    libtorch = parse_config((repo / "emotion" / "configs" / "libtorch.pbtxt").read_text())
    assert libtorch.platform == "pytorch_libtorch" and libtorch.backend == ""
    assert libtorch.default_model_filename == "model.pt"
    assert model_config_pb2.ModelInstanceGroup.Kind.Name(libtorch.instance_group[0].kind) == "KIND_GPU"
    assert libtorch.instance_group[0].count == 2
    assert libtorch.parameters["INTRA_OP_THREAD_COUNT"].string_value == "4"
    assert libtorch.parameters["INTER_OP_THREAD_COUNT"].string_value == "1"
    # The same contract and metadata, so the gateway cannot tell which backend serves.
    assert list(libtorch.input) == list(python.input) and list(libtorch.output) == list(python.output)
    for key in ("labels", "metadata"):
        assert libtorch.parameters[key].string_value == python.parameters[key].string_value
    # The libtorch backend matches the input to forward()'s argument name and the one output by position.
    scripted = torch.jit.load(str(repo / "emotion" / str(version) / "model.pt"))
    assert [a.name for a in scripted.forward.schema.arguments][1:] == [libtorch.input[0].name]
    # A rollback restores both configurations to the previous version's.
    before = (repo / "emotion" / "configs" / "libtorch.pbtxt").read_text()
    second, previous = publish_version(repo, *exported, params)
    rollback(repo, params, second, previous)
    assert (repo / "emotion" / "configs" / "libtorch.pbtxt").read_text() == before
    with pytest.raises(ValueError, match="KIND_GPU or KIND_CPU"):
        PublishParams(libtorch_instance_kind="KIND_TPU")
