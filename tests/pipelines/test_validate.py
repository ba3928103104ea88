from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.ingest import DataParams, ingest
from pipelines.labels import LABELS
from pipelines.validate import main, validate_table
from tests.pipelines.conftest import fer_table


def _corrupt(fer_csv: Path, tmp_path: Path, row: int, column: str, value: str) -> Path:
    lines = fer_csv.read_text().splitlines()
    emotion, pixels, usage = lines[row].split(",")
    fields = {"emotion": emotion, "pixels": pixels, "Usage": usage} | {column: value}
    lines[row] = ",".join(fields.values())
    out = tmp_path / "broken.csv"
    out.write_text("\n".join(lines) + "\n")
    return out


def test_clean_data_passes(canonical: pd.DataFrame) -> None:
    assert validate_table(canonical) == []


def test_short_pixel_row_fails_naming_expectation_and_row(fer_csv: Path, tmp_path: Path) -> None:
    pixels = fer_csv.read_text().splitlines()[7].split(",")[1]
    broken = _corrupt(fer_csv, tmp_path, 7, "pixels", " ".join(pixels.split()[:2303]))
    failures = validate_table(fer_table(broken))
    assert len(failures) == 1
    (failure,) = failures
    assert failure.expectation == "expect_column_values_to_be_between" and failure.column == "n_pixels"
    assert failure.unexpected_count == 1 and failure.example_rows == [7]
    assert "2303" in failure.describe()


def test_unknown_label_fails_naming_the_row(fer_csv: Path, tmp_path: Path) -> None:
    failures = validate_table(fer_table(_corrupt(fer_csv, tmp_path, 12, "emotion", "9")))
    assert [(f.column, f.example_rows) for f in failures] == [("label", [12])]


def test_misspelled_usage_fails(fer_csv: Path, tmp_path: Path) -> None:
    failures = validate_table(fer_table(_corrupt(fer_csv, tmp_path, 3, "Usage", "Trainning")))
    assert {f.column for f in failures} == {"split"}
    assert all(f.example_rows == [3] for f in failures)


def test_constant_image_fails(fer_csv: Path, tmp_path: Path) -> None:
    failures = validate_table(fer_table(_corrupt(fer_csv, tmp_path, 5, "pixels", " ".join(["0"] * 2304))))
    assert [(f.column, f.example_rows) for f in failures] == [("pixel_std", [5])]


def test_errors_inside_great_expectations_are_failures_not_passes(canonical: pd.DataFrame) -> None:
    # A missing column makes the column expectations raise inside GX, which hides the error in the result.
    failures = validate_table(canonical.drop(columns=["n_pixels"]))
    assert failures, "a table without n_pixels must not validate"
    assert any(f.unexpected_count == -1 and "error" in f.detail for f in failures)


def test_main_exits_non_zero_and_writes_the_report(fer_csv: Path, tmp_path: Path) -> None:
    table = fer_table(_corrupt(fer_csv, tmp_path, 9, "emotion", "9"))
    table.to_parquet(tmp_path / "t.parquet", index=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["--table", str(tmp_path / "t.parquet"), "--report", str(tmp_path / "report.json")])
    assert exit_info.value.code == 1
    report = (tmp_path / "report.json").read_text()
    assert '"success": false' in report and "example rows: [9]" in report


def test_duplicates_and_leakage_kept_by_a_fail_policy_stop_validation(tmp_path: Path, fer_csv: Path) -> None:
    lines = fer_csv.read_text().splitlines()
    train_row = next(i for i, line in enumerate(lines[1:], 1) if line.endswith(",Training"))
    test_row = next(i for i, line in enumerate(lines[1:], 1) if line.endswith(",PrivateTest"))
    _, pixels, _ = lines[train_row].split(",")
    lines[test_row] = ",".join([lines[test_row].split(",")[0], pixels, "PrivateTest"])  # leak a train face
    lines.append(lines[train_row])  # and repeat it inside train
    broken = tmp_path / "leaky.csv"
    broken.write_text("\n".join(lines) + "\n")
    params = DataParams(source="fer2013_csv", path=str(broken), duplicates="fail", leakage="fail")
    table, _ = ingest(params)
    failures = validate_table(table, docs_dir=tmp_path / "docs")
    by_column = {f.column: f for f in failures}
    assert set(by_column) == {"duplicates_in_split", "phash_splits"}
    assert by_column["duplicates_in_split"].example_rows == [train_row, len(lines) - 1]
    assert test_row in by_column["phash_splits"].example_rows
    assert f"leaky.csv:{test_row + 1}" in by_column["phash_splits"].example_sources  # file line of the row
    index = (tmp_path / "docs" / "index.html").read_text()
    assert "faces" in index  # HTML data docs of the failed run


def test_a_class_missing_from_a_split_or_an_empty_split_fails(canonical: pd.DataFrame) -> None:
    no_disgust_in_test = canonical[~((canonical["split"] == "test") & (canonical["label"] == LABELS.index("disgust")))]
    (failure,) = validate_table(no_disgust_in_test.reset_index(drop=True))
    assert failure.expectation == "every_class_in_every_split" and "test/disgust" in failure.detail
    assert "1 split/class pair(s)" in failure.describe()
    (failure,) = validate_table(canonical[canonical["split"] != "test"].reset_index(drop=True))
    assert "empty split(s): test" in failure.detail and failure.unexpected_count == len(LABELS)
