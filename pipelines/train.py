"""Train stage: fit the emotion network on the train split, select the checkpoint on validation, track in MLflow.

The test split is never read here: checkpoint selection and early stopping use validation macro-F1 only.
Training is seeded and repeatable on CPU, and resumable: after every epoch the full state (weights, optimizer,
scheduler, random generator, history, MLflow run id) goes to `<state-dir>/last.pt`; a rerun with the same
params and data continues from there, in the same MLflow run. The state file is removed when training ends.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from tqdm import tqdm

from pipelines.augment import AugmentConfig, augment
from pipelines.inference import predict_logits, to_tensor
from pipelines.labels import FER2013_CROP_MARGIN, LABELS
from pipelines.logs import configure_logging
from pipelines.model import build_model, count_parameters, input_size
from pipelines.pretrained import SCRATCH, load_pretrained, source
from pipelines.scoring import confusion_matrix, macro_f1
from pipelines.tables import load_split, resize_faces
from pipelines.tracking import CHECKPOINT_TAG, file_sha256, git_commit, use_fluent_api

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainParams:
    model: str = "small"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    weights: str = SCRATCH  # scratch | a pretrained source of pipelines/pretrained.py (fer2013_mini_xception)
    epochs: int = 12  # with pretrained weights: 0 imports them as they are, more fine-tunes them
    batch_size: int = 64
    optimizer: str = "adamw"  # adamw | sgd (SGD uses Nesterov momentum)
    lr: float = 3e-3
    momentum: float = 0.9
    weight_decay: float = 1e-4
    scheduler: str = "onecycle"  # onecycle | plateau (reduce-on-plateau of validation macro-F1)
    plateau_factor: float = 0.75
    plateau_patience: int = 5
    label_smoothing: float = 0.05
    patience: int = 4  # early stopping: epochs without a better validation macro-F1
    augment: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    torch_threads: int = 2
    device: str = "auto"  # auto | cpu | cuda; auto picks a GPU when present, with mixed precision there

    def __post_init__(self) -> None:
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"train.optimizer={self.optimizer!r}; expected adamw or sgd")
        if self.scheduler not in ("onecycle", "plateau"):
            raise ValueError(f"train.scheduler={self.scheduler!r}; expected onecycle or plateau")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"train.device={self.device!r}; expected auto, cpu or cuda")
        if self.epochs < 0 or (self.epochs == 0 and self.weights == SCRATCH):
            raise ValueError(f"train.epochs={self.epochs}; from scratch it must be at least 1 (0 imports pretrained "
                             "weights as they are)")  # fmt: skip
        if self.weights != SCRATCH and source(self.weights).model != self.model:
            raise ValueError(f"train.weights={self.weights!r} are {source(self.weights).model} weights, but "
                             f"train.model={self.model!r}")  # fmt: skip

    @property
    def input_size(self) -> int:
        """The side of the faces the network reads (the table's 48x48 faces are resized to it)."""
        return input_size(self.model, **self.model_kwargs)

    @classmethod
    def from_yaml(cls, path: Path) -> TrainParams:
        return cls(**yaml.safe_load(path.read_text())["train"])

    def augment_config(self) -> AugmentConfig:
        options: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in self.augment.items()}
        return AugmentConfig(**options)

    def key(self, data_fingerprint: str) -> str:
        """Identity of a training job: a saved state resumes only the same params on the same data."""
        return hashlib.sha256(json.dumps([asdict(self), data_fingerprint], sort_keys=True).encode()).hexdigest()


@dataclass
class EpochResult:
    epoch: int
    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    val_macro_f1: float
    lr: float


def seed_everything(seed: int) -> None:
    """Seed every generator the training touches; CPU training is then repeatable."""
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device(requested: str) -> torch.device:
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device=cuda but no CUDA device is available")
    return torch.device("cuda" if requested != "cpu" and torch.cuda.is_available() else "cpu")


def normalisation(images: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of the training pixels in 0..1 units (baked into the exported graph)."""
    x = images.astype(np.float64) / 255.0
    return float(x.mean()), float(x.std())


def class_weights(labels: np.ndarray, num_classes: int = len(LABELS)) -> torch.Tensor:
    """Inverse-frequency weights, mean 1: rare classes (disgust in FER2013) count as much as common ones."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / num_classes, 0.0)
    return torch.tensor(weights / weights[counts > 0].mean(), dtype=torch.float32)


def score(logits: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """Mean cross-entropy, accuracy and macro-F1."""
    loss = float(nn.functional.cross_entropy(logits, y))
    predicted = logits.argmax(1)
    confusion = confusion_matrix(y.numpy(), predicted.numpy(), len(LABELS))
    return loss, float((predicted == y).float().mean()), macro_f1(confusion)


def _build_optimizer(params: TrainParams, model: nn.Module, steps_per_epoch: int) -> tuple[Any, Any]:
    if params.optimizer == "sgd":
        optimizer: torch.optim.Optimizer = torch.optim.SGD(
            model.parameters(), lr=params.lr, momentum=params.momentum, nesterov=True, weight_decay=params.weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    scheduler: Any
    if params.scheduler == "onecycle":
        scheduler = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=params.lr, epochs=params.epochs, steps_per_epoch=steps_per_epoch
        )
    else:
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=params.plateau_factor, patience=params.plateau_patience
        )
    return optimizer, scheduler


@dataclass
class _Progress:
    """What selection and early stopping know after each epoch."""

    best_state: dict[str, torch.Tensor] | None = None
    best_score: tuple[float, float] = (-1.0, -1.0)  # validation (macro-F1, accuracy)
    best_epoch: int | None = None
    history: list[EpochResult] = field(default_factory=list)

    def record(self, result: EpochResult, model: nn.Module) -> None:
        self.history.append(result)
        if (result.val_macro_f1, result.val_accuracy) > self.best_score:
            self.best_score, self.best_epoch = (result.val_macro_f1, result.val_accuracy), result.epoch
            self.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def initial_model(params: TrainParams, train_images: np.ndarray) -> tuple[nn.Module, float, float, dict[str, Any]]:
    """The network before training, its input normalisation and the origin of its weights.

    Pretrained weights keep the normalisation they were trained with; from scratch it is the training set's.
    """
    if params.weights == SCRATCH:
        mean, std = normalisation(train_images)
        return build_model(params.model, **params.model_kwargs), mean, std, {"name": SCRATCH}
    net, src, origin = load_pretrained(params.weights)
    if params.input_size != net.input_size:
        raise ValueError(f"train.model_kwargs give {params.model} a {params.input_size}x{params.input_size} input; "
                         f"the {params.weights} weights fit {net.input_size}x{net.input_size}")  # fmt: skip
    return net, src.mean, src.std, origin | {"crop_margin": src.crop_margin}


def fit(
    params: TrainParams,
    train: tuple[np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray],
    on_epoch: Callable[[EpochResult], None] | None = None,
    state_path: Path | None = None,
    state_extra: dict[str, Any] | None = None,
    max_epochs_this_call: int | None = None,
) -> tuple[nn.Module, dict[str, Any], list[EpochResult]]:
    """Train with early stopping on validation macro-F1; return the best model, its metadata and the history.

    Faces are resized to the network's input size first. Pretrained weights are scored as epoch 0, so
    fine-tuning keeps them unless an epoch beats them on validation; with 0 epochs they are imported as is.
    With `state_path`, the full state is saved after every epoch and, when present, resumed from.
    `max_epochs_this_call` stops early on purpose (to test resumption); the saved state stays behind.
    """
    seed_everything(params.seed)
    torch.set_num_threads(params.torch_threads)
    device = pick_device(params.device)
    size = params.input_size
    train = (resize_faces(train[0], size), train[1])
    validation = (resize_faces(validation[0], size), validation[1])
    model, mean, std, origin = initial_model(params, train[0])
    x_train, y_train = to_tensor(train[0], mean, std), torch.from_numpy(train[1])
    x_val, y_val = to_tensor(validation[0], mean, std), torch.from_numpy(validation[1])
    model = model.to(device)
    progress = _Progress()
    if params.weights != SCRATCH:
        progress.record(_score_epoch(0, model, (x_train, y_train), (x_val, y_val), lr=0.0), model)
        if on_epoch is not None:
            on_epoch(progress.history[-1])
    if params.epochs > 0:
        _train_epochs(params, model, device, (x_train, y_train), (x_val, y_val), progress, on_epoch, state_path,
                      state_extra or {}, max_epochs_this_call)  # fmt: skip
    assert progress.best_state is not None, "no epoch was trained"
    model = model.cpu()
    model.load_state_dict(progress.best_state)
    model.eval()
    meta = {
        "model": params.model,
        "model_kwargs": params.model_kwargs,
        "input_size": size,
        "labels": list(LABELS),
        "mean": mean,
        "std": std,
        "weights": origin,
        "crop_margin": origin.get("crop_margin", FER2013_CROP_MARGIN),
        "epochs_trained": sum(1 for h in progress.history if h.epoch > 0),
        "best_epoch": progress.best_epoch,
        "val_macro_f1": progress.best_score[0],
        "val_accuracy": progress.best_score[1],
        "parameters": count_parameters(model),
        "device": device.type,
    }
    return model, meta, progress.history


@torch.no_grad()
def _score_epoch(epoch: int, model: nn.Module, train: tuple[torch.Tensor, torch.Tensor],
                 validation: tuple[torch.Tensor, torch.Tensor], lr: float) -> EpochResult:  # fmt: skip
    """An epoch's row for weights that were not trained here (epoch 0 of a fine-tune): both splits scored."""
    train_loss, train_accuracy, _ = score(predict_logits(model, train[0]), train[1])
    val_loss, val_accuracy, val_f1 = score(predict_logits(model, validation[0]), validation[1])
    logger.info("epoch %d (pretrained weights as imported): train loss %.4f acc %.4f | val loss %.4f acc %.4f "
                "macro-F1 %.4f", epoch, train_loss, train_accuracy, val_loss, val_accuracy, val_f1)  # fmt: skip
    return EpochResult(epoch, train_loss, train_accuracy, val_loss, val_accuracy, val_f1, lr)


def _train_epochs(
    params: TrainParams,
    model: nn.Module,
    device: torch.device,
    train: tuple[torch.Tensor, torch.Tensor],
    validation: tuple[torch.Tensor, torch.Tensor],
    progress: _Progress,
    on_epoch: Callable[[EpochResult], None] | None,
    state_path: Path | None,
    state_extra: dict[str, Any],
    max_epochs_this_call: int | None,
) -> None:
    """The epoch loop: train, score on validation, keep the best state, save a resumable state."""
    (x_train, y_train), (x_val, y_val) = train, validation
    use_amp = device.type == "cuda"
    optimizer, scheduler = _build_optimizer(params, model, -(-len(x_train) // params.batch_size))
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    loss_fn = nn.CrossEntropyLoss(weight=class_weights(y_train.numpy()).to(device),
                                  label_smoothing=params.label_smoothing)  # fmt: skip
    generator = torch.Generator().manual_seed(params.seed)
    start_epoch = 1
    if state_path is not None and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        progress.best_state, progress.best_score = state["best_state"], tuple(state["best_score"])
        progress.best_epoch = state["best_epoch"]
        progress.history = [EpochResult(**h) for h in state["history"]]
        start_epoch = state["epoch"] + 1
        logger.info("resuming from %s after epoch %d", state_path, state["epoch"])

    epochs_run = 0
    for epoch in range(start_epoch, params.epochs + 1):
        if progress.best_epoch is not None and epoch - progress.best_epoch > params.patience:
            logger.info("early stop: validation macro-F1 has not improved for %d epochs", params.patience)
            break
        if max_epochs_this_call is not None and epochs_run >= max_epochs_this_call:
            break
        train_loss, train_accuracy = _train_one_epoch(params, model, device, (x_train, y_train), optimizer, scheduler,
                                                      scaler, loss_fn, generator, epoch)  # fmt: skip
        val_loss, val_accuracy, val_f1 = score(predict_logits(model, x_val), y_val)
        if params.scheduler == "plateau":
            scheduler.step(val_f1)
        result = EpochResult(epoch, train_loss, train_accuracy, val_loss, val_accuracy, val_f1,
                             optimizer.param_groups[0]["lr"])  # fmt: skip
        epochs_run += 1
        logger.info("epoch %d: train loss %.4f acc %.4f | val loss %.4f acc %.4f macro-F1 %.4f", epoch,
                    result.train_loss, result.train_accuracy, val_loss, val_accuracy, val_f1)  # fmt: skip
        progress.record(result, model)
        if on_epoch is not None:
            on_epoch(result)
        if state_path is not None:
            _save_state(state_path, epoch, model, optimizer, scheduler, scaler, generator, progress.best_state,
                        progress.best_score, progress.best_epoch, progress.history, state_extra)  # fmt: skip


def _train_one_epoch(params: TrainParams, model: nn.Module, device: torch.device,
                     train: tuple[torch.Tensor, torch.Tensor], optimizer: Any, scheduler: Any, scaler: Any,
                     loss_fn: nn.Module, generator: torch.Generator, epoch: int) -> tuple[float, float]:  # fmt: skip
    """One pass over the shuffled, augmented training set; returns (mean loss, accuracy)."""
    x_train, y_train = train
    use_amp = device.type == "cuda"
    augment_cfg = params.augment_config()
    model.train()
    order = torch.randperm(len(x_train), generator=generator)
    total_loss, correct = 0.0, 0
    bar = tqdm(range(0, len(order), params.batch_size), desc=f"epoch {epoch}/{params.epochs}", unit="batch",
               disable=None)  # fmt: skip
    for i in bar:
        idx = order[i : i + params.batch_size]
        xb = augment(x_train[idx], augment_cfg, generator).to(device)
        yb = y_train[idx].to(device)
        with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
            logits = model(xb)
            loss = loss_fn(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        if params.scheduler == "onecycle":
            scheduler.step()
        total_loss += loss.item() * len(idx)
        correct += int((logits.argmax(1) == yb).sum())
        seen = min(i + params.batch_size, len(order))
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{correct / seen:.3f}")
    return total_loss / len(order), correct / len(order)


def _save_state(path: Path, epoch: int, model: nn.Module, optimizer: Any, scheduler: Any, scaler: Any,
                generator: torch.Generator, best_state: Any, best_score: tuple[float, float], best_epoch: int | None,
                history: list[EpochResult], extra: dict[str, Any]) -> None:  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "generator": generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "best_state": best_state,
            "best_score": list(best_score),
            "best_epoch": best_epoch,
            "history": [asdict(h) for h in history],
            **extra,
        },
        tmp,
    )
    os.replace(tmp, path)  # a crash mid-save never leaves a truncated state


def write_curves(history: list[EpochResult], path: Path) -> None:
    """Per-epoch metrics as CSV, for `dvc plots`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(history[0])))
        writer.writeheader()
        writer.writerows(asdict(h) for h in history)


def plot_curves(history: list[EpochResult], path: Path) -> None:
    """Loss and accuracy curves as a PNG (an MLflow artifact)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [h.epoch for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [h.train_loss for h in history], label="train")
    ax_loss.plot(epochs, [h.val_loss for h in history], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.plot(epochs, [h.train_accuracy for h in history], label="train accuracy")
    ax_acc.plot(epochs, [h.val_accuracy for h in history], label="validation accuracy")
    ax_acc.plot(epochs, [h.val_macro_f1 for h in history], label="validation macro-F1")
    ax_acc.set(xlabel="epoch", title="accuracy", ylim=(0, 1))
    for ax in (ax_loss, ax_acc):
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _resumable_run(state_path: Path, key: str) -> str | None:
    """The MLflow run of an interrupted training with the same params and data, to resume; a state saved for
    other params or data is deleted."""
    if not state_path.exists():
        return None
    saved = torch.load(state_path, map_location="cpu", weights_only=False)
    if saved.get("key") == key:
        return saved.get("run_id")
    logger.info("ignoring %s: it belongs to other params or data", state_path)
    state_path.unlink()
    return None


def _log_weights_and_curves(weights: dict[str, Any], history: list[EpochResult], curves: Path) -> None:
    """Into the active MLflow run: where the weights come from, and the per-epoch curves (CSV and PNG)."""
    import mlflow

    mlflow.set_tags({f"weights_{k}": v for k, v in weights.items()
                     if k in ("name", "package", "package_version", "file", "sha256", "paper")})  # fmt: skip
    mlflow.log_dict(weights, "training/weights_origin.json")
    write_curves(history, curves)
    plot_curves(history, curves.with_suffix(".png"))
    mlflow.log_artifact(str(curves), artifact_path="training")
    mlflow.log_artifact(str(curves.with_suffix(".png")), artifact_path="training")


def write_metrics(meta: dict[str, Any], path: Path) -> None:
    """train.json for DVC: figures that reproduce (wall time goes to MLflow only: this file is a DVC output and
    must be the same on every rerun)."""
    metrics = {
        "val_macro_f1": meta["val_macro_f1"],
        "val_accuracy": meta["val_accuracy"],
        "best_epoch": meta["best_epoch"],
        "epochs_trained": meta["epochs_trained"],
        "parameters": meta["parameters"],
        "weights": meta["weights"]["name"],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(metrics, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--table", type=Path, required=True, help="validated canonical table")
    parser.add_argument("--data-metrics", type=Path, required=True, help="ingest's data.json (fingerprint)")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--curves", type=Path, required=True, help="per-epoch CSV for dvc plots")
    parser.add_argument("--state-dir", type=Path, default=Path("models/train_state"))
    args = parser.parse_args(argv)
    configure_logging()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow  # imported here: mlflow's import is slow and only this entry point needs it

    params = TrainParams.from_yaml(args.params)
    data_fingerprint = json.loads(args.data_metrics.read_text())["fingerprint"]
    train, validation = load_split(args.table, "train"), load_split(args.table, "validation")
    state_path = args.state_dir / "last.pt"
    key = params.key(data_fingerprint)
    run_id = _resumable_run(state_path, key)

    use_fluent_api()
    started = time.monotonic()
    with mlflow.start_run(run_id=run_id) as run:
        if run_id is None:
            flat = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in asdict(params).items()}
            mlflow.log_params(flat | {"train_rows": len(train[1]), "validation_rows": len(validation[1])})
        mlflow.set_tags({"git_commit": git_commit(), "data_fingerprint": data_fingerprint,
                         "dvc_lock_sha256": file_sha256(Path("dvc.lock")), "stage": "train"})  # fmt: skip

        def log_epoch(r: EpochResult) -> None:
            mlflow.log_metrics({k: v for k, v in asdict(r).items() if k != "epoch"}, step=r.epoch)

        model, meta, history = fit(params, train, validation, on_epoch=log_epoch, state_path=state_path,
                                   state_extra={"key": key, "run_id": run.info.run_id})  # fmt: skip
        meta["data_fingerprint"] = data_fingerprint  # no run id: the checkpoint is a DVC output, the same on reruns
        mlflow.log_metrics({"best_val_macro_f1": meta["val_macro_f1"], "best_val_accuracy": meta["val_accuracy"],
                            "parameters": meta["parameters"], "train_seconds": time.monotonic() - started})  # fmt: skip
        _log_weights_and_curves(meta["weights"], history, args.curves)

        args.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": model.state_dict(), "meta": meta}, args.checkpoint)
        # Later stages find this run by the checkpoint's content (tracking.find_run).
        mlflow.set_tag(CHECKPOINT_TAG, file_sha256(args.checkpoint))
    state_path.unlink(missing_ok=True)  # finished: the next run starts fresh
    write_metrics(meta, args.metrics)
    logger.info("best validation macro-F1 %.4f (accuracy %.4f) at epoch %s (run %s)", meta["val_macro_f1"],
                meta["val_accuracy"], meta["best_epoch"], run.info.run_id)  # fmt: skip


if __name__ == "__main__":
    main()
