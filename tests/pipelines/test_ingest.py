from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.generate import GenerateParams, split_sizes, write_fer2013_csv
from pipelines.ingest import fingerprint
from pipelines.labels import FER2013_CODE_TO_LABEL, LABEL_INDEX, LABELS, fer2013_code_to_index
from pipelines.tables import class_counts, load_split
from tests.pipelines.conftest import fer_table


def _pixels(value: int, n: int = 2304) -> str:
    return " ".join([str(value)] * (n - 1) + [str((value + 1) % 256)])


def _write(path: Path, rows: list[tuple[str, str, str]], bom: bool = False, newline: str = "\n") -> Path:
    text = newline.join(["emotion,pixels,Usage"] + [",".join(r) for r in rows]) + newline
    path.write_bytes(("\ufeff" if bom else "").encode() + text.encode())
    return path


@pytest.mark.parametrize(
    ("code", "label"),
    [(0, "angry"), (1, "disgust"), (2, "fear"), (3, "happy"), (4, "sad"), (5, "surprise"), (6, "neutral")],
)
def test_fer2013_codes_map_by_name_not_position(code: int, label: str) -> None:
    assert FER2013_CODE_TO_LABEL[code] == label
    assert LABELS[fer2013_code_to_index(code)] == label


def test_counts_land_under_the_right_label_names(tmp_path: Path) -> None:
    # Every code gets a different count, so a position-based mapping cannot pass.
    per_code = {0: 3, 1: 1, 2: 5, 3: 7, 4: 2, 5: 4, 6: 6}
    rows = [(str(c), _pixels(10 + c), "Training") for c, n in per_code.items() for _ in range(n)]
    table = fer_table(_write(tmp_path / "fer2013.csv", rows))
    counts = class_counts(table)
    assert counts["train"] == {FER2013_CODE_TO_LABEL[c]: n for c, n in per_code.items()}
    assert counts["train"]["neutral"] == 6 and counts["train"]["sad"] == 2 and counts["train"]["surprise"] == 4
    assert counts["validation"] == dict.fromkeys(LABELS, 0)


@pytest.mark.parametrize(("bom", "newline"), [(True, "\n"), (False, "\r\n"), (True, "\r\n")])
def test_bom_and_crlf_are_read(tmp_path: Path, bom: bool, newline: str) -> None:
    rows = [("3", _pixels(50), "Training"), ("6", _pixels(60), "PublicTest"), ("4", _pixels(70), "PrivateTest")]
    table = fer_table(_write(tmp_path / "f.csv", rows, bom=bom, newline=newline))
    assert list(table["split"]) == ["train", "validation", "test"]
    assert list(table["label"]) == [LABEL_INDEX["happy"], LABEL_INDEX["neutral"], LABEL_INDEX["sad"]]
    assert (table["n_pixels"] == 2304).all()


def test_malformed_rows_are_kept_for_validation_to_refuse(tmp_path: Path) -> None:
    rows = [
        ("3", _pixels(50, 2303), "Training"),  # short row
        ("9", _pixels(50), "Training"),  # unknown code
        ("3", _pixels(50), "Trainning"),  # misspelled usage
        ("3", _pixels(50).replace("50", "300", 1), "Training"),  # out of range
    ]
    table = fer_table(_write(tmp_path / "f.csv", rows))
    assert len(table) == 4
    assert table.loc[0, "n_pixels"] == 2303 and table.loc[0, "pixels"] == b""
    assert table.loc[1, "label"] == -1
    assert table.loc[2, "split"] is None
    assert table.loc[3, "pixel_max"] == 300 and table.loc[3, "pixels"] == b""


def test_missing_column_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("emotion,pixels\n3,1 2 3\n")
    with pytest.raises(ValueError, match="missing column"):
        fer_table(path)


def test_generated_csv_round_trips_through_the_real_loader(tmp_path: Path) -> None:
    params = GenerateParams(n_faces=70, seed=5, validation_fraction=0.1, test_fraction=0.2)
    sizes = write_fer2013_csv(tmp_path / "fer2013.csv", params)
    header = (tmp_path / "fer2013.csv").read_text().splitlines()[0]
    assert header == "emotion,pixels,Usage"
    table = fer_table(tmp_path / "fer2013.csv")
    assert table["split"].value_counts().to_dict() == {k: v for k, v in sizes.items() if v}
    table.to_parquet(tmp_path / "faces.parquet", index=False)
    images, labels = load_split(tmp_path / "faces.parquet", "train")
    assert images.shape == (sizes["train"], 48, 48) and images.dtype == np.uint8
    assert set(labels) <= set(range(len(LABELS)))


def test_fingerprint_tracks_content(tmp_path: Path) -> None:
    rows = [("3", _pixels(50), "Training"), ("6", _pixels(60), "PublicTest")]
    a = fer_table(_write(tmp_path / "a.csv", rows))
    b = fer_table(_write(tmp_path / "b.csv", rows, bom=True, newline="\r\n"))
    c = fer_table(_write(tmp_path / "c.csv", [rows[0], ("5", _pixels(60), "PublicTest")]))
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)


def test_split_sizes_reject_impossible_fractions() -> None:
    assert split_sizes(100, 0.1, 0.1) == {"train": 80, "validation": 10, "test": 10}
    with pytest.raises(ValueError):
        split_sizes(100, 0.6, 0.5)


def test_load_split_refuses_an_empty_split(tmp_path: Path) -> None:
    table = fer_table(_write(tmp_path / "f.csv", [("3", _pixels(50), "Training")]))
    table.to_parquet(tmp_path / "t.parquet", index=False)
    with pytest.raises(ValueError, match="empty"):
        load_split(tmp_path / "t.parquet", "test")
    assert isinstance(pd.read_parquet(tmp_path / "t.parquet"), pd.DataFrame)


def test_extra_spaces_around_fields_and_between_pixels(tmp_path: Path) -> None:
    pixels = "  " + _pixels(80).replace(" ", "   ", 5) + " "
    path = tmp_path / "f.csv"
    path.write_text(f"emotion, pixels, Usage\n 3 ,{pixels}, Training \n")
    table = fer_table(path)
    assert table.loc[0, "n_pixels"] == 2304 and table.loc[0, "split"] == "train"
    assert table.loc[0, "label"] == LABEL_INDEX["happy"]


@pytest.mark.parametrize("code", ["7", "9", "-1", "x", ""])
def test_codes_outside_fer2013_are_unknown(tmp_path: Path, code: str) -> None:
    table = fer_table(_write(tmp_path / "f.csv", [(code, _pixels(50), "Training")]))
    assert table.loc[0, "label"] == -1 and table.loc[0, "source_code"] == code
