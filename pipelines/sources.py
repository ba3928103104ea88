"""Loaders for every supported source, each mapping its own class codes to the project's label space.

Every loader returns raw records (`Records`): one entry per source row or file, malformed ones included, so
that validation can refuse bad data by row instead of a loader silently skipping it. Rows a source itself
marks as unusable (FER+ majority "unknown", "not a face", "contempt") are dropped and counted by reason.
"""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from pipelines.labels import (
    FER2013_CODE_TO_LABEL,
    FER2013_USAGE_TO_SPLIT,
    IMAGE_SIZE,
    LABEL_INDEX,
)

SOURCES = ("synthetic", "fer2013_csv", "image_folder", "ferplus")
FER2013_COLUMNS = ("emotion", "pixels", "Usage")

# The image-folder release of FER2013 and its many re-uploads spell classes differently.
FOLDER_ALIASES: dict[str, str] = {
    "angry": "angry", "anger": "angry",
    "disgust": "disgust", "disgusted": "disgust",
    "fear": "fear", "fearful": "fear", "scared": "fear",
    "happy": "happy", "happiness": "happy",
    "neutral": "neutral",
    "sad": "sad", "sadness": "sad",
    "surprise": "surprise", "surprised": "surprise",
}  # fmt: skip
FOLDER_SPLITS = {"train": "train", "training": "train", "test": "test", "testing": "test",
                 "validation": "validation", "val": "validation", "valid": "validation"}  # fmt: skip
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".pgm"}

# FER+ vote columns (fer2013new.csv), in file order, and the project label each one votes for.
FERPLUS_VOTES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
                 "unknown", "NF")  # fmt: skip
FERPLUS_TO_LABEL = {"neutral": "neutral", "happiness": "happy", "surprise": "surprise", "sadness": "sad",
                    "anger": "angry", "disgust": "disgust", "fear": "fear"}  # fmt: skip


@dataclass
class Records:
    """Raw rows of a source before the canonical table is built."""

    sources: list[str] = field(default_factory=list)  # where each row came from (file:line or path)
    codes: list[str] = field(default_factory=list)  # the source's class code or name, as written
    labels: list[int] = field(default_factory=list)  # project label index, -1 if unknown
    usages: list[str] = field(default_factory=list)  # the source's split name, as written
    splits: list[str | None] = field(default_factory=list)  # train | validation | test | None if unknown
    pixels: list[np.ndarray] = field(default_factory=list)  # parsed pixel values (any length, int64)
    dropped: Counter[str] = field(default_factory=Counter)


def _parse_pixels(text: str) -> np.ndarray:
    """Parse one whitespace-separated pixel string; a non-integer token makes the row unparseable (empty).

    np.fromstring is 4x faster than str.split here; it signals a bad token with a DeprecationWarning
    (a ValueError in later numpy), and both mean "unparseable".
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        try:
            return np.fromstring(text, dtype=np.int64, sep=" ")
        except (DeprecationWarning, ValueError):
            return np.empty(0, dtype=np.int64)


def _fer_code_to_index(code: str) -> int:
    try:
        return LABEL_INDEX[FER2013_CODE_TO_LABEL[int(code)]]
    except (KeyError, ValueError):
        return -1


def _read_csv(path: Path) -> pd.DataFrame:
    """Read a CSV as strings: UTF-8 with or without BOM, LF or CRLF, stray spaces around values."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", skipinitialspace=True)
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def read_fer2013_csv(path: Path) -> Records:
    """The original fer2013.csv (`emotion,pixels,Usage`, codes 0 Angry .. 4 Sad, 5 Surprise, 6 Neutral)."""
    raw = _read_csv(path)
    missing = [c for c in FER2013_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: not a FER2013 CSV: missing column(s) {missing}; found {list(raw.columns)}")
    records = Records()
    for line, (code, text, usage) in enumerate(zip(raw["emotion"], raw["pixels"], raw["Usage"], strict=True), 2):
        code, usage = code.strip(), usage.strip()
        records.sources.append(f"{path.name}:{line}")
        records.codes.append(code)
        records.labels.append(_fer_code_to_index(code))
        records.usages.append(usage)
        records.splits.append(FER2013_USAGE_TO_SPLIT.get(usage))
        records.pixels.append(_parse_pixels(text))
    return records


def read_ferplus(directory: Path) -> Records:
    """FER+ (`fer2013new.csv` beside `fer2013.csv`, same row order): the majority vote is the label.

    Rows whose majority is unknown, not-a-face (NF) or contempt, or whose top vote is tied between labels,
    are dropped and counted by reason.
    """
    images = read_fer2013_csv(directory / "fer2013.csv")
    votes = _read_csv(directory / "fer2013new.csv")
    missing = [c for c in (*FERPLUS_VOTES, "Usage") if c not in votes.columns]
    if missing:
        raise ValueError(f"{directory / 'fer2013new.csv'}: not a FER+ file: missing column(s) {missing}")
    if len(votes) != len(images.pixels):
        raise ValueError(f"FER+ has {len(votes)} rows but fer2013.csv has {len(images.pixels)}: they must align")
    counts = votes[list(FERPLUS_VOTES)].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy()
    records = Records()
    for i, row in enumerate(counts):
        top = np.flatnonzero(row == row.max())
        winner = FERPLUS_VOTES[top[0]]
        if row.max() <= 0:
            records.dropped["ferplus_no_votes"] += 1
            continue
        if len(top) > 1:
            records.dropped["ferplus_tie"] += 1
            continue
        if winner not in FERPLUS_TO_LABEL:
            records.dropped[f"ferplus_{winner.lower()}"] += 1
            continue
        label = FERPLUS_TO_LABEL[winner]
        usage = str(votes["Usage"].iloc[i]).strip()
        records.sources.append(f"fer2013new.csv:{i + 2}")
        records.codes.append(winner)
        records.labels.append(LABEL_INDEX[label])
        records.usages.append(usage)
        records.splits.append(FER2013_USAGE_TO_SPLIT.get(usage))
        records.pixels.append(images.pixels[i])
    return records


def _load_image(path: Path) -> np.ndarray:
    """Any size or colour -> 48x48 grayscale pixel values (empty if the file cannot be decoded)."""
    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_GRAYSCALE) if data.size else None
    if image is None:
        return np.empty(0, dtype=np.int64)
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
        shrinking = image.shape[0] > IMAGE_SIZE or image.shape[1] > IMAGE_SIZE
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        image = cv2.resize(image, (IMAGE_SIZE, IMAGE_SIZE), interpolation=interpolation)
    return image.astype(np.int64).ravel()


def read_image_folder(root: Path, validation_fraction: float, seed: int) -> Records:
    """`root/{train,test}/<class>/*.png` (any usual spelling and case); validation is carved from train.

    The validation split is stratified by class and seeded, so the same tree always gives the same split.
    Files in folders that name no known class are dropped and counted.
    """
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    split_dirs = {FOLDER_SPLITS[d.name.lower()]: d for d in sorted(root.iterdir()) if d.is_dir()
                  and d.name.lower() in FOLDER_SPLITS}  # fmt: skip
    if "train" not in split_dirs:
        raise ValueError(f"{root}: no train/ folder (found {sorted(p.name for p in root.iterdir())})")
    records = Records()
    for split, split_dir in split_dirs.items():
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            label = FOLDER_ALIASES.get(class_dir.name.strip().lower())
            if label is None:
                records.dropped[f"unknown_class_folder:{class_dir.name}"] += len(files)
                continue
            for path in files:
                records.sources.append(str(path.relative_to(root)))
                records.codes.append(class_dir.name)
                records.labels.append(LABEL_INDEX[label])
                records.usages.append(split_dir.name)
                records.splits.append(split)
                records.pixels.append(_load_image(path))
    if "validation" not in split_dirs:
        _carve_validation(records, validation_fraction, seed)
    return records


def _carve_validation(records: Records, fraction: float, seed: int) -> None:
    """Move a stratified, seeded `fraction` of each class's train rows to validation."""
    if not 0 < fraction < 1:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    labels = np.array(records.labels)
    splits = np.array(records.splits, dtype=object)
    for label in np.unique(labels):
        members = np.flatnonzero((labels == label) & (splits == "train"))
        n = int(round(len(members) * fraction))
        for i in rng.choice(members, size=n, replace=False):
            records.splits[i] = "validation"


def load_records(source: str, path: Path, validation_fraction: float = 0.1, seed: int = 0) -> Records:
    """Dispatch on `data.source` from params.yaml."""
    if source in ("synthetic", "fer2013_csv"):
        return read_fer2013_csv(path)
    if source == "ferplus":
        return read_ferplus(path)
    if source == "image_folder":
        return read_image_folder(path, validation_fraction, seed)
    raise ValueError(f"data.source={source!r} is not supported; use one of {', '.join(SOURCES)}")
