"""Served = recorded on every path: Triton's served version, MLflow's `champion` alias and metrics/publish.json
agree after loosening the gate, promoting a worse model, reverting params.yaml and `dvc repro` (DVC's run
cache restores train/evaluate/export but never the release stage); after `dvc pull` into a fresh clone with
no MLflow database; and `dvc repro --force` there reproduces the committed dvc.lock byte for byte."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as triton_http
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from tests.integration.conftest import make_project, run_dvc, serving_triton

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARAMS = {"generate": {"n_faces": 700},
          "train": {"model": "small", "weights": "scratch", "epochs": 6, "batch_size": 32, "patience": 6}}  # fmt: skip


@dataclass(frozen=True)
class Loop:
    project: Path
    http_url: str


def repro(project: Path, *args: str, triton_url: str | None = None) -> str:
    env_before = os.environ.get("EMOTORCH_PUBLISH_TRITON_URL")
    if triton_url:
        os.environ["EMOTORCH_PUBLISH_TRITON_URL"] = triton_url  # run_dvc's environment passes it to publish
    try:
        result = run_dvc(project, "repro", *args)
    finally:
        os.environ.pop("EMOTORCH_PUBLISH_TRITON_URL", None)
        if env_before is not None:
            os.environ["EMOTORCH_PUBLISH_TRITON_URL"] = env_before
    assert result.returncode == 0, f"dvc repro failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


def champion_alias(project: Path) -> str:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    return str(client.get_model_version_by_alias("emotion", "champion").version)


def served_version(http_url: str) -> str:
    """The version that answers a version-less request, as Triton reports it."""
    client = triton_http.InferenceServerClient(http_url, network_timeout=30)
    try:
        image = triton_http.InferInput("image", [1, 1, 48, 48], "UINT8")
        image.set_data_from_numpy(np.zeros((1, 1, 48, 48), np.uint8))
        return str(client.infer("emotion", [image]).get_response()["model_version"])
    finally:
        client.close()


def assert_agreement(project: Path, http_url: str | None) -> dict:
    """publish.json, the champion alias and (with a server) Triton name the same model; returns the receipt."""
    receipt = json.loads((project / "metrics" / "publish.json").read_text())
    metadata = json.loads((project / "model_repository" / "emotion" / str(receipt["version"]) /
                           "metadata.json").read_text())  # fmt: skip
    assert metadata["lineage"]["data_fingerprint"] == metadata["data_fingerprint"]
    assert receipt["registry_version"] == champion_alias(project) == metadata["registry_version"]
    version_dir = project / "model_repository" / "emotion" / str(receipt["version"])
    config = text_format.Parse((version_dir.parent / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    assert list(config.version_policy.specific.versions) == [receipt["version"]]
    # The served version's own metadata and card, rendered from its folder (also after a rollback).
    assert json.loads(config.parameters["metadata"].string_value)["version"] == receipt["version"]
    assert config.parameters["model_card"].string_value == (version_dir / "model_card.md").read_text()
    if http_url is not None:
        assert served_version(http_url) == str(receipt["version"])
    return receipt


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    project = make_project(tmp_path_factory.mktemp("release"), PARAMS)
    repro(project)
    with serving_triton(project / "model_repository", tmp_path_factory.mktemp("release-triton")) as running:
        yield Loop(project, running.http_url)


def test_loosen_promote_revert_repro_agree(loop: Loop) -> None:
    project, params_path = loop.project, loop.project / "params.yaml"
    original = params_path.read_text()
    assert assert_agreement(project, loop.http_url)["version"] == 1

    loose = yaml.safe_load(original)
    loose["train"]["epochs"] = 1
    loose["promote"].update(macro_f1_tolerance=1.0, max_recall_drop=1.0)
    params_path.write_text(yaml.safe_dump(loose, sort_keys=False))
    repro(project, triton_url=loop.http_url)
    receipt = assert_agreement(project, loop.http_url)
    assert receipt["version"] == 2 and receipt["newly_published"] and champion_alias(project) == "2"

    params_path.write_text(original)
    output = repro(project, triton_url=loop.http_url)
    assert "Stage 'train' is cached - skipping run" in output  # DVC's run cache restores the data stages
    assert "Running stage 'release'" in output  # never from the run cache
    decision = json.loads((project / "metrics" / "promotion.json").read_text())
    receipt = assert_agreement(project, loop.http_url)
    if decision["promoted"]:  # the 6-epoch model is back: its version is served again, not re-published
        assert receipt["version"] == 1 and not receipt["newly_published"] and champion_alias(project) == "1"
    versions = sorted(p.name for p in (project / "model_repository" / "emotion").iterdir() if p.name.isdigit())
    assert versions == ["1", "2"]

    again = repro(project, triton_url=loop.http_url)  # nothing changed: the release stage changes nothing either
    assert "Running stage 'train'" not in again and "published emotion version" not in again
    after = assert_agreement(project, loop.http_url)
    assert (after["version"], after["registry_version"]) == (receipt["version"], receipt["registry_version"])


def test_fresh_clone_after_dvc_pull_then_force_reproduces_the_lock(loop: Loop, tmp_path: Path) -> None:
    project = loop.project
    assert run_dvc(project, "remote", "add", "--local", "-f", "-d", "scratch", str(tmp_path / "remote")).returncode == 0
    assert run_dvc(project, "push").returncode == 0
    clone = tmp_path / "clone"
    clone.mkdir()
    for name in ("dvc.yaml", "dvc.lock", "params.yaml"):
        shutil.copy(project / name, clone / name)
    shutil.copytree(project / "pipelines", clone / "pipelines", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(project / ".dvc", clone / ".dvc", ignore=shutil.ignore_patterns("cache", "tmp"))
    assert run_dvc(clone, "pull").returncode == 0
    assert not (clone / "mlflow.db").exists() and not (clone / "model_repository").exists()

    output = repro(clone)
    assert "Running stage 'train'" not in output and "Running stage 'release'" in output
    receipt = assert_agreement(clone, None)
    assert receipt["version"] == 1 and champion_alias(clone) == "1"
    assert (clone / "dvc.lock").read_text() == (project / "dvc.lock").read_text()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    run = MlflowClient(tracking_uri=f"sqlite:///{clone / 'mlflow.db'}").get_run(receipt["run_id"])
    assert run.data.tags["recreated_by"] == "promote" and "test_macro_f1" in run.data.metrics

    repro(clone, "--force")  # every stage reruns: train, evaluate and export must write the same bytes
    assert (clone / "dvc.lock").read_text() == (project / "dvc.lock").read_text()
    assert assert_agreement(clone, None)["version"] == 1
