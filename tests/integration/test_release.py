"""Served = recorded on every path: Triton's served version, MLflow's `champion` alias and metrics/publish.json
agree after loosening the gate, promoting a worse model, reverting params.yaml and `dvc repro` (DVC's run
cache restores train/evaluate/export but never the release stage); after `dvc pull` into a fresh clone with
no MLflow database; and `dvc repro --force` there reproduces the committed dvc.lock byte for byte. The gate
compares like with like: after switching `data.source` to a FER2013 CSV, the champion is re-scored on the
challenger's test split; when it cannot be, `dvc repro` fails with one line naming
`promote.accept_unscored_champion`, and setting it accepts the challenger. A release killed mid-publish leaves
the previous champion recorded everywhere, and the next `dvc repro` finishes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest
import tritonclient.http as triton_http
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from emotorch.stack import tool_environment
from pipelines.champion import score_torchscript
from pipelines.labels import LABELS
from pipelines.promote import Candidate, PromoteParams, decide
from pipelines.synthetic import generate_faces
from pipelines.tables import load_split
from tests.integration.conftest import make_project, run_dvc, serving_triton, tracked_copy

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PARAMS: dict[str, dict[str, object]] = {"generate": {"n_faces": 700},
          "train": {"model": "small", "weights": "scratch", "epochs": 6, "batch_size": 32, "patience": 6,
                    "torch_threads": 1}}  # fmt: skip


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


def registry(project: Path) -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def champion_alias(project: Path) -> str:
    return str(registry(project).get_model_version_by_alias("emotion", "champion").version)


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
    clone = tracked_copy(project, tmp_path / "clone")
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


# fer2013.csv's own class codes (not the project's label order): the CSV below is written in the published format.
FER2013_CODES = {"angry": 0, "disgust": 1, "fear": 2, "happy": 3, "sad": 4, "surprise": 5, "neutral": 6}
CSV_SPLITS = {"Training": 280, "PublicTest": 70, "PrivateTest": 70}


def write_fer2013_csv(path: Path, seed: int) -> None:
    """A small fer2013.csv (`emotion,pixels,Usage`) of other faces than the synthetic source's."""
    rows = ["emotion,pixels,Usage"]
    for offset, (usage, n) in enumerate(CSV_SPLITS.items()):
        for label, face in generate_faces(n, seed=seed * 1000 + offset):
            rows.append(f"{FER2013_CODES[LABELS[label]]},{' '.join(map(str, face.ravel().tolist()))},{usage}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")


def use_data_source(project: Path, source: str, **promote: object) -> None:
    """Point params.yaml at the synthetic data or at a FER2013 CSV (written once), 3 epochs on the CSV."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    csv = Path("data/raw/fer2013/fer2013.csv")
    if source == "fer2013_csv" and not (project / csv).exists():
        write_fer2013_csv(project / csv, seed=77)
    path = csv if source == "fer2013_csv" else Path("data/raw/synthetic/fer2013.csv")
    params["data"].update(source=source, path=str(path))
    params["train"]["epochs"] = 3 if source == "fer2013_csv" else PARAMS["train"]["epochs"]
    params["promote"].update(promote)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def data_fingerprint(project: Path) -> str:
    return str(json.loads((project / "metrics" / "data.json").read_text())["fingerprint"])


def served_metadata(project: Path) -> dict[str, Any]:
    version = json.loads((project / "metrics" / "publish.json").read_text())["version"]
    return dict(json.loads((project / "model_repository" / "emotion" / str(version) / "metadata.json").read_text()))


def registered_model(client: Any, run_id: str) -> Path:
    """The TorchScript artefact a registry version's run holds (what promote re-scores)."""
    return Path(urlparse(client.get_run(run_id).info.artifact_uri).path) / "torchscript" / "model.pt"


def test_switching_the_data_source_rescores_the_champion(loop: Loop) -> None:
    project = loop.project
    champion_before, old_fingerprint = champion_alias(project), data_fingerprint(project)
    use_data_source(project, "fer2013_csv")
    repro(project, triton_url=loop.http_url)
    new_fingerprint = data_fingerprint(project)
    assert new_fingerprint != old_fingerprint

    decision = json.loads((project / "metrics" / "promotion.json").read_text())
    challenger, champion = decision["challenger"], decision["champion_before"]
    assert challenger["data_fingerprint"] == champion["data_fingerprint"] == new_fingerprint
    assert champion["evaluated_on_fingerprint"] == old_fingerprint and champion["rescored"]
    assert champion["registry_version"] == champion_before
    recorded = registry(project).get_run(champion["run_id"]).data.metrics["test_macro_f1"]
    assert champion["recorded_macro_f1"] == pytest.approx(recorded)
    # Both as served: the champion's registered TorchScript and the challenger's exported one, on the new test
    # split, by the scoring code of evaluate's test figures (evaluate's own figure scores the eager checkpoint).
    images, labels = load_split(project / "data" / "processed" / "faces.parquet", "test")
    macro_f1, recall = score_torchscript(torch_load(registered_model(registry(project), champion["run_id"])),
                                         images, labels)  # fmt: skip
    assert champion["macro_f1"] == pytest.approx(macro_f1) and champion["per_class_recall"] == pytest.approx(recall)
    macro_f1, recall = score_torchscript(torch_load(project / "models" / "model.pt"), images, labels)
    assert challenger["rescored"] and challenger["macro_f1"] == pytest.approx(macro_f1)
    assert challenger["per_class_recall"] == pytest.approx(recall)
    evaluation = json.loads((project / "metrics" / "eval.json").read_text())
    assert challenger["evaluate_macro_f1"] == pytest.approx(evaluation["macro_f1"])  # recorded beside it
    verdict, _ = decide(Candidate(**_candidate(challenger)), Candidate(**_candidate(champion)),
                        PromoteParams(**decision["thresholds"]))  # fmt: skip
    assert decision["promoted"] is verdict

    receipt = assert_agreement(project, loop.http_url)
    expected = (challenger if decision["promoted"] else champion)["registry_version"]
    assert receipt["registry_version"] == expected
    assert served_metadata(project)["data_fingerprint"] == (new_fingerprint if verdict else old_fingerprint)


def test_unscorable_champion_refuses_in_one_line_until_accepted(loop: Loop) -> None:
    project, client = loop.project, registry(loop.project)
    champion = client.get_model_version_by_alias("emotion", "champion")
    if client.get_run(champion.run_id).data.tags["data_fingerprint"] == data_fingerprint(project):
        source = yaml.safe_load((project / "params.yaml").read_text())["data"]["source"]
        use_data_source(project, "synthetic" if source == "fer2013_csv" else "fer2013_csv")
    registered_model(client, champion.run_id).unlink()  # e.g. pruned from the artifact store

    result = run_dvc(project, "repro")
    output = result.stdout + result.stderr
    refusals = [line for line in output.splitlines() if "promotion refused" in line]
    assert result.returncode != 0 and len(refusals) == 1, output[-3000:]
    assert refusals[0].startswith(f"promotion refused: champion version {champion.version} cannot be scored")
    assert "promote.accept_unscored_champion: true" in refusals[0] and "cannot be loaded" in refusals[0]
    assert json.loads((project / "metrics" / "promotion.json").read_text())["refused"]
    assert assert_agreement(project, loop.http_url)["registry_version"] == str(champion.version)  # still serving

    use_data_source(project, yaml.safe_load((project / "params.yaml").read_text())["data"]["source"],
                    accept_unscored_champion=True)  # fmt: skip
    repro(project, triton_url=loop.http_url)
    decision = json.loads((project / "metrics" / "promotion.json").read_text())
    assert decision["promoted"] and "accepted by promote.accept_unscored_champion" in decision["reasons"][0]
    receipt = assert_agreement(project, loop.http_url)
    assert receipt["registry_version"] == decision["challenger"]["registry_version"] != str(champion.version)
    assert served_metadata(project)["data_fingerprint"] == data_fingerprint(project)


def torch_load(path: Path) -> Any:
    import torch

    return torch.jit.load(str(path), map_location="cpu").eval()


def _candidate(record: dict[str, Any]) -> dict[str, Any]:
    keys = ("registry_version", "run_id", "macro_f1", "per_class_recall", "data_fingerprint", "rescored")
    return {k: record[k] for k in keys}


def test_a_release_killed_mid_publish_is_finished_by_the_next_repro(loop: Loop) -> None:
    """SIGKILL the whole `dvc repro` the moment publish stages a new version folder: the three records still name
    the previous champion, and the next `dvc repro` finishes the release, publishing the new version once."""
    project = loop.project
    before = assert_agreement(project, loop.http_url)
    model_dir = project / "model_repository" / "emotion"
    versions_before = {p.name for p in model_dir.iterdir() if p.name.isdigit()}
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["epochs"] = 2  # a checkpoint no earlier run made
    params["promote"].update(macro_f1_tolerance=1.0, max_recall_drop=1.0, accept_unscored_champion=True)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    env = tool_environment() | {"EMOTORCH_PUBLISH_TRITON_URL": loop.http_url}
    process = subprocess.Popen([sys.executable, "-m", "dvc", "repro"], cwd=project, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    killed, deadline = False, time.monotonic() + 600
    while process.poll() is None and time.monotonic() < deadline:
        if any(p.name.startswith(".staging-") for p in model_dir.iterdir()):
            os.killpg(process.pid, signal.SIGKILL)  # dvc, the stage wrapper and publish, mid-copy
            killed = True
            break
        time.sleep(0.001)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert killed, "publish never staged a new version"
    crashed = assert_agreement(project, loop.http_url)
    assert (crashed["version"], crashed["registry_version"]) == (before["version"], before["registry_version"])

    repro(project, triton_url=loop.http_url)
    receipt = assert_agreement(project, loop.http_url)
    assert receipt["newly_published"] and receipt["registry_version"] != before["registry_version"]
    assert {p.name for p in model_dir.iterdir() if p.name.isdigit()} == versions_before | {str(receipt["version"])}
    assert not list(model_dir.glob(".staging-*"))
