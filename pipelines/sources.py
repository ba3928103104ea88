"""Loaders for every supported source, each mapping its own class codes to the project's label space.

Every loader returns raw records (`Records`): one entry per source row or file, malformed ones included, so
that validation can refuse bad data by row instead of a loader silently skipping it. Rows a source itself
marks as unusable (FER+ majority "unknown", "not a face", "contempt") are dropped and counted by reason.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import tarfile
import warnings
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

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
# Split folder names, lowercased; FER2013's own Usage names too (PublicTest is its validation split).
FOLDER_SPLITS = {"train": "train", "training": "train", "test": "test", "testing": "test",
                 "privatetest": "test", "validation": "validation", "val": "validation", "valid": "validation",
                 "publictest": "validation"}  # fmt: skip
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
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


def _read_csv(path: Path, member: str = "fer2013.csv") -> tuple[pd.DataFrame, str]:
    """Read a CSV as strings: UTF-8 with or without BOM, LF or CRLF, stray spaces around values, gzip/bz2/xz/zip
    compression, or a tar archive holding it (Kaggle ships `fer2013.tar.gz` with `fer2013/fer2013.csv`).

    Returns the frame and the name rows are reported under. The frame's index is each row's line number in the
    file (header = line 1; blank lines are skipped but counted). Anything unreadable is a ValueError naming
    the file.
    """
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        data, name = _raw_bytes(path, member)
        frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, encoding="utf-8-sig",
                            skipinitialspace=True)  # fmt: skip
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, tarfile.TarError, zipfile.BadZipFile,
            OSError, EOFError, zlib.error, lzma.LZMAError) as e:  # fmt: skip
        raise ValueError(f"{path}: cannot be read as a CSV file: {str(e).strip() or type(e).__name__}") from e
    frame.columns = [str(c).strip() for c in frame.columns]
    frame.index = pd.Index(_line_numbers(data, len(frame)))
    return frame, name


def _raw_bytes(path: Path, member: str) -> tuple[bytes, str]:
    """The CSV's bytes, decompressed, and the name to report its rows under."""
    lower = path.name.lower()
    if lower.endswith(TAR_SUFFIXES):
        return _tar_member(path, member)
    if lower.endswith(".gz"):
        return gzip.decompress(path.read_bytes()), path.name
    if lower.endswith(".bz2"):
        return bz2.decompress(path.read_bytes()), path.name
    if lower.endswith(".xz"):
        return lzma.decompress(path.read_bytes()), path.name
    if lower.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            if len(names) != 1:
                raise ValueError(f"{path}: expected one file in the zip archive; found {names[:10]}")
            return archive.read(names[0]), f"{path.name}/{names[0]}"
    return path.read_bytes(), path.name


def _line_numbers(data: bytes, rows: int) -> list[int]:
    """The file line of each data row: the non-blank lines after the header, as the CSV reader skips blanks.

    A quoted field spanning lines makes the count disagree; rows are then numbered in order from line 2.
    """
    lines = [i for i, line in enumerate(io.BytesIO(data), 1) if line.strip()]  # line by line: no copy of the file
    return lines[1:] if len(lines) == rows + 1 else list(range(2, rows + 2))


def _tar_member(path: Path, member: str) -> tuple[bytes, str]:
    """The bytes of `member` (matched by file name, any folder) or of the archive's only CSV, and its name."""
    with tarfile.open(path) as archive:
        files = [m for m in archive.getmembers() if m.isfile()]
        named = [m for m in files if Path(m.name).name == member]
        csvs = [m for m in files if m.name.lower().endswith(".csv") and not Path(m.name).name.startswith(".")]
        chosen = named or csvs
        if len(chosen) != 1:
            found = ", ".join(m.name for m in files[:10]) or "no files"
            raise ValueError(f"{path}: expected one {member} (or one CSV) in the archive; found: {found}")
        extracted = archive.extractfile(chosen[0])
        assert extracted is not None  # a regular file member
        return extracted.read(), f"{path.name}/{Path(chosen[0].name).name}"


def read_fer2013_csv(path: Path) -> Records:
    """The original fer2013.csv (`emotion,pixels,Usage`, codes 0 Angry .. 4 Sad, 5 Surprise, 6 Neutral)."""
    raw, name = _read_csv(path)
    missing = [c for c in FER2013_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: not a FER2013 CSV: missing column(s) {missing}; found {list(raw.columns)}"
                         f"{_fer2013_hint(list(raw.columns))}")  # fmt: skip
    records = Records()
    for line, code, text, usage in zip(raw.index, raw["emotion"], raw["pixels"], raw["Usage"], strict=True):
        code, usage = code.strip(), usage.strip()
        records.sources.append(f"{name}:{line}")
        records.codes.append(code)
        records.labels.append(_fer_code_to_index(code))
        records.usages.append(usage)
        records.splits.append(FER2013_USAGE_TO_SPLIT.get(usage))
        records.pixels.append(_parse_pixels(text))
    return records


def _fer2013_hint(columns: list[str]) -> str:
    """What to do with the CSVs people mistake for fer2013.csv."""
    if set(columns) == {"emotion", "pixels"}:
        return (
            " - this looks like the competition's train.csv, which has no Usage column; use fer2013.csv "
            "(it carries Training/PublicTest/PrivateTest) or convert the data to an image folder"
        )
    if columns == ["pixels"] or set(columns) == {"id", "pixels"}:
        return " - this looks like the competition's unlabelled test.csv; training needs labels"
    if "Image name" in columns:
        return " - this looks like FER+'s fer2013new.csv: set data.source: ferplus and data.path to its folder"
    return ""


def ferplus_label(votes: np.ndarray) -> str:
    """FER+'s majority rule (microsoft/FERPlus, `_process_data`, mode "majority").

    Single votes are discarded as outliers, then the top vote must hold more than half of the remaining
    votes; otherwise the face is "unknown". Returns a FERPLUS_VOTES name (which may be contempt, unknown or NF)
    or "no_majority".
    """
    kept = np.where(votes > 1, votes, 0.0)
    total = kept.sum()
    top = int(np.argmax(kept))
    if total <= 0 or kept[top] <= 0.5 * total:
        return "no_majority"
    return FERPLUS_VOTES[top]


def read_ferplus(directory: Path) -> Records:
    """FER+ (`fer2013new.csv` beside `fer2013.csv`, same row order), labelled by FER+'s majority rule.

    Rows without a majority, and rows whose majority is unknown, not-a-face (NF) or contempt (not in the
    project's seven classes), are dropped and counted by reason. Each row's source names both files' lines.
    """
    if not directory.is_dir():
        raise ValueError(f"{directory}: data.path must be the folder holding fer2013.csv and fer2013new.csv")
    images = read_fer2013_csv(directory / "fer2013.csv")
    votes, _ = _read_csv(directory / "fer2013new.csv")
    missing = [c for c in (*FERPLUS_VOTES, "Usage") if c not in votes.columns]
    if missing:
        raise ValueError(f"{directory / 'fer2013new.csv'}: not a FER+ file: missing column(s) {missing}")
    if len(votes) != len(images.pixels):
        raise ValueError(f"FER+ has {len(votes)} rows but fer2013.csv has {len(images.pixels)}: they must align")
    counts = votes[list(FERPLUS_VOTES)].apply(pd.to_numeric, errors="coerce").fillna(0).to_numpy()
    records = Records()
    for i, (line, row) in enumerate(zip(votes.index, counts, strict=True)):
        winner = ferplus_label(row)
        if winner not in FERPLUS_TO_LABEL:
            records.dropped[f"ferplus_{winner.lower()}"] += 1
            continue
        label = FERPLUS_TO_LABEL[winner]
        usage = str(votes["Usage"].iloc[i]).strip()
        records.sources.append(f"fer2013new.csv:{line} ({images.sources[i]})")
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
    if image is None and data.size:  # GIF and a few others OpenCV does not decode: Pillow, first frame
        try:
            with Image.open(io.BytesIO(data.tobytes())) as opened:
                image = np.asarray(opened.convert("L"))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            image = None
    if image is None:
        return np.empty(0, dtype=np.int64)
    if image.shape != (IMAGE_SIZE, IMAGE_SIZE):
        shrinking = image.shape[0] > IMAGE_SIZE or image.shape[1] > IMAGE_SIZE
        interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
        image = cv2.resize(image, (IMAGE_SIZE, IMAGE_SIZE), interpolation=interpolation)
    return image.astype(np.int64).ravel()


def read_image_folder(root: Path, validation_fraction: float, seed: int) -> Records:
    """`root/{train,test}/<class>/*.png` (any usual spelling and case); validation is carved from train.

    Split folders may also be named training/testing/val/validation or FER2013's Training/PublicTest/
    PrivateTest. The validation split is stratified by class and seeded, so the same tree always gives the same
    split. Files in folders that name no known class or split are dropped and counted; hidden files (`.DS_Store`,
    macOS `._*` forks) are skipped and counted.
    """
    if not root.is_dir():
        raise ValueError(f"{root}: not a directory")
    folders = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    split_dirs: dict[str, Path] = {}
    records = Records()
    for folder in folders:
        split = FOLDER_SPLITS.get(folder.name.lower())
        if split is None:
            records.dropped[f"unknown_split_folder:{folder.name}"] += sum(1 for _ in _image_files(folder, records))
        elif split in split_dirs:
            raise ValueError(f"{root}: both {split_dirs[split].name}/ and {folder.name}/ hold the {split} split")
        else:
            split_dirs[split] = folder
    found = sorted(p.name for p in root.iterdir())
    if "train" not in split_dirs:
        raise ValueError(f"{root}: no train/ folder (found {found}); data.path must be the folder holding "
                         "train/ and test/")  # fmt: skip
    if "test" not in split_dirs:
        raise ValueError(f"{root}: no test/ folder (found {found}); the evaluate stage needs a held-out test "
                         "split: add test/<class>/ (also recognised: testing/, PrivateTest/)")  # fmt: skip
    for split, split_dir in split_dirs.items():
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            files = list(_image_files(class_dir, records))
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


def _image_files(folder: Path, records: Records) -> list[Path]:
    """Image files below `folder`, sorted; hidden files are counted under `dropped` and skipped."""
    files = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if any(part.startswith(".") for part in path.relative_to(folder).parts):
            records.dropped["hidden_file"] += 1
            continue
        files.append(path)
    return files


def numeric_folder_hint(dropped: Counter[str]) -> str:
    """Class folders named 0-6 are ambiguous (FER2013 numbers 4 Sad and 6 Neutral, other exports differ)."""
    numeric = sorted(k.split(":", 1)[1] for k in dropped if k.startswith("unknown_class_folder:")
                     and k.split(":", 1)[1].strip().isdigit())  # fmt: skip
    if not numeric:
        return ""
    return (
        f"; class folders named {numeric} are numbers, which exports order differently (FER2013: 0 angry, "
        "1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral): rename them to class names"
    )


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
