"""Ingest stage: read a FER2013-format source into the canonical table and count its classes.

The canonical table (`faces.parquet`) has one row per source row, malformed rows included, so that the
validate stage can refuse them with their row numbers instead of the loader silently dropping them:

    row         source line number (1 = first data row after the header)
    split       train | validation | test (None when the Usage value is unknown)
    usage       the source's split name as written
    label       project label index (-1 when the source code is unknown)
    source_code the source's class code as written
    n_pixels    how many pixel values the row holds
    pixel_min, pixel_max, pixel_std   over those values (NaN when none parse)
    pixels      2304 uint8 bytes when the row is well-formed, else empty
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from pipelines.labels import (
    FER2013_CODE_TO_LABEL,
    FER2013_USAGE_TO_SPLIT,
    LABEL_INDEX,
    LABELS,
    PIXELS_PER_IMAGE,
    SPLITS,
)

logger = logging.getLogger(__name__)

FER2013_COLUMNS = ("emotion", "pixels", "Usage")


def _parse_pixels(text: str) -> np.ndarray:
    """Parse one space-separated pixel string; non-numeric tokens make the whole row unparseable."""
    try:
        return np.array(text.split(), dtype=np.int64)
    except ValueError:
        return np.empty(0, dtype=np.int64)


def _code_to_index(code: str) -> int:
    try:
        return LABEL_INDEX[FER2013_CODE_TO_LABEL[int(code)]]
    except (KeyError, ValueError):
        return -1


def read_fer2013_csv(path: Path) -> pd.DataFrame:
    """Read a fer2013.csv (UTF-8 with or without BOM, LF or CRLF) into the canonical table."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig", skipinitialspace=True)
    raw.columns = [str(c).strip() for c in raw.columns]
    missing = [c for c in FER2013_COLUMNS if c not in raw.columns]
    if missing:
        raise ValueError(f"{path}: not a FER2013 CSV: missing column(s) {missing}; found {list(raw.columns)}")
    return canonical_table(raw["emotion"].str.strip(), raw["pixels"].str.strip(), raw["Usage"].str.strip())


def canonical_table(codes: pd.Series, pixel_texts: pd.Series, usages: pd.Series) -> pd.DataFrame:
    """Build the canonical table from FER2013-coded columns of equal length."""
    parsed = [_parse_pixels(text) for text in pixel_texts]
    n_pixels = np.array([p.size for p in parsed], dtype=np.int64)
    with np.errstate(all="ignore"):
        pixel_min = np.array([p.min() if p.size else np.nan for p in parsed], dtype=np.float64)
        pixel_max = np.array([p.max() if p.size else np.nan for p in parsed], dtype=np.float64)
        pixel_std = np.array([p.std() if p.size else np.nan for p in parsed], dtype=np.float64)
    well_formed = (n_pixels == PIXELS_PER_IMAGE) & (pixel_min >= 0) & (pixel_max <= 255)
    pixels = [p.astype(np.uint8).tobytes() if ok else b"" for p, ok in zip(parsed, well_formed, strict=True)]
    usage = usages.astype(str).to_numpy()
    return pd.DataFrame(
        {
            "row": np.arange(1, len(parsed) + 1, dtype=np.int64),
            "split": pd.Series([FER2013_USAGE_TO_SPLIT.get(u) for u in usage], dtype=object),
            "usage": pd.Series(usage, dtype=object),
            "label": np.array([_code_to_index(c) for c in codes], dtype=np.int64),
            "source_code": pd.Series(codes.astype(str).to_numpy(), dtype=object),
            "n_pixels": n_pixels,
            "pixel_min": pixel_min,
            "pixel_max": pixel_max,
            "pixel_std": pixel_std,
            "pixels": pd.Series(pixels, dtype=object),
        }
    )


def class_counts(table: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Count rows per split and label name, with every label present in every split."""
    counts: dict[str, dict[str, int]] = {split: dict.fromkeys(LABELS, 0) for split in SPLITS}
    known = table[(table["label"] >= 0) & table["split"].isin(SPLITS)]
    for (split, label), n in known.groupby(["split", "label"]).size().items():
        counts[str(split)][LABELS[int(label)]] = int(n)
    return counts


def fingerprint(table: pd.DataFrame) -> str:
    """Content hash of the labelled pixels per split: identical data gives the identical fingerprint."""
    digest = hashlib.sha256()
    for split, label, pixels in zip(table["split"], table["label"], table["pixels"], strict=True):
        digest.update(f"{split}:{label}:".encode())
        digest.update(pixels)
    return digest.hexdigest()


def load_split(table_path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of a validated canonical table as (N x 48 x 48 uint8 images, N int64 labels)."""
    table = pd.read_parquet(table_path, columns=["split", "label", "pixels"])
    part = table[table["split"] == split]
    if part.empty:
        raise ValueError(f"{table_path}: split {split!r} is empty")
    images = np.frombuffer(b"".join(part["pixels"]), dtype=np.uint8).reshape(-1, 48, 48)
    return images.copy(), part["label"].to_numpy(dtype=np.int64)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True, help="canonical parquet table to write")
    parser.add_argument("--metrics", type=Path, required=True, help="class counts JSON to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    data = yaml.safe_load(args.params.read_text())["data"]
    source, path = data["source"], Path(data["path"])
    if source not in ("synthetic", "fer2013_csv"):
        raise SystemExit(f"data.source={source!r} is not supported; use 'synthetic' or 'fer2013_csv'")
    table = read_fer2013_csv(path)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_parquet(args.out, index=False)
    summary = {
        "splits": class_counts(table),
        "fingerprint": fingerprint(table),
        "dropped": {},
    }
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("ingested %d rows from %s (%s)", len(table), path, source)


if __name__ == "__main__":
    main()
