"""Publish (second step of the release stage): make the model repository, Triton and MLflow's `champion`
alias match promote's decision, and write the receipt `metrics/publish.json`.

A promoted model is published as a new repository version unless a version already holds exactly this release
(then that version is served again), the model-level config is pointed at it (pipelines/repository.py writes
both, atomically), a running Triton is asked to load it and its outputs are checked against TorchScript's, and
only then the alias moves. On a failed load the new version is removed again and the previous one keeps serving.
Without `--promotion` it is an operator's by-hand publish of a new version that leaves the registry alone.

Run it as DVC does: `sh pipelines/stage.sh publish ARGS...` (the stage wrapper picks the project's Python).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from pipelines.logs import configure_logging
from pipelines.repository import (
    MODEL_KEY,
    PreviousConfigs,
    publish_version,
    restore_configs,
    rollback,
    serve_version,
    version_of,
)
from pipelines.tracking import CHECKPOINT_TAG, PROJECT_ROOT, client, file_sha256, find_run, git_commit, store_exists
from pipelines.triton_config import PublishParams, input_dims
from pipelines.triton_load import PublishError, load_and_verify

logger = logging.getLogger(__name__)


def _log_model_card(mlflow_client: Any, version_dir: Path, run_id: str) -> None:
    """Attach the published version's model card to its MLflow run."""
    if (version_dir / "model_card.md").exists():
        mlflow_client.log_artifact(run_id, str(version_dir / "model_card.md"), artifact_path="model_card")
        mlflow_client.log_artifact(run_id, str(version_dir / "model_card.json"), artifact_path="model_card")



def release_sha256(model: Path, metadata: Path) -> str:
    """Content identity of what a version serves: the TorchScript bytes and the export metadata."""
    return hashlib.sha256(model.read_bytes() + b"\0" + metadata.read_bytes()).hexdigest()


def lineage(data_fingerprint: str) -> dict[str, str]:
    """Where a published version comes from, for a person following it back: commit, pipeline lock, data."""
    return {"git_commit": git_commit(), "dvc_lock_sha256": file_sha256(PROJECT_ROOT / "dvc.lock"),
            "data_fingerprint": data_fingerprint}  # fmt: skip


def release(args: argparse.Namespace, params: PublishParams, decision: dict[str, Any]) -> dict[str, Any]:
    """Make the repository, Triton and the champion alias match a promotion; return the receipt.

    Order matters for crash safety: the version folder, then the served config, then Triton's load, and only
    then the `champion` alias; a crash anywhere leaves the old champion recorded, and the next run (which
    decides the same) finds the folder already written and finishes the job without a duplicate.
    """
    export_metadata = json.loads(args.metadata.read_text())
    challenger = decision["challenger"]
    mlflow_client = client()
    # The served bytes and their metadata (temperature, threshold, card) identify a release, not the checkpoint
    # alone: re-evaluating the same weights with other params must publish a new version.
    model_sha256 = release_sha256(args.model, args.metadata)
    existing = version_of(args.repository, params.model_name, model_sha256, MODEL_KEY)
    previous: PreviousConfigs | None = None
    if existing is None:
        metadata = export_metadata | {"registry_version": challenger["registry_version"],
                                      "run_id": challenger["run_id"], MODEL_KEY: model_sha256,
                                      "lineage": lineage(export_metadata["data_fingerprint"])}  # fmt: skip
        version, previous = publish_version(args.repository, args.model, metadata, params)
        logger.info("published %s version %d in %s", params.model_name, version, args.repository)
        _log_model_card(mlflow_client, args.repository / params.model_name / str(version), challenger["run_id"])
    else:
        version = existing
        previous = serve_version(args.repository, params, version)
        logger.info("%s version %d already holds this model: serving it, nothing new published", params.model_name,
                    version)  # fmt: skip
    receipt: dict[str, Any] = {"model": params.model_name, "published": True, "version": version,
                               "newly_published": existing is None, "registry_version": challenger["registry_version"],
                               "run_id": challenger["run_id"], CHECKPOINT_TAG: export_metadata[CHECKPOINT_TAG],
                               "loaded_by_triton": False}  # fmt: skip
    if args.triton_url:
        try:
            receipt["triton_max_abs_diff"] = load_and_verify(args.triton_url, params, version, args.model,
                                                             dims=input_dims(export_metadata))  # fmt: skip
            receipt["loaded_by_triton"] = True
            logger.info("Triton at %s serves version %d", args.triton_url, version)
        except PublishError as e:
            if existing is None:
                rollback(args.repository, params, version, previous)
            else:
                restore_configs(args.repository / params.model_name, previous)
            raise SystemExit(f"publish failed, version {version} not served, the previous one still is: {e}") from e
    mlflow_client.set_registered_model_alias(params.model_name, "champion", challenger["registry_version"])
    mlflow_client.set_model_version_tag(params.model_name, challenger["registry_version"], "repository_version",
                                        str(version))  # fmt: skip
    return receipt


def publish_by_hand(args: argparse.Namespace, params: PublishParams) -> dict[str, Any]:
    """Publish the model as a new version and load it (an operator's tool, e.g. a hot swap); the registry is
    left alone, so the next `dvc repro` serves the champion again."""
    export_metadata = json.loads(args.metadata.read_text())
    export_metadata["lineage"] = lineage(export_metadata.get("data_fingerprint", "unknown"))
    export_metadata[MODEL_KEY] = release_sha256(args.model, args.metadata)
    mlflow_client = client() if store_exists() and CHECKPOINT_TAG in export_metadata else None
    run_id = find_run(mlflow_client, export_metadata[CHECKPOINT_TAG]) if mlflow_client is not None else None
    if run_id is not None:  # the version's lineage still names the run that trained it
        export_metadata["run_id"] = run_id
    version, previous = publish_version(args.repository, args.model, export_metadata, params)
    logger.info("published %s version %d in %s (by hand)", params.model_name, version, args.repository)
    receipt: dict[str, Any] = {"model": params.model_name, "published": True, "version": version,
                               "by_hand": True, "loaded_by_triton": False}  # fmt: skip
    if args.triton_url:
        try:
            receipt["triton_max_abs_diff"] = load_and_verify(args.triton_url, params, version, args.model,
                                                             dims=input_dims(export_metadata))  # fmt: skip
            receipt["loaded_by_triton"] = True
        except PublishError as e:
            rollback(args.repository, params, version, previous)
            raise SystemExit(f"publish failed, version {version} removed, previous version still serves: {e}") from e
    if run_id is not None:
        _log_model_card(mlflow_client, args.repository / params.model_name / str(version), run_id)
    return receipt


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--model", type=Path, required=True, help="exported TorchScript model.pt")
    parser.add_argument("--metadata", type=Path, required=True, help="export metadata JSON")
    parser.add_argument("--repository", type=Path, required=True, help="Triton model repository root")
    parser.add_argument("--receipt", type=Path, required=True, help="JSON receipt to write")
    parser.add_argument("--promotion", type=Path, default=None,
                        help="promotion.json of the promote step (the release stage); without it, publish the model as "
                             "a new version by hand (no registry change; the next `dvc repro` restores the champion)")
    parser.add_argument(
        "--triton-url",
        default=os.environ.get("EMOTORCH_PUBLISH_TRITON_URL"),
        help="HTTP address of a running Triton (host:port) to load the new version into (optional)",
    )
    args = parser.parse_args(argv)
    configure_logging()
    params = PublishParams.from_yaml(args.params)
    args.receipt.parent.mkdir(parents=True, exist_ok=True)
    if args.promotion is None:
        receipt = publish_by_hand(args, params)
        args.receipt.write_text(json.dumps(receipt, indent=2) + "\n")
        return
    decision = json.loads(args.promotion.read_text())
    if decision["promoted"]:
        receipt = release(args, params, decision)
    else:
        logger.warning("not publishing: the challenger was not promoted (%s)", "; ".join(decision["reasons"]))
        champion = decision.get("champion_before") or {}
        served = version_of(args.repository, params.model_name, champion["run_id"], "run_id") if champion else None
        receipt = {"model": params.model_name, "published": False, "reasons": decision["reasons"],
                   "version": served, "registry_version": champion.get("registry_version")}  # fmt: skip
    args.receipt.write_text(json.dumps(receipt, indent=2) + "\n")


if __name__ == "__main__":
    main()
