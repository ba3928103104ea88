"""The gate compares like with like: a champion evaluated on other data is re-scored on the challenger's test
split from its registered TorchScript model; one that cannot be re-scored is reported as such."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml

from pipelines.champion import ChampionNotScorable, score_torchscript
from pipelines.inference import ServingModel, save_scripted, script
from pipelines.labels import LABELS
from pipelines.model import build_model
from pipelines.promote import Candidate, PromoteParams, champion_on_this_data
from pipelines.promote import main as promote_main
from pipelines.tables import load_split


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow SQLite database with its schema, made once: creating and migrating one costs seconds."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def registry(tmp_path: Path, empty_store: Path) -> Any:
    from mlflow.tracking import MlflowClient

    shutil.copyfile(empty_store, tmp_path / "mlflow.db")
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


class ThreeChannelGraph(torch.nn.Module):
    """A serving graph with the project's labels that reads RGB faces: another input contract."""

    def __init__(self) -> None:
        super().__init__()
        self.labels: list[str] = list(LABELS)
        self.input_size = 48
        self.conv = torch.nn.Conv2d(3, len(LABELS), 3)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.conv(image.float()).mean((2, 3)).softmax(1)


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (lambda: script(ServingModel(build_model("small"), list(reversed(LABELS)), 0.5, 0.25)), "label order"),
        (lambda: torch.jit.script(ThreeChannelGraph()), "input contract differs"),
    ],
    ids=["other-label-order", "rgb-input"],
)
def test_champion_with_another_contract_cannot_be_rescored(registry: Any, tmp_path: Path, table: Path, graph: Any,
                                                           message: str) -> None:  # fmt: skip
    path = tmp_path / "other" / "model.pt"  # the registered artefact's name
    path.parent.mkdir()
    torch.jit.save(graph(), str(path))
    version = register(registry, tmp_path, "old-data", path)
    with pytest.raises(ChampionNotScorable, match=message):
        champion_on_this_data(registry, PromoteParams(), version, challenger("new-data"), table)


def promote_files(tmp_path: Path, table: Path, model: Path, accept: bool) -> list[str]:
    """Arguments of promote's main for a challenger trained on data `new-data` (files written to tmp_path)."""
    promote = {"model_name": "emotion", "accept_unscored_champion": accept}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"promote": promote}))
    (tmp_path / "export.json").write_text(json.dumps({"checkpoint_sha256": "c" * 64, "data_fingerprint": "new-data"}))
    recall = dict.fromkeys(LABELS, 0.5)
    (tmp_path / "eval.json").write_text(json.dumps({"macro_f1": 0.5, "per_class_recall": recall}))
    return ["--params", str(tmp_path / "params.yaml"), "--metadata", str(tmp_path / "export.json"),
            "--evaluation", str(tmp_path / "eval.json"), "--model", str(model), "--table", str(table),
            "--decision", str(tmp_path / "promotion.json")]  # fmt: skip


def test_promote_refuses_an_unscorable_champion_in_one_line_then_accepts_when_told(
    registry: Any, tmp_path: Path, table: Path, model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    champion = register(registry, tmp_path, "old-data", None)  # its TorchScript artefact was never stored
    registry.set_registered_model_alias("emotion", "champion", champion.version)
    registry.create_experiment("emotorch", artifact_location=(tmp_path / "mlruns-emotorch").as_uri())
    monkeypatch.setenv("MLFLOW_TRACKING_URI", registry.tracking_uri)

    with pytest.raises(SystemExit) as refused:
        promote_main(promote_files(tmp_path, table, model, accept=False))
    message = str(refused.value.code)
    assert "\n" not in message and message.startswith(f"promotion refused: champion version {champion.version} ")
    assert "promote.accept_unscored_champion: true" in message and "cannot be loaded" in message
    decision = json.loads((tmp_path / "promotion.json").read_text())
    assert (decision["promoted"], decision["refused"], decision["reasons"]) == (False, True, [message])
    assert decision["challenger"]["data_fingerprint"] == "new-data"

    promote_main(promote_files(tmp_path, table, model, accept=True))
    decision = json.loads((tmp_path / "promotion.json").read_text())
    assert decision["promoted"] and "refused" not in decision
    assert len(decision["reasons"]) == 1 and "accepted by promote.accept_unscored_champion" in decision["reasons"][0]
    before = decision["champion_before"]
    assert (before["comparable"], before["evaluated_on_fingerprint"], before["recorded_macro_f1"]) == (
        False, "old-data", pytest.approx(0.99))  # fmt: skip
    tags = registry.get_model_version("emotion", decision["challenger"]["registry_version"]).tags
    aliases = {k: str(v) for k, v in registry.get_registered_model("emotion").aliases.items()}
    assert tags["promotion"] == "promoted"  # promote decides; only publish moves the champion alias
    assert aliases == {"champion": str(champion.version), "challenger": decision["challenger"]["registry_version"]}


def test_reproducible_torchscript_bytes(tmp_path: Path) -> None:
    """Two saves of the same graph and weights are the same file (DVC outputs must not change on a rerun)."""
    torch.manual_seed(0)
    net = build_model("small")
    for name in ("a.pt", "b.pt"):
        save_scripted(script(ServingModel(net, list(LABELS), 0.5, 0.25)), tmp_path / name)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()
    loaded = torch.jit.load(str(tmp_path / "a.pt"))
    assert list(loaded.labels) == list(LABELS)
