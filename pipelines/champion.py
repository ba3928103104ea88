"""Re-scoring the registered champion on the challenger's test split, so that the gate compares like with like.

The champion's registered artefact (its run's `torchscript/model.pt`) is scored with the scoring code of
evaluate's test figures (argmax, confusion matrix, macro-F1, per-class recall), and so is the challenger's
exported model.pt: both as served, because evaluate scores the eager checkpoint and the exported graph (uint8
in, normalisation inside) can flip a near-tie argmax, which moves a small test split's macro-F1 by ~0.001.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pipelines.labels import LABELS
from pipelines.scoring import confusion_matrix, macro_f1, per_class_scores
from pipelines.tables import load_split


class ChampionNotScorable(RuntimeError):
    """The champion's artefact is missing or its input contract differs: it cannot be scored on this data."""


def score_torchscript(model: Any, images: np.ndarray, labels: np.ndarray) -> tuple[float, dict[str, float]]:
    """Test macro-F1 and per-class recall of a serving TorchScript model (uint8 faces in, probabilities out)."""
    with torch.inference_mode():
        batches = [model(torch.from_numpy(images[i : i + 512]).unsqueeze(1)) for i in range(0, len(images), 512)]
    predicted = torch.cat(batches).argmax(1).numpy()
    confusion = confusion_matrix(labels, predicted, len(LABELS))
    recall = {label: s.recall for label, s in zip(LABELS, per_class_scores(confusion), strict=True)}
    return macro_f1(confusion), recall


def score_model_file(path: Path, table: Path) -> tuple[float, dict[str, float]]:
    """A serving TorchScript file's macro-F1 and per-class recall on `table`'s test split."""
    try:
        model = torch.jit.load(str(path), map_location="cpu").eval()
    except (OSError, RuntimeError) as e:
        raise ChampionNotScorable(f"its TorchScript artefact cannot be loaded: {e}") from e
    labels = list(getattr(model, "labels", []))
    if labels != list(LABELS):
        raise ChampionNotScorable(f"its label order {labels} is not the project's {list(LABELS)}")
    images, truth = load_split(table, "test", int(getattr(model, "input_size", 48)))
    try:
        return score_torchscript(model, images, truth)
    except RuntimeError as e:  # a graph that does not take uint8 N x 1 x S x S faces
        raise ChampionNotScorable(f"its input contract differs: {e}") from e


def rescore(mlflow_client: Any, version: Any, table: Path) -> tuple[float, dict[str, float]]:
    """The registry version's macro-F1 and per-class recall on `table`'s test split, from its registered
    TorchScript artefact."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = Path(mlflow_client.download_artifacts(version.run_id, "torchscript/model.pt", tmp))
        except (MlflowException, OSError) as e:
            raise ChampionNotScorable(f"its TorchScript artefact cannot be loaded: {e}") from e
        return score_model_file(path, table)
