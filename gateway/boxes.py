"""Box arithmetic of the cascade detector: non-maximum suppression, box regression, squaring, IoU.

Boxes are float arrays N x 4 of corners (x1, y1, x2, y2) in continuous pixel coordinates (a pixel spans
[x, x + 1)), so a box's width is x2 - x1 with no +1 terms.
"""

from __future__ import annotations

from typing import Literal

import numpy as np


def areas(boxes: np.ndarray) -> np.ndarray:
    """Area of each box (0 for inverted boxes)."""
    return np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)


def overlaps(box: np.ndarray, others: np.ndarray, mode: Literal["union", "min"] = "union") -> np.ndarray:
    """Intersection of `box` with each of `others`, over their union ("union": IoU) or the smaller area ("min")."""
    w = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    h = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = w * h
    own, theirs = areas(box[None])[0], areas(others)
    denominator = own + theirs - inter if mode == "union" else np.minimum(own, theirs)
    return np.divide(inter, denominator, out=np.zeros_like(inter), where=denominator > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: Literal["union", "min"] = "union") -> np.ndarray:
    """Greedy non-maximum suppression: indices of the kept boxes, best score first.

    A box is dropped when it overlaps an already kept, better-scoring box by more than `threshold`. The "min"
    mode also drops a small box lying inside a bigger one (MTCNN's last stage uses it against nested boxes).
    Coordinates and areas are read once; each round compares the best remaining box with the rest (what
    `overlaps` computes, without its per-call set-up: this runs a dozen times per photo).
    """
    x1, y1, x2, y2 = (np.ascontiguousarray(boxes[:, k]) for k in range(4))
    area = np.maximum(x2 - x1, 0.0) * np.maximum(y2 - y1, 0.0)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        w = np.maximum(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0.0)
        h = np.maximum(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0.0)
        inter = w * h
        if mode == "union":
            denominator = area[best] + area[rest] - inter
        else:
            denominator = np.minimum(area[best], area[rest])
        ratio = np.divide(inter, denominator, out=np.zeros_like(inter), where=denominator > 0)
        order = rest[ratio <= threshold]
    return np.asarray(keep, dtype=np.int64)


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Apply the networks' box offsets: each corner moves by its offset times the box's width or height."""
    size = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, axis=1)
    return boxes + offsets * size


def square(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square of its longer side around its centre (the nets take square crops)."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2.0, (boxes[:, 1] + boxes[:, 3]) / 2.0
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) / 2.0
    return np.stack([cx - half, cy - half, cx + half, cy + half], axis=1)


def iou_xywh(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    """IoU of two (x, y, width, height) boxes."""
    corners = np.asarray([[a[0], a[1], a[0] + a[2], a[1] + a[3]], [b[0], b[1], b[0] + b[2], b[1] + b[3]]], float)
    return float(overlaps(corners[0], corners[1:])[0])
