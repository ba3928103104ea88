"""MLflow set-up shared by every stage: one tracking setting, the experiment, and finding a model's run.

Tracking URI: `MLFLOW_TRACKING_URI` when set, else the SQLite database `mlflow.db` at the project root (an
absolute path, so a stage, `mlflow ui` and a test agree whatever their working directory). Artifacts of the
experiment go to `mlruns/` beside it.

DVC-tracked files never hold an MLflow run id (it differs on every rerun and every machine): a run is found by
the SHA-256 of the checkpoint it trained, which train sets as the run's `checkpoint_sha256` tag. When no run
has it (a fresh clone after `dvc pull`, a deleted database), `ensure_run` re-creates one from the tracked
files, tagged `recreated_by`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

EXPERIMENT = "emotorch"
PROJECT_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_TAG = "checkpoint_sha256"


def tracking_uri() -> str:
    """The one MLflow tracking setting of the project."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"


def store_exists() -> bool:
    """Whether the tracking store exists (a by-hand publish must not create an empty SQLite database)."""
    uri = tracking_uri()
    return not uri.startswith("sqlite:///") or Path(uri.removeprefix("sqlite:///")).exists()


def artifact_root() -> str:
    """Where the experiment stores artifacts when it is created here (a URI)."""
    return (PROJECT_ROOT / "mlruns").as_uri()


def client() -> Any:
    """An MlflowClient on the project's tracking URI (mlflow is imported here: its import is slow)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri())


def experiment_id(mlflow_client: Any) -> str:
    """The project's experiment, created with its artifact root on first use."""
    experiment = mlflow_client.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return str(experiment.experiment_id)
    return str(mlflow_client.create_experiment(EXPERIMENT, artifact_location=artifact_root()))


def use_fluent_api() -> None:
    """Point mlflow's fluent API (mlflow.start_run, log_metric) at the project's store and experiment."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_experiment(experiment_id=experiment_id(client()))


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes ("absent" when it does not exist)."""
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "absent"


def git_commit() -> str:
    """The commit of the working tree (with a "-dirty" suffix when tracked files changed), or "unknown"."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, timeout=10, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def find_run(mlflow_client: Any, checkpoint_sha256: str) -> str | None:
    """The newest run that trained (or re-created) the checkpoint with this hash."""
    runs = mlflow_client.search_runs([experiment_id(mlflow_client)], f"tags.{CHECKPOINT_TAG} = '{checkpoint_sha256}'",
                                     order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
    return runs[0].info.run_id if runs else None


def ensure_run(mlflow_client: Any, checkpoint_sha256: str, meta: dict[str, Any], stage: str) -> tuple[str, bool]:
    """The run of this checkpoint, re-created from its tracked metadata when the store has none; (id, created)."""
    found = find_run(mlflow_client, checkpoint_sha256)
    if found is not None:
        return found, False
    tags = {CHECKPOINT_TAG: checkpoint_sha256, "recreated_by": stage, "git_commit": git_commit(),
            "data_fingerprint": str(meta.get("data_fingerprint", "unknown")),
            "mlflow.runName": f"recreated-{checkpoint_sha256[:12]}"}  # fmt: skip
    run = mlflow_client.create_run(experiment_id(mlflow_client), tags=tags)
    for key in ("model", "input_size", "best_epoch", "epochs_trained", "parameters"):
        if key in meta:
            mlflow_client.log_param(run.info.run_id, key, meta[key])
    mlflow_client.set_terminated(run.info.run_id)
    return run.info.run_id, True


def evaluation_metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    """eval.json as flat MLflow metrics (the names the promotion gate reads: test_macro_f1, test_recall_<label>)."""
    flat = {f"test_{k}": float(v) for k, v in evaluation.items() if isinstance(v, float)}
    flat |= {f"test_recall_{k}": float(v) for k, v in evaluation["per_class_recall"].items()}
    for section, prefix in (("behaviour", "behaviour_"), ("abstention", "abstention_"), ("real_faces", "real_")):
        flat |= {f"{prefix}{k}": float(v) for k, v in evaluation.get(section, {}).items() if isinstance(v, float)}
    if "astronaut" in evaluation.get("real_faces", {}):
        flat["real_astronaut_confidence"] = float(evaluation["real_faces"]["astronaut"]["confidence"])
    return flat
