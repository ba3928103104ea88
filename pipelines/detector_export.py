"""DVC stage `detector`: MTCNN's weights (from the facenet-pytorch wheel) -> three ONNX files the gateway runs.

The weights are package files of facenet-pytorch 2.6.0 (MIT), installed without its dependencies; they are found
through the package's import spec without importing it (its import pulls torchvision). Each network is loaded
into our own module (`pipelines.mtcnn`), exported with torch's ONNX exporter, and checked: OpenCV's DNN module
(what the gateway runs) must reproduce torch's outputs on random inputs of several sizes.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch import nn

from pipelines.logs import configure_logging
from pipelines.mtcnn import NETWORKS, ONET_SIZE, RNET_SIZE

logger = logging.getLogger(__name__)

WEIGHTS_PACKAGE = "facenet_pytorch"
OPSET = 17
PARITY_TOLERANCE = 1e-4  # max abs difference between torch and OpenCV's outputs (probabilities, offsets)
# Input sizes the parity check runs: P-Net on odd and even pyramid levels, R-/O-Net on batches.
PARITY_SHAPES = {"pnet": [(1, 3, 12, 12), (1, 3, 37, 50), (1, 3, 180, 240)],
                 "rnet": [(1, 3, RNET_SIZE, RNET_SIZE), (7, 3, RNET_SIZE, RNET_SIZE)],
                 "onet": [(1, 3, ONET_SIZE, ONET_SIZE), (5, 3, ONET_SIZE, ONET_SIZE)]}  # fmt: skip
OUTPUT_NAMES = {"pnet": ["probability", "offsets"], "rnet": ["probability", "offsets"],
                "onet": ["probability", "offsets", "landmarks"]}  # fmt: skip


def weights_dir() -> Path:
    """The folder of the installed facenet-pytorch wheel that holds pnet.pt, rnet.pt and onet.pt."""
    spec = importlib.util.find_spec(WEIGHTS_PACKAGE)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"{WEIGHTS_PACKAGE} is not installed: `make venv` installs it (pip install --no-deps facenet-pytorch)"
        )
    return Path(spec.origin).parent / "data"


def load_network(name: str, directory: Path) -> nn.Module:
    """One network with its trained weights, in eval mode."""
    net = NETWORKS[name]()
    net.load_state_dict(torch.load(directory / f"{name}.pt", weights_only=True, map_location="cpu"))
    return net.eval()


def export_onnx(net: nn.Module, name: str, path: Path) -> None:
    """Export with a dynamic batch (and, for the fully convolutional P-Net, dynamic height and width)."""
    sample = torch.zeros(PARITY_SHAPES[name][0])
    axes = {0: "batch", 2: "height", 3: "width"} if name == "pnet" else {0: "batch"}
    outputs = OUTPUT_NAMES[name]
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of the dynamo one, which needs onnxscript (not
        # installed here); this one writes plain ONNX that OpenCV imports (checked by `parity`).
        warnings.simplefilter("ignore", DeprecationWarning)
        dynamic_axes = {"image": axes, **{output: {0: "batch"} for output in outputs}}
        torch.onnx.export(net, (sample,), str(path), dynamo=False, opset_version=OPSET, input_names=["image"],
                          output_names=outputs, dynamic_axes=dynamic_axes)  # fmt: skip


def parity(net: nn.Module, name: str, path: Path, seed: int = 0) -> float:
    """Largest abs difference between torch and OpenCV's DNN module on the stage's inputs."""
    cv_net = cv2.dnn.readNetFromONNX(str(path))
    generator = torch.Generator().manual_seed(seed)
    worst = 0.0
    for shape in PARITY_SHAPES[name]:
        x = torch.rand(shape, generator=generator) * 2.0 - 1.0  # the nets' input range
        with torch.no_grad():
            expected = [t.numpy() for t in net(x)]
        cv_net.setInput(x.numpy())
        got = cv_net.forward(OUTPUT_NAMES[name])
        for want, have in zip(expected, got, strict=True):
            worst = max(worst, float(np.abs(want - np.asarray(have).reshape(want.shape)).max()))
    return worst


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def export_all(out_dir: Path, directory: Path | None = None) -> dict[str, Any]:
    """Export the three networks into `out_dir`, check parity, write and return `mtcnn.json`."""
    directory = directory or weights_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    networks: dict[str, Any] = {}
    for name in NETWORKS:
        net = load_network(name, directory)
        path = out_dir / f"{name}.onnx"
        export_onnx(net, name, path)
        error = parity(net, name, path)
        if error > PARITY_TOLERANCE:
            raise RuntimeError(f"{name}: OpenCV's DNN output differs from torch's by {error:.2e}")
        networks[name] = {"file": path.name, "sha256": _sha256(path),
                          "weights_sha256": _sha256(directory / f"{name}.pt"),
                          "parameters": sum(p.numel() for p in net.parameters()), "parity_max_abs": error}  # fmt: skip
    from importlib.metadata import version  # the weights' provenance, recorded next to them

    metadata = {"detector": "mtcnn", "weights": f"{WEIGHTS_PACKAGE.replace('_', '-')}=={version('facenet-pytorch')}",
                "licence": "MIT", "opset": OPSET, "torch": torch.__version__, "opencv": cv2.__version__,
                "input": "RGB, N x 3 x H x W, (x - 127.5) / 128", "networks": networks}  # fmt: skip
    (out_dir / "mtcnn.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return metadata


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", type=Path, required=True, help="folder for pnet/rnet/onet.onnx + mtcnn.json")
    args = parser.parse_args(argv)
    configure_logging()
    metadata = export_all(args.out_dir)
    for name, info in metadata["networks"].items():
        logger.info("%s: %d parameters, parity %.1e -> %s", name, info["parameters"], info["parity_max_abs"],
                    args.out_dir / info["file"])  # fmt: skip


if __name__ == "__main__":
    main()
