"""Inference helpers shared by the stages that run a trained network: checkpoint loading, the input
arithmetic, batched logits, and the self-describing serving module that export turns into TorchScript.

They live here, not in train or export, so that evaluate and export never import another stage.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.model import build_model


def to_tensor(images: np.ndarray, mean: float, std: float) -> torch.Tensor:
    """uint8 N x S x S -> normalised float N x 1 x S x S, the same arithmetic as the exported graph."""
    return (torch.from_numpy(images).float().unsqueeze(1) / 255.0 - mean) / std


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """Logits of `model` for a whole split (on the model's device, returned on CPU)."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([model(x[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(x), batch_size)])


def load_checkpoint(path: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the trained network from a train-stage checkpoint."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    meta = checkpoint["meta"]
    net = build_model(meta["model"], **meta["model_kwargs"])
    net.load_state_dict(checkpoint["state_dict"])
    return net.eval(), meta


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


def script(serving: ServingModel) -> torch.jit.ScriptModule:
    """TorchScript the serving model (scripting keeps the attributes; tracing would drop `labels`)."""
    return torch.jit.script(serving.eval())


SERIALIZATION_ID = ".data/serialization_id"


def save_scripted(scripted: torch.jit.ScriptModule, path: Path) -> None:
    """Save TorchScript byte-for-byte reproducibly: the same graph and weights give the same file anywhere.

    torch writes a random `serialization_id` record and, in `*.debug_pkl` records, the absolute paths of the
    source files (which differ between clones). The archive is rewritten without the debug records (they only
    decorate error messages) and with an id derived from its content. The order of module constants depends
    on Python's string hashing: the stage wrapper sets PYTHONHASHSEED=0.
    """
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    with zipfile.ZipFile(buffer) as archive:
        records = [(n, archive.read(n)) for n in archive.namelist() if not n.endswith(".debug_pkl")]
    digest = hashlib.sha256()
    for name, data in records:
        if not name.endswith(SERIALIZATION_ID):
            digest.update(name.encode() + data)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for name, data in records:
            if name.endswith(SERIALIZATION_ID):
                data = str(int(digest.hexdigest(), 16)).encode()[: len(data)].rjust(len(data), b"0")
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), data)
    path.write_bytes(out.getvalue())
