"""Export stage: a self-describing TorchScript model that takes raw uint8 faces, checked against eager PyTorch.

The exported graph owns the whole numeric contract: uint8 N x 1 x S x S in (S is the network's input size, e.g.
48 or 64), normalisation and temperature inside, class probabilities out, the label order as an attribute.
Serving only has to crop and resize, with the registration (crop margin) the metadata names.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from emotorch import contract
from pipelines.inference import ServingModel, load_checkpoint, save_scripted, script
from pipelines.labels import FER2013_CROP_MARGIN
from pipelines.logs import configure_logging
from pipelines.tables import load_split
from pipelines.tracking import CHECKPOINT_TAG, client, ensure_run, file_sha256

logger = logging.getLogger(__name__)

PARITY_SAMPLES = 256
PARITY_TOLERANCE = 1e-5
CONFIDENCE_BINS = 10


class ParityError(RuntimeError):
    """The TorchScript graph does not reproduce the eager model."""


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


def checked_parity(
    serving: nn.Module, scripted: torch.jit.ScriptModule, images: np.ndarray
) -> tuple[np.ndarray, float]:
    """Eager vs TorchScript on a fixed sample of validation faces; raise ParityError beyond the tolerance."""
    rng = np.random.default_rng(0)
    sample = images[rng.choice(len(images), size=min(PARITY_SAMPLES, len(images)), replace=False)]
    max_diff = parity(serving, scripted, sample)
    if not max_diff <= PARITY_TOLERANCE:
        raise ParityError(
            f"TorchScript differs from eager by {max_diff:.3g} > {PARITY_TOLERANCE} on {len(sample)} faces"
        )
    return sample, max_diff


EVALUATION_KEYS = ("accuracy", "macro_f1", "per_class_recall", "ece_before", "ece_after", "behaviour", "test_rows",
                   "abstention", "trained_on_this_data", "real_faces")  # fmt: skip


def export_metadata(
    meta: dict[str, Any],
    serving: ServingModel,
    scripted: torch.jit.ScriptModule,
    images: np.ndarray,
    evaluation: dict[str, Any],
    checkpoint_sha256: str,
    parity_report: dict[str, Any],
) -> dict[str, Any]:
    """What travels with the exported model: the checkpoint's metadata, the tensor contract, the temperature,
    the eager/TorchScript parity, the drift references and the evaluation."""
    tensors = contract.tensor_metadata(serving.input_size, len(meta["labels"]))
    return meta | {
        # The content identity of the trained model: how promote and publish find its MLflow run (no run id
        # here: this file is a DVC output and must be the same on every rerun and machine).
        CHECKPOINT_TAG: checkpoint_sha256,
        "input": tensors["input"] | {"crop_margin": meta.get("crop_margin", FER2013_CROP_MARGIN)},
        "output": tensors["output"],
        "temperature": serving.temperature,
        "parity": parity_report,
        "reference": prediction_reference(scripted, images, meta["labels"]),
        "input_reference": input_reference(images),
        "evaluation": {k: evaluation[k] for k in EVALUATION_KEYS if k in evaluation},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--table", type=Path, required=True)
    parser.add_argument("--evaluation", type=Path, required=True, help="eval.json (temperature, test metrics)")
    parser.add_argument("--out", type=Path, required=True, help="TorchScript file to write")
    parser.add_argument("--metadata", type=Path, required=True, help="export metadata JSON to write")
    parser.add_argument("--data-metrics", type=Path, default=None, help="ingest's data.json (for the model card)")
    args = parser.parse_args(argv)
    configure_logging()

    net, meta = load_checkpoint(args.checkpoint)
    evaluation = json.loads(args.evaluation.read_text())
    serving = ServingModel(net, meta["labels"], meta["mean"], meta["std"], evaluation["temperature"]).eval()
    scripted = script(serving)
    images, _ = load_split(args.table, "validation", serving.input_size)
    sample, max_diff = checked_parity(serving, scripted, images)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_scripted(scripted, args.out)  # byte-for-byte the same on a rerun: model.pt is a DVC output
    parity_report = {"samples": len(sample), "max_abs_diff": max_diff, "tolerance": PARITY_TOLERANCE}
    metadata = export_metadata(meta, serving, scripted, images, evaluation, file_sha256(args.checkpoint), parity_report)
    if args.data_metrics is not None:
        metadata["data"] = json.loads(args.data_metrics.read_text())
    args.metadata.write_text(json.dumps(metadata, indent=2) + "\n")

    mlflow_client = client()
    run_id, _ = ensure_run(mlflow_client, metadata[CHECKPOINT_TAG], meta, "export")
    mlflow_client.log_artifact(run_id, str(args.out), artifact_path="torchscript")
    mlflow_client.log_metric(run_id, "export_max_abs_diff", max_diff)
    logger.info("exported %s (parity %.2g on %d faces)", args.out, max_diff, len(sample))


if __name__ == "__main__":
    main()
