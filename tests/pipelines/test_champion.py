"""The gate compares like with like: a champion evaluated on other data is re-scored on the challenger's test
split from its registered TorchScript model; one that cannot be re-scored is reported as such."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from pipelines.champion import ChampionNotScorable, score_torchscript
from pipelines.inference import ServingModel, save_scripted, script
from pipelines.labels import LABELS
from pipelines.model import build_model
from pipelines.promote import Candidate, PromoteParams, champion_on_this_data
from pipelines.tables import load_split


@pytest.fixture
def registry(tmp_path: Path) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")


def register(client: Any, tmp_path: Path, fingerprint: str, model: Path | None) -> Any:
    """A registered champion whose run recorded macro-F1 0.99 on data `fingerprint`."""
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "mlruns").as_uri())
    run = client.create_run(experiment, tags={"data_fingerprint": fingerprint})
    client.log_metric(run.info.run_id, "test_macro_f1", 0.99)
    for label in LABELS:
        client.log_metric(run.info.run_id, f"test_recall_{label}", 0.99)
    if model is not None:
        client.log_artifact(run.info.run_id, str(model), artifact_path="torchscript")
    client.create_registered_model("emotion")
    return client.create_model_version("emotion", f"{run.info.artifact_uri}/torchscript", run_id=run.info.run_id)


@pytest.fixture
def table(tmp_path: Path, canonical: pd.DataFrame) -> Path:
    path = tmp_path / "faces.parquet"
    canonical.to_parquet(path)
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    path = tmp_path / "model.pt"
    save_scripted(script(ServingModel(build_model("small"), list(LABELS), 0.5, 0.25)), path)
    return path


def challenger(fingerprint: str) -> Candidate:
    return Candidate("2", "run-2", 0.5, dict.fromkeys(LABELS, 0.5), fingerprint)


def test_champion_on_other_data_is_rescored(registry: Any, tmp_path: Path, table: Path, model: Path) -> None:
    version = register(registry, tmp_path, "old-data", model)
    champion = champion_on_this_data(registry, PromoteParams(), version, challenger("new-data"), table)
    images, labels = load_split(table, "test")
    expected_f1, expected_recall = score_torchscript(torch.jit.load(str(model)), images, labels)
    assert champion.rescored and champion.data_fingerprint == "new-data"
    assert champion.macro_f1 == pytest.approx(expected_f1) and champion.macro_f1 != pytest.approx(0.99)
    assert champion.per_class_recall == pytest.approx(expected_recall)


def test_champion_on_the_same_data_keeps_its_recorded_figures(registry: Any, tmp_path: Path, table: Path,
                                                               model: Path) -> None:  # fmt: skip
    version = register(registry, tmp_path, "same-data", model)
    champion = champion_on_this_data(registry, PromoteParams(), version, challenger("same-data"), table)
    assert not champion.rescored and champion.macro_f1 == pytest.approx(0.99)


def test_champion_without_its_artefact_cannot_be_rescored(registry: Any, tmp_path: Path, table: Path) -> None:
    version = register(registry, tmp_path, "old-data", None)
    with pytest.raises(ChampionNotScorable, match="TorchScript artefact cannot be loaded"):
        champion_on_this_data(registry, PromoteParams(), version, challenger("new-data"), table)


def test_reproducible_torchscript_bytes(tmp_path: Path) -> None:
    """Two saves of the same graph and weights are the same file (DVC outputs must not change on a rerun)."""
    torch.manual_seed(0)
    net = build_model("small")
    for name in ("a.pt", "b.pt"):
        save_scripted(script(ServingModel(net, list(LABELS), 0.5, 0.25)), tmp_path / name)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    loaded = torch.jit.load(str(tmp_path / "a.pt"))
    assert list(loaded.labels) == list(LABELS)
