"""Train stage: fit the emotion network on the train split, select the checkpoint on validation, track in MLflow.

The test split is never read here: model selection uses validation only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

from pipelines.ingest import load_split
from pipelines.labels import LABELS
from pipelines.model import build_model, count_parameters

logger = logging.getLogger(__name__)

EXPERIMENT = "emotorch"


@dataclass(frozen=True)
class TrainParams:
    model: str = "small"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 12
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-4
    label_smoothing: float = 0.05
    patience: int = 4
    seed: int = 0
    torch_threads: int = 2

    @classmethod
    def from_yaml(cls, path: Path) -> TrainParams:
        return cls(**yaml.safe_load(path.read_text())["train"])


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float


def seed_everything(seed: int) -> None:
    """Seed every generator the training touches; CPU training is then repeatable."""
    np.random.seed(seed)
    torch.manual_seed(seed)


def normalisation(images: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the training pixels in 0..1 units (baked into the exported graph)."""
    x = images.astype(np.float64) / 255.0
    return float(x.mean()), float(x.std())


def class_weights(labels: np.ndarray, num_classes: int = len(LABELS)) -> torch.Tensor:
    """Inverse-frequency weights, mean 1: rare classes (disgust in FER2013) count as much as common ones."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / num_classes, 0.0)
    return torch.tensor(weights / weights[counts > 0].mean(), dtype=torch.float32)


def augment(batch: torch.Tensor, generator: torch.Generator, max_shift: int = 3) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to `max_shift` pixels (N x 1 x 48 x 48)."""
    n, _, h, w = batch.shape
    flip = torch.rand(n, generator=generator) < 0.5
    batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
    padded = nn.functional.pad(batch, (max_shift,) * 4, mode="replicate")
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    return padded[:, :, dy : dy + h, dx : dx + w]


def to_tensor(images: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """uint8 N x 48 x 48 -> normalised float N x 1 x 48 x 48, the same arithmetic as the exported graph."""
    return (torch.from_numpy(images).float().unsqueeze(1) / 255.0 - mean) / std


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of `model` on a whole split."""
    model.eval()
    losses, correct = [], 0
    for i in range(0, len(x), batch_size):
        logits = model(x[i : i + batch_size])
        losses.append(nn.functional.cross_entropy(logits, y[i : i + batch_size], reduction="sum").item())
        correct += int((logits.argmax(1) == y[i : i + batch_size]).sum())
    return sum(losses) / len(x), correct / len(x)


def fit(
    params: TrainParams,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    on_epoch: Any = None,
) -> tuple[nn.Module, dict[str, Any], list[EpochResult]]:
    """Train with early stopping on validation accuracy; return the best model, its metadata and the history."""
    seed_everything(params.seed)
    torch.set_num_threads(params.torch_threads)
    mean, std = normalisation(train[0])
    x_train, y_train = to_tensor(train[0], mean, std), torch.from_numpy(train[1])
    x_val, y_val = to_tensor(validation[0], mean, std), torch.from_numpy(validation[1])

    model = build_model(params.model, **params.model_kwargs)
    optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    steps_per_epoch = -(-len(x_train) // params.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=params.lr, epochs=params.epochs, steps_per_epoch=steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(train[1]), label_smoothing=params.label_smoothing)
    generator = torch.Generator().manual_seed(params.seed)

    best_state, best_accuracy, best_epoch = None, -1.0, 0
    history: list[EpochResult] = []
    for epoch in range(1, params.epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total_loss, correct = 0.0, 0
        bar = tqdm(
            range(0, len(order), params.batch_size),
            desc=f"epoch {epoch}/{params.epochs}",
            unit="batch",
            disable=None,
        )
        for i in bar:
            idx = order[i : i + params.batch_size]
            xb, yb = augment(x_train[idx], generator), y_train[idx]
            logits = model(xb)
            loss = loss_fn(logits, yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
            seen = min(i + params.batch_size, len(order))
            bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
        val_loss, val_accuracy = evaluate(model, x_val, y_val)
        result = EpochResult(epoch, total_loss / len(order), correct / len(order), val_loss, val_accuracy)
        history.append(result)
        logger.info(
            "epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f",
            epoch,
            result.train_loss,
            result.train_accuracy,
            val_loss,
            val_accuracy,
        )
        if on_epoch is not None:
            on_epoch(result)
        if val_accuracy > best_accuracy:
            best_accuracy, best_epoch = val_accuracy, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= params.patience:
            logger.info("early stop: validation accuracy has not improved for %d epochs", params.patience)
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    meta = {
        "model": params.model,
        "model_kwargs": params.model_kwargs,
        "labels": list(LABELS),
        "mean": mean,
        "std": std,
        "best_epoch": best_epoch,
        "val_accuracy": best_accuracy,
        "parameters": count_parameters(model),
    }
    return model, meta, history


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--table", type=Path, required=True, help="validated canonical table")
    parser.add_argument("--data-metrics", type=Path, required=True, help="ingest's data.json (fingerprint)")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow  # imported here: mlflow's import is slow and only this entry point needs it

    params = TrainParams.from_yaml(args.params)
    data_fingerprint = json.loads(args.data_metrics.read_text())["fingerprint"]
    train, validation = load_split(args.table, "train"), load_split(args.table, "validation")

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    mlflow.set_experiment(EXPERIMENT)
    started = time.monotonic()
    with mlflow.start_run() as run:
        mlflow.log_params({k: json.dumps(v) if isinstance(v, dict) else v for k, v in asdict(params).items()})
        mlflow.set_tags({"git_commit": _git_commit(), "data_fingerprint": data_fingerprint})

        def log_epoch(r: EpochResult) -> None:
            mlflow.log_metrics({k: v for k, v in asdict(r).items() if k != "epoch"}, step=r.epoch)

        model, meta, history = fit(params, train, validation, on_epoch=log_epoch)
        meta |= {"run_id": run.info.run_id, "data_fingerprint": data_fingerprint}
        mlflow.log_metrics({"best_val_accuracy": meta["val_accuracy"], "parameters": meta["parameters"]})

    args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": model.state_dict(), "meta": meta}, args.checkpoint)
    metrics = {
        "val_accuracy": meta["val_accuracy"],
        "best_epoch": meta["best_epoch"],
        "epochs_run": len(history),
        "parameters": meta["parameters"],
        "train_seconds": round(time.monotonic() - started, 1),
    }
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(metrics, indent=2) + "\n")
    logger.info(
        "best validation accuracy %.4f at epoch %d (run %s)",
        meta["val_accuracy"],
        meta["best_epoch"],
        meta["run_id"],
    )


if __name__ == "__main__":
    main()
