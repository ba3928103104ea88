"""Publish stage: add the exported model as version N+1 of the Triton model repository, atomically.

The version folder is built in a hidden staging folder beside the versions and moved into place with one
rename, so Triton never sees a half-written version (a SIGKILL midway leaves only a staging folder, which the
next publish removes). If a Triton server is given, publish asks it to load the new version (explicit load,
never unload: the old version serves until the new one is ready) and checks Triton's outputs against
TorchScript's; on failure the new version is removed again and the previous one keeps serving.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.logs import configure_logging
from pipelines.model_card import build_card, render_markdown
from pipelines.tracking import CHECKPOINT_TAG, PROJECT_ROOT, client, file_sha256, find_run, git_commit, store_exists
from pipelines.triton_config import LIBTORCH_CONFIG, PYTHON_CONFIG, PublishParams, input_dims, render_config
from pipelines.triton_load import PublishError, load_and_verify

logger = logging.getLogger(__name__)

BACKEND_SOURCE = Path(__file__).with_name("triton_model.py")
STAGING_PREFIX = ".staging-"


# What a publish leaves as it was found when it rolls back: each model-level config's previous text (None: absent).
PreviousConfigs = dict[Path, str | None]


HIGH_WATER = ".last_version"  # the highest version ever published here: numbers are never reused


def next_version(model_dir: Path) -> int:
    """One above every version folder present and every version ever published (a folder removed by hand
    must not have its number given to a different model)."""
    mark = model_dir / HIGH_WATER
    text = mark.read_text().strip() if mark.is_file() else ""
    return max([int(text) if text.isdigit() else 0, *existing_versions(model_dir)]) + 1


def existing_versions(model_dir: Path) -> list[int]:
    """Published version numbers, ascending (Triton's rule: positive integers without leading zeros)."""
    if not model_dir.is_dir():
        return []
    names = (p.name for p in model_dir.iterdir() if p.is_dir())
    return sorted(int(n) for n in names if n.isdigit() and not n.startswith("0"))


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=STAGING_PREFIX)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # mkstemp creates 0600; Triton may run as another user
    os.replace(tmp, path)


def remove_stale_staging(model_dir: Path) -> None:
    """Remove what an interrupted publish left behind."""
    configs = model_dir / LIBTORCH_CONFIG.parent
    for leftover in [*model_dir.glob(f"{STAGING_PREFIX}*"), *configs.glob(f"{STAGING_PREFIX}*")]:
        logger.warning("removing leftover %s from an interrupted publish", leftover)
        shutil.rmtree(leftover) if leftover.is_dir() else leftover.unlink()


def publish_version(
    repository: Path, model_pt: Path, export_metadata: dict[str, Any], params: PublishParams
) -> tuple[int, PreviousConfigs]:
    """Write version N+1 and the configs describing it; return (N+1, the configs as they were before)."""
    model_dir = repository / params.model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_staging(model_dir)
    version = next_version(model_dir)
    labels = list(export_metadata["labels"])
    metadata: dict[str, Any] = {
        "version": version,
        "published_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **{
            k: export_metadata[k]
            for k in (
                "run_id",
                "registry_version",
                CHECKPOINT_TAG,
                MODEL_KEY,
                "lineage",
                "evaluation",
                "data_fingerprint",
                "val_accuracy",
                "model",
                "parameters",
                "input",
                "output",
                "temperature",
                "reference",
                "weights",
            )
            if k in export_metadata
        },
    }
    if "input_reference" in export_metadata:  # per-face brightness and contrast: the input-drift reference
        metadata["input_reference"] = export_metadata["input_reference"]
    elif "mean" in export_metadata:  # exports before 2026-11: only the global pixel statistics were recorded
        metadata["input_reference"] = {"brightness": export_metadata["mean"], "contrast": export_metadata["std"]}
    card_markdown = None
    if "data" in export_metadata and "evaluation" in export_metadata:
        card = build_card(export_metadata | {"model_name": params.model_name}, export_metadata["data"], version)
        metadata["card"] = card
        metadata["synthetic_training_data"] = card["synthetic_training_data"]
        card_markdown = render_markdown(card)
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=STAGING_PREFIX))
    shutil.copyfile(model_pt, staging / "model.pt")
    shutil.copyfile(BACKEND_SOURCE, staging / "model.py")
    (staging / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    (staging / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    if card_markdown is not None:
        (staging / "model_card.md").write_text(card_markdown, encoding="utf-8")
        (staging / "model_card.json").write_text(json.dumps(metadata["card"], indent=2) + "\n", encoding="utf-8")
    for f in staging.iterdir():
        with f.open("rb") as handle:
            os.fsync(handle.fileno())
    staging.chmod(0o755)
    os.rename(staging, model_dir / str(version))  # the one step that makes the version visible
    _write_atomic(model_dir / HIGH_WATER, f"{version}\n")
    return version, serve_version(repository, params, version)


def serve_version(repository: Path, params: PublishParams, version: int) -> PreviousConfigs:
    """Point the model-level configs at `version`, rendered from that version's own folder (its labels,
    metadata and card travel inside it); return the configs as they were before."""
    model_dir = repository / params.model_name
    version_dir = model_dir / str(version)
    labels = (version_dir / "labels.txt").read_text(encoding="utf-8").split()
    metadata = json.loads((version_dir / "metadata.json").read_text(encoding="utf-8"))
    card = version_dir / "model_card.md"
    card_markdown = card.read_text(encoding="utf-8") if card.exists() else None
    configs = {
        LIBTORCH_CONFIG: render_config(params, labels, metadata, card_markdown, "libtorch"),
        PYTHON_CONFIG: render_config(params, labels, metadata, card_markdown),  # last: what the local Triton reads
    }
    previous = {path: _read_if_exists(model_dir / path) for path in configs}
    (model_dir / LIBTORCH_CONFIG).parent.mkdir(exist_ok=True)
    for path, text in configs.items():
        _write_atomic(model_dir / path, text)
    return previous


def version_of(repository: Path, model_name: str, value: str, key: str = CHECKPOINT_TAG) -> int | None:
    """The newest repository version already holding the model trained as this checkpoint (reconciliation:
    a rerun after a crash or a revert reuses it instead of publishing a duplicate)."""
    model_dir = repository / model_name
    for version in reversed(existing_versions(model_dir)):
        path = model_dir / str(version) / "metadata.json"
        if path.exists() and json.loads(path.read_text(encoding="utf-8")).get(key) == value:
            return version
    return None


def _read_if_exists(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None


def rollback(repository: Path, params: PublishParams, version: int, previous: PreviousConfigs) -> None:
    """Remove a version that failed to serve and restore the configs of the one still serving."""
    model_dir = repository / params.model_name
    doomed = model_dir / f"{STAGING_PREFIX}rollback-{version}"
    os.rename(model_dir / str(version), doomed)
    shutil.rmtree(doomed)
    for path, text in previous.items():
        if text is not None:
            _write_atomic(model_dir / path, text)
        else:
            (model_dir / path).unlink(missing_ok=True)


def _log_model_card(mlflow_client: Any, version_dir: Path, run_id: str) -> None:
    """Attach the published version's model card to its MLflow run."""
    if (version_dir / "model_card.md").exists():
        mlflow_client.log_artifact(run_id, str(version_dir / "model_card.md"), artifact_path="model_card")
        mlflow_client.log_artifact(run_id, str(version_dir / "model_card.json"), artifact_path="model_card")


MODEL_KEY = "release_sha256"


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
                _restore(args.repository / params.model_name, previous)
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


def _restore(model_dir: Path, previous: PreviousConfigs) -> None:
    for path, text in previous.items():
        if text is not None:
            _write_atomic(model_dir / path, text)


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
