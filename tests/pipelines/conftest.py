from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.generate import GenerateParams, write_fer2013_csv
from pipelines.ingest import canonical_table
from pipelines.sources import read_fer2013_csv


@pytest.fixture(scope="session")
def fer_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic fer2013.csv with all three Usage values."""
    path = tmp_path_factory.mktemp("fer") / "fer2013.csv"
    write_fer2013_csv(path, GenerateParams(n_faces=140, seed=11, validation_fraction=0.2, test_fraction=0.2))
    return path


def fer_table(path: Path) -> pd.DataFrame:
    """The canonical table of a FER2013-format CSV."""
    return canonical_table(read_fer2013_csv(path))


@pytest.fixture
def canonical(fer_csv: Path) -> pd.DataFrame:
    return fer_table(fer_csv)
