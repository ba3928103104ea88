"""Data access to the canonical table that ingest writes: splits as arrays, face resizing, class counts.

Every stage that reads faces goes through here, so no stage imports the ingest stage itself.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipelines.labels import IMAGE_SIZE, LABELS, SPLITS


def class_counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Count rows per split and label name, with every label present in every split."""
    counts: dict[str, dict[str, int]] = {split: dict.fromkeys(LABELS, 0) for split in SPLITS}
    known = table[table["label"].between(0, len(LABELS) - 1) & table["split"].isin(SPLITS)]
    for (split, label), n in known.groupby(["split", "label"]).size().items():
        counts[str(split)][LABELS[int(label)]] = int(n)
    return counts


def load_split(table_path: Path, split: str, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of a validated canonical table as (N x size x size uint8 images, N int64 labels)."""
    table = pd.read_parquet(table_path, columns=["split", "label", "pixels"])
    part = table[table["split"] == split]
    if part.empty:
        raise ValueError(f"{table_path}: split {split!r} is empty")
    images = np.frombuffer(b"".join(part["pixels"]), dtype=np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    return resize_faces(images.copy(), size), part["label"].to_numpy(dtype=np.int64, copy=True)


def resize_faces(images: np.ndarray, size: int) -> np.ndarray:
    """N x h x w uint8 faces -> N x size x size uint8 (bilinear, as cv2.resize does by default: how the
    mini-Xception authors enlarged FER2013's 48x48 faces to 64x64). The same size is returned as is."""
    if images.shape[1:] == (size, size):
        return images
    if len(images) == 0:
        return np.empty((0, size, size), dtype=np.uint8)
    return np.stack([cv2.resize(face, (size, size), interpolation=cv2.INTER_LINEAR) for face in images])
