"""Inference helpers shared by the stages that run a trained network: checkpoint loading, the input
arithmetic, batched logits, and the self-describing serving module that export turns into TorchScript.

They live here, not in train or export, so that evaluate and export never import another stage.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
import zlib
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
    """Save TorchScript byte-for-byte reproducibly: the same graph and weights give the same file.

    torch writes a random `serialization_id` record into every archive; it is replaced by one derived from
    the archive's other records (same length, CRCs fixed), which is all torch uses it for. The order of
    module constants also depends on Python's string hashing: the stage wrapper sets PYTHONHASHSEED=0.
    """
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    data = bytearray(buffer.getvalue())
    with zipfile.ZipFile(io.BytesIO(bytes(data))) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(SERIALIZATION_ID)]
        old = archive.read(name)
        digest = hashlib.sha256()
        for other in sorted(n for n in archive.namelist() if n != name):
            digest.update(other.encode() + archive.read(other))
    new = str(int(digest.hexdigest(), 16)).encode()[: len(old)].rjust(len(old), b"0")
    crc_old, crc_new = zlib.crc32(old).to_bytes(4, "little"), zlib.crc32(new).to_bytes(4, "little")
    encoded = name.encode()
    for at in _occurrences(data, encoded):
        if data[at - 46 : at - 42] == b"PK\x01\x02":  # central directory entry: CRC at +16
            _replace(data, at - 46 + 16, crc_old, crc_new)
        elif data[at - 30 : at - 26] == b"PK\x03\x04":  # local header: CRC at +14, the record after the extra field
            if data[at - 16 : at - 12] != b"\0\0\0\0":  # zero: the CRC is in a data descriptor after the record
                _replace(data, at - 16, crc_old, crc_new)
            start = at + len(encoded) + int.from_bytes(data[at - 2 : at], "little")
            _replace(data, start, old, new)
            end = start + len(old)
            descriptor = end + 4 if data[end : end + 4] == b"PK\x07\x08" else end
            if data[at - 16 : at - 12] == b"\0\0\0\0":
                _replace(data, descriptor, crc_old, crc_new)
    path.write_bytes(bytes(data))


def _occurrences(data: bytearray, needle: bytes) -> list[int]:
    found, at = [], data.find(needle)
    while at != -1:
        found.append(at)
        at = data.find(needle, at + 1)
    return found


def _replace(data: bytearray, at: int, old: bytes, new: bytes) -> None:
    if bytes(data[at : at + len(old)]) != old:
        raise RuntimeError("unexpected TorchScript archive layout; cannot make it reproducible")
    data[at : at + len(new)] = new
