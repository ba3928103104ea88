"""Re-scoring the registered champion on the challenger's test split, so that the gate compares like with like.

The champion's registered artefact (its run's `torchscript/model.pt`) is scored by the same code as evaluate's
test figures (argmax of the served probabilities, confusion matrix, macro-F1, per-class recall).
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


def rescore(mlflow_client: Any, version: Any, table: Path) -> tuple[float, dict[str, float]]:
    """The registry version's macro-F1 and per-class recall on `table`'s test split."""
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = Path(mlflow_client.download_artifacts(version.run_id, "torchscript/model.pt", tmp))
            model = torch.jit.load(str(path), map_location="cpu").eval()
        except (MlflowException, OSError, RuntimeError) as e:
            raise ChampionNotScorable(f"its TorchScript artefact cannot be loaded: {e}") from e
    labels = list(getattr(model, "labels", []))
    if labels != list(LABELS):
        raise ChampionNotScorable(f"its label order {labels} is not the project's {list(LABELS)}")
    size = int(getattr(model, "input_size", 48))
    images, truth = load_split(table, "test", size)
    try:
        return score_torchscript(model, images, truth)
    except RuntimeError as e:  # a graph that does not take uint8 N x 1 x S x S faces
        raise ChampionNotScorable(f"its input contract differs: {e}") from e
