"""Generate stage: write the embedded synthetic faces as an exact FER2013 CSV (`emotion,pixels,Usage`)."""

from __future__ import annotations

import argparse
import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from tqdm import tqdm

from pipelines.labels import LABEL_TO_FER2013_CODE, LABELS, SPLIT_TO_FER2013_USAGE
from pipelines.logs import configure_logging
from pipelines.synthetic import generate_faces

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenerateParams:
    n_faces: int
    seed: int
    validation_fraction: float
    test_fraction: float

    @classmethod
    def from_yaml(cls, path: Path) -> GenerateParams:
        return cls(**yaml.safe_load(path.read_text())["generate"])


def split_sizes(n: int, validation_fraction: float, test_fraction: float) -> dict[str, int]:
    """Rows per split; train takes the remainder."""
    if not (0 <= validation_fraction < 1 and 0 <= test_fraction < 1 and validation_fraction + test_fraction < 1):
        raise ValueError("validation_fraction and test_fraction must be in [0, 1) and sum below 1")
    n_val, n_test = round(n * validation_fraction), round(n * test_fraction)
    return {"train": n - n_val - n_test, "validation": n_val, "test": n_test}


def write_fer2013_csv(path: Path, params: GenerateParams) -> dict[str, int]:
    """Write the synthetic set in FER2013's layout (Training, then PublicTest, then PrivateTest rows)."""
    sizes = split_sizes(params.n_faces, params.validation_fraction, params.test_fraction)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with (
        tmp.open("w", newline="") as f,
        tqdm(total=params.n_faces, desc="generate", unit="face", disable=None) as bar,
    ):
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["emotion", "pixels", "Usage"])
        # One seed per split so that growing one split does not reshuffle the others.
        for offset, (split, n) in enumerate(sizes.items()):
            for label_index, face in generate_faces(n, seed=params.seed * 1000 + offset):
                code = LABEL_TO_FER2013_CODE[LABELS[label_index]]
                writer.writerow([code, " ".join(map(str, face.ravel().tolist())), SPLIT_TO_FER2013_USAGE[split]])
                bar.update()
    os.replace(tmp, path)
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    configure_logging()
    params = GenerateParams.from_yaml(args.params)
    sizes = write_fer2013_csv(args.out, params)
    logger.info("wrote %s: %s", args.out, sizes)


if __name__ == "__main__":
    main()
