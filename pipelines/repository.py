"""The Triton model repository on disk: numbered version folders, each complete and self-describing, and the
model-level configs that say which one serves.

A version folder is built in a hidden staging folder beside the versions and moved into place with one rename,
so Triton never sees a half-written version (a SIGKILL midway leaves only a staging folder, which the next
publish removes). Configs are replaced atomically too. Version numbers are never reused, also after a folder is
removed by hand. The publish stage (pipelines/publish.py) decides what to write; this module writes it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pipelines.model_card import build_card, render_markdown
from pipelines.tracking import CHECKPOINT_TAG
from pipelines.triton_config import LIBTORCH_CONFIG, PYTHON_CONFIG, PublishParams, render_config

logger = logging.getLogger(__name__)

BACKEND_SOURCE = Path(__file__).with_name("triton_model.py")
STAGING_PREFIX = ".staging-"
HIGH_WATER = ".last_version"  # the highest version ever published here: numbers are never reused
MODEL_KEY = "release_sha256"  # metadata key: the content identity of what a version serves (see publish.py)

# What a publish leaves as it was found when it rolls back: each model-level config's previous text (None: absent).
PreviousConfigs = dict[Path, str | None]


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


def restore_configs(model_dir: Path, previous: PreviousConfigs) -> None:
    """Put back the model-level configs a serve_version replaced (an existing version that failed to load)."""
    for path, text in previous.items():
        if text is not None:
            _write_atomic(model_dir / path, text)
