"""The DVC pipeline end to end, and the contract of what it publishes."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from pipelines.labels import LABELS
from tests.integration.conftest import PROJECT_ROOT, make_project, run_dvc, tracked_copy

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_second_repro_changes_nothing(pipeline_project: Path) -> None:
    """Every data stage is skipped; the release stage always runs (it reconciles state DVC cannot see) and
    finds the champion already published: no new version, the same receipt."""
    before = json.loads((pipeline_project / "metrics" / "publish.json").read_text())
    lock = (pipeline_project / "dvc.lock").read_text()
    result = run_dvc(pipeline_project, "repro")
    assert result.returncode == 0, result.stderr
    for stage in ("generate", "ingest", "validate", "train", "evaluate", "export"):
        assert f"Stage '{stage}' didn't change, skipping" in result.stdout
    ran = [line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["release"]
    assert "already holds this model: serving it, nothing new published" in result.stdout + result.stderr
    after = json.loads((pipeline_project / "metrics" / "publish.json").read_text())
    assert (after["version"], after["registry_version"], after["newly_published"]) == (before["version"],
                                                                                      before["registry_version"], False)
    assert (pipeline_project / "dvc.lock").read_text() == lock


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


def test_training_is_tracked_in_mlflow_and_registered(pipeline_project: Path) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{pipeline_project / 'mlflow.db'}")
    metadata = json.loads((pipeline_project / "model_repository" / "emotion" / "1" / "metadata.json").read_text())
    run = client.get_run(metadata["run_id"])
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(metadata["val_accuracy"])
    assert run.data.metrics["test_macro_f1"] == pytest.approx(metadata["evaluation"]["macro_f1"])
    assert run.data.params["model"] == "small" and run.data.params["epochs"] == "8"
    assert run.data.tags["data_fingerprint"] == metadata["data_fingerprint"]
    assert {"git_commit", "dvc_lock_sha256"} <= set(run.data.tags) and run.data.tags["promotion"] == "promoted"
    assert run.data.tags["checkpoint_sha256"] == metadata["checkpoint_sha256"]  # how later stages find the run
    assert len(client.get_metric_history(run.info.run_id, "val_macro_f1")) == 8  # one point per epoch
    artifacts = {a.path for folder in ("torchscript", "training", "evaluation")
                 for a in client.list_artifacts(run.info.run_id, folder)}  # fmt: skip
    assert artifacts == {
        "torchscript/model.pt",
        "training/training.csv",
        "training/training.png",
        "training/weights_origin.json",
        "evaluation/confusion.png",
        "evaluation/per_class.csv",
        "evaluation/reliability.csv",
        "evaluation/reliability.png",
    }
    champion = client.get_model_version_by_alias("emotion", "champion")
    assert champion.run_id == run.info.run_id and metadata["registry_version"] == str(champion.version)
    assert str(client.get_model_version_by_alias("emotion", "challenger").version) == str(champion.version)


def test_evaluation_metrics_and_plots(pipeline_project: Path) -> None:
    evaluation = json.loads((pipeline_project / "metrics" / "eval.json").read_text())
    assert {"accuracy", "macro_f1", "per_class_recall", "ece_before", "ece_after", "temperature"} <= set(evaluation)
    assert list(evaluation["per_class_recall"]) == list(LABELS)
    assert evaluation["ece_after"] <= evaluation["ece_before"] + 0.02  # T fitted on validation helps on test
    behaviour = evaluation["behaviour"]
    assert 0 <= behaviour["flip_agreement"] <= 1 and list(behaviour["suite_recall"]) == list(LABELS)
    shown = run_dvc(pipeline_project, "metrics", "show", "--json")
    assert shown.returncode == 0 and "macro_f1" in shown.stdout


def test_dvc_metrics_show_fits_a_120_column_terminal(pipeline_project: Path) -> None:
    """The headline figures, one short row; the per-class detail stays in eval.json."""
    shown = run_dvc(pipeline_project, "metrics", "show")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.rstrip("\n").splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 120, shown.stdout
    assert lines[0].split()[:1] == ["Path"] and {"accuracy", "macro_f1", "ece_after"} <= set(lines[0].split())
    evaluation = json.loads((pipeline_project / "metrics" / "eval.json").read_text())
    headline = json.loads((pipeline_project / "metrics" / "headline.json").read_text())
    assert headline["macro_f1"] == evaluation["macro_f1"]
    assert headline["coverage"] == evaluation["abstention"]["test_coverage"]
    detail = run_dvc(pipeline_project, "metrics", "show", "metrics/eval.json")
    assert detail.returncode == 0 and "per_class.sad.recall" in detail.stdout


def test_every_plot_shows_offline(pipeline_project: Path) -> None:
    """`dvc plots show` embeds every plot of dvc.yaml as an image the stages drew: no script from a CDN."""
    plots = yaml.safe_load((pipeline_project / "dvc.yaml").read_text())["plots"]
    assert plots and all(isinstance(p, str) and p.endswith(".png") for p in plots), plots
    shown = run_dvc(pipeline_project, "plots", "show", "-o", "plots_html")
    assert shown.returncode == 0, shown.stderr
    html = (pipeline_project / "plots_html" / "index.html").read_text()
    assert "<script" not in html and "http" not in html.split("<body>")[0].lower()
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == len(plots)
    for image in images:
        assert (pipeline_project / "plots_html" / image).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for plot in plots:  # each drawn from this run's data: a real figure, not an empty canvas
        assert (pipeline_project / plot).stat().st_size > 10_000


def test_project_has_a_default_dvc_remote() -> None:
    result = run_dvc(PROJECT_ROOT, "remote", "list")
    assert result.returncode == 0 and result.stdout.split()[:2] == ["local", "/var/tmp/emotorch-dvc-remote"]


def test_dvc_push_then_pull_into_a_fresh_copy(pipeline_project: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    assert run_dvc(pipeline_project, "remote", "add", "--local", "-f", "-d", "scratch", str(remote)).returncode == 0
    pushed = run_dvc(pipeline_project, "push")
    assert pushed.returncode == 0, pushed.stderr
    clone = tracked_copy(pipeline_project, tmp_path / "clone")
    pulled = run_dvc(clone, "pull")
    assert pulled.returncode == 0, pulled.stderr
    for tracked in ("data/raw/synthetic/fer2013.csv", "data/processed/faces.parquet", "models/model.pt"):
        assert (clone / tracked).read_bytes() == (pipeline_project / tracked).read_bytes()
    status = run_dvc(clone, "status")  # every data stage is up to date; release always runs (it reconciles)
    assert status.returncode == 0 and status.stdout.split() == ["release:", "always", "changed"], status.stdout


def test_corrupt_row_stops_dvc_repro_at_validation(tmp_path: Path) -> None:
    project = make_project(tmp_path, {"generate": {"n_faces": 210}})
    csv = project / "fer2013.csv"
    generated = run_dvc(project, "repro", "generate")
    assert generated.returncode == 0, generated.stderr
    lines = (project / "data" / "raw" / "synthetic" / "fer2013.csv").read_text().splitlines()
    code, pixels, usage = lines[17].split(",")
    lines[17] = ",".join([code, " ".join(pixels.split()[:2303]), usage])  # one pixel short
    code, pixels, usage = lines[42].split(",")
    lines[42] = ",".join(["9", pixels, usage])  # a label FER2013 does not have
    csv.write_text("\n".join(lines) + "\n")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"].update(source="fer2013_csv", path="fer2013.csv")
    (project / "params.yaml").write_text(yaml.safe_dump(params))

    result = run_dvc(project, "repro")
    output = result.stdout + result.stderr
    assert result.returncode != 0
    assert "expect_column_values_to_be_between on column 'n_pixels' failed for 1 row(s); example rows: [17]" in output
    assert "expect_column_values_to_be_between on column 'label' failed for 1 row(s); example rows: [42]" in output
    assert "failed to reproduce 'validate'" in output
    assert "Running stage 'train'" not in output
    # Nothing trained (the independent `detector` stage may have written models/detector).
    assert not (project / "models" / "checkpoint.pt").exists() and not (project / "models" / "model.pt").exists()
    assert (project / "reports" / "data_docs" / "index.html").exists()


def test_worse_challenger_is_rejected_and_nothing_is_published(pipeline_project: Path) -> None:
    """Runs last in this module: it retrains the session project with one epoch."""
    params_path = pipeline_project / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["train"]["epochs"] = 1
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    result = run_dvc(pipeline_project, "repro")
    assert result.returncode == 0, result.stderr
    ran = [line.split("'")[1] for line in result.stdout.splitlines() if line.startswith("Running stage")]
    assert ran == ["train", "evaluate", "export", "release"]  # a train param reruns train onwards only

    decision = json.loads((pipeline_project / "metrics" / "promotion.json").read_text())
    assert decision["promoted"] is False
    assert any("macro-F1" in r and "< champion" in r for r in decision["reasons"]), decision["reasons"]
    assert decision["champion_before"]["registry_version"] == "1"
    receipt = json.loads((pipeline_project / "metrics" / "publish.json").read_text())
    assert receipt["published"] is False
    assert sorted(p.name for p in (pipeline_project / "model_repository" / "emotion").iterdir()) == [
        ".last_version",
        "1",
        "config.pbtxt",
        "configs",
    ]

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{pipeline_project / 'mlflow.db'}")
    assert str(client.get_model_version_by_alias("emotion", "champion").version) == "1"
    challenger = client.get_model_version_by_alias("emotion", "challenger")
    assert str(challenger.version) == "2" and challenger.tags["promotion"] == "rejected"
