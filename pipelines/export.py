"""Export stage: a self-describing TorchScript model that takes raw uint8 faces, checked against eager PyTorch.

The exported graph owns the whole numeric contract: uint8 N x 1 x S x S in (S is the network's input size, e.g.
48 or 64), normalisation and temperature inside, class probabilities out, the label order as an attribute.
Serving only has to crop and resize, with the registration (crop margin) the metadata names.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.ingest import load_split
from pipelines.labels import FER2013_CROP_MARGIN
from pipelines.model import build_model

logger = logging.getLogger(__name__)

PARITY_SAMPLES = 256
PARITY_TOLERANCE = 1e-5
CONFIDENCE_BINS = 10


class ServingModel(nn.Module):
    """uint8 N x 1 x S x S -> float32 N x C probabilities, in the order of `labels`."""

    def __init__(self, net: nn.Module, labels: list[str], mean: float, std: float, temperature: float = 1.0):
        super().__init__()
        self.net = net
        self.labels: list[str] = list(labels)  # TorchScript keeps it as a typed attribute
        self.input_size = int(net.input_size)  # type: ignore[arg-type]  # the side of the uint8 faces it reads
        self.mean = mean
        self.std = std
        self.temperature = temperature

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = (image.to(torch.float32) / 255.0 - self.mean) / self.std
        return torch.softmax(self.net(x) / self.temperature, dim=1)


class ParityError(RuntimeError):
    """The TorchScript graph does not reproduce the eager model."""


def load_checkpoint(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained network from a train-stage checkpoint."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    meta = checkpoint["meta"]
    net = build_model(meta["model"], **meta["model_kwargs"])
    net.load_state_dict(checkpoint["state_dict"])
    return net.eval(), meta


def script(serving: ServingModel) -> torch.jit.ScriptModule:
    """TorchScript the serving model (scripting keeps the attributes; tracing would drop `labels`)."""
    return torch.jit.script(serving.eval())


@torch.no_grad()
def parity(eager: nn.Module, scripted: torch.jit.ScriptModule, images: np.ndarray) -> float:
    """Largest absolute difference between eager and TorchScript outputs on `images` (N x S x S uint8)."""
    batch = torch.from_numpy(images).unsqueeze(1)
    return float((eager(batch) - scripted(batch)).abs().max())


@torch.no_grad()
def prediction_reference(model: nn.Module, images: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """Class distribution and confidence histogram of the model's own predictions: the drift baseline."""
    probs = torch.cat([model(torch.from_numpy(images[i : i + 512]).unsqueeze(1)) for i in range(0, len(images), 512)])
    confidence, predicted = probs.max(1)
    counts = np.bincount(predicted.numpy(), minlength=len(labels))
    hist, edges = np.histogram(confidence.numpy(), bins=CONFIDENCE_BINS, range=(0.0, 1.0))
    return {
        "samples": len(images),
        "class_distribution": {label: float(c / len(images)) for label, c in zip(labels, counts, strict=True)},
        "confidence_histogram": {"edges": edges.round(6).tolist(), "counts": hist.tolist()},
        "mean_confidence": float(confidence.mean()),
    }


def input_reference(images: np.ndarray) -> dict[str, float]:
    """The gateway's input-drift reference, the same statistics it observes per face (0..1 units): the mean
    of each face's mean brightness and of each face's contrast (its own pixel standard deviation).

    The normalisation constants are global pixel statistics; the global standard deviation also counts the
    spread between faces, so it is not what a per-face contrast drifts from.
    """
    faces = images.reshape(len(images), -1).astype(np.float64) / 255.0
    return {"brightness": float(faces.mean(1).mean()), "contrast": float(faces.std(1).mean())}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--evaluation", type=Path, required=True, help="eval.json (temperature, test metrics)")
    parser.add_argument("--out", type=Path, required=True, help="TorchScript file to write")
    parser.add_argument("--metadata", type=Path, required=True, help="export metadata JSON to write")
    parser.add_argument("--data-metrics", type=Path, default=None, help="ingest's data.json (for the model card)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    net, meta = load_checkpoint(args.checkpoint)
    evaluation = json.loads(args.evaluation.read_text())
    serving = ServingModel(net, meta["labels"], meta["mean"], meta["std"], evaluation["temperature"]).eval()
    scripted = script(serving)
    size = serving.input_size
    images, _ = load_split(args.table, "validation", size)
    rng = np.random.default_rng(0)
    sample = images[rng.choice(len(images), size=min(PARITY_SAMPLES, len(images)), replace=False)]
    max_diff = parity(serving, scripted, sample)
    if not max_diff <= PARITY_TOLERANCE:
        raise ParityError(
            f"TorchScript differs from eager by {max_diff:.3g} > {PARITY_TOLERANCE} on {len(sample)} faces"
        )

    args.out.parent.mkdir(parents=True, exist_ok=True)
    scripted.save(str(args.out))
    metadata = meta | {
        "input": {"name": "image", "dtype": "uint8", "shape": [-1, 1, size, size], "color": "grayscale",
                  "crop_margin": meta.get("crop_margin", FER2013_CROP_MARGIN)},
        "output": {"name": "probabilities", "dtype": "float32", "shape": [-1, len(meta["labels"])]},
        "temperature": serving.temperature,
        "parity": {"samples": len(sample), "max_abs_diff": max_diff, "tolerance": PARITY_TOLERANCE},
        "reference": prediction_reference(scripted, images, meta["labels"]),
        "input_reference": input_reference(images),
        "evaluation": {
            k: evaluation[k]
            for k in (
                "accuracy",
                "macro_f1",
                "per_class_recall",
                "ece_before",
                "ece_after",
                "behaviour",
                "test_rows",
                "abstention",
                "trained_on_this_data",
                "real_faces",
            )
            if k in evaluation
        },  # fmt: skip
    }
    if args.data_metrics is not None:
        metadata["data"] = json.loads(args.data_metrics.read_text())
    args.metadata.write_text(json.dumps(metadata, indent=2) + "\n")

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    with mlflow.start_run(run_id=meta["run_id"]):
        mlflow.log_artifact(str(args.out), artifact_path="torchscript")
        mlflow.log_metric("export_max_abs_diff", max_diff)
    logger.info("exported %s (parity %.2g on %d faces)", args.out, max_diff, len(sample))


if __name__ == "__main__":
    main()
