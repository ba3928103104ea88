"""Loaders for the real published formats, on small files made here (awkward ones included)."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from pipelines.ingest import DataParams, canonical_table, class_counts, ingest, main
from pipelines.labels import LABELS
from pipelines.sources import FERPLUS_VOTES, read_fer2013_csv, read_ferplus, read_image_folder


def _face(seed: int, size: int = 48, colour: bool = False) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (size, size, 3) if colour else (size, size), dtype=np.uint8)
    return image


def _write_tree(root: Path, layout: dict[str, dict[str, int]], size: int = 48, colour: bool = False) -> None:
    seed = 0
    for split, classes in layout.items():
        for folder, n in classes.items():
            (root / split / folder).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                seed += 1
                cv2.imwrite(str(root / split / folder / f"im{i}.png"), _face(seed, size, colour))


def test_image_folder_counts_with_usual_spellings_and_cases(tmp_path: Path) -> None:
    layout = {
        "train": {"angry": 10, "Disgusted": 3, "fearful": 7, "HAPPY": 12, "neutral": 9, "Sad": 8, "surprised": 6},
        "test": {"Angry": 2, "disgust": 1, "Fear": 3, "happy": 4, "Neutral": 2, "sad": 5, "Surprise": 1},
    }
    _write_tree(tmp_path, layout)
    records = read_image_folder(tmp_path, validation_fraction=0.2, seed=3)

    counts = class_counts(canonical_table(records))
    assert counts["test"] == {"angry": 2, "disgust": 1, "fear": 3, "happy": 4, "neutral": 2, "sad": 5, "surprise": 1}
    train_plus_val = {k: counts["train"][k] + counts["validation"][k] for k in LABELS}
    assert train_plus_val == {"angry": 10, "disgust": 3, "fear": 7, "happy": 12, "neutral": 9, "sad": 8, "surprise": 6}
    # Stratified: every class with enough images gives about 20 % to validation.
    assert counts["validation"]["angry"] == 2 and counts["validation"]["happy"] == 2


def test_validation_carve_is_seeded(tmp_path: Path) -> None:
    _write_tree(tmp_path, {"train": {"happy": 20, "sad": 20}, "test": {"happy": 1}})
    a = read_image_folder(tmp_path, 0.25, seed=1).splits
    b = read_image_folder(tmp_path, 0.25, seed=1).splits
    c = read_image_folder(tmp_path, 0.25, seed=2).splits
    assert a == b != c


def test_any_size_and_colour_becomes_48x48_gray(tmp_path: Path) -> None:
    _write_tree(tmp_path, {"train": {"happy": 2}, "test": {"happy": 1}}, size=100, colour=True)
    (tmp_path / "train" / "happy" / "big.JPG").write_bytes(cv2.imencode(".jpg", _face(9, 300, True))[1].tobytes())
    records = read_image_folder(tmp_path, 0.5, 0)
    assert len(records.pixels) == 4
    assert all(p.size == 48 * 48 and 0 <= p.min() and p.max() <= 255 for p in records.pixels)


def test_unknown_class_folders_are_dropped_and_counted(tmp_path: Path) -> None:
    _write_tree(tmp_path, {"train": {"happy": 3, "contempt": 2}, "test": {"happy": 1}})
    records = read_image_folder(tmp_path, 0.34, 0)
    assert records.dropped == {"unknown_class_folder:contempt": 2}
    assert len(records.labels) == 4


def test_unreadable_image_becomes_a_malformed_row(tmp_path: Path) -> None:
    _write_tree(tmp_path, {"train": {"happy": 3}, "test": {"happy": 1}})
    (tmp_path / "train" / "happy" / "broken.png").write_bytes(b"not a png")
    records = read_image_folder(tmp_path, 0.25, 0)
    assert sorted(p.size for p in records.pixels)[0] == 0


def test_image_folder_without_train_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "test" / "happy").mkdir(parents=True)
    with pytest.raises(ValueError, match="no train/"):
        read_image_folder(tmp_path, 0.1, 0)


def _write_ferplus(root: Path, votes: list[list[int]], usages: list[str]) -> None:
    rows = [f"{i % 7},{' '.join(str((i * 7 + k) % 256) for k in range(2304))},{u}" for i, u in enumerate(usages)]
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    header = "Usage,Image name," + ",".join(FERPLUS_VOTES)
    lines = [f"{u},fer{i:07d}.png," + ",".join(map(str, v)) for i, (u, v) in enumerate(zip(usages, votes, strict=True))]
    (root / "fer2013new.csv").write_text(header + "\n" + "\n".join(lines) + "\n")


def test_ferplus_majority_vote_and_drops(tmp_path: Path) -> None:
    #         neutral happy surprise sad anger disgust fear contempt unknown NF
    votes = [
        [0, 10, 0, 0, 0, 0, 0, 0, 0, 0],  # happy
        [6, 0, 0, 4, 0, 0, 0, 0, 0, 0],  # neutral
        [0, 0, 0, 0, 0, 0, 0, 0, 0, 10],  # not a face -> dropped
        [0, 0, 0, 0, 0, 0, 0, 0, 8, 2],  # unknown -> dropped
        [0, 0, 0, 0, 0, 0, 0, 7, 0, 3],  # contempt -> dropped
        [0, 0, 5, 0, 0, 0, 5, 0, 0, 0],  # tie -> dropped
        [0, 0, 0, 1, 9, 0, 0, 0, 0, 0],  # anger -> angry
        [4, 0, 0, 1, 3, 2, 0, 0, 0, 0],  # FER+'s fer0000000: 4 of 9 once the single vote goes -> dropped
        [5, 0, 0, 1, 1, 1, 1, 1, 0, 0],  # single votes are outliers: 5 of 5 -> neutral
        [5, 0, 0, 2, 3, 0, 0, 0, 0, 0],  # exactly half is no majority -> dropped
    ]
    usages = ["Training", "Training", "Training", "PublicTest", "PrivateTest", "Training", "PrivateTest",
              "Training", "PublicTest", "Training"]  # fmt: skip
    _write_ferplus(tmp_path, votes, usages)
    records = read_ferplus(tmp_path)
    assert [LABELS[i] for i in records.labels] == ["happy", "neutral", "angry", "neutral"]
    assert records.splits == ["train", "train", "test", "validation"]
    assert records.dropped == {"ferplus_nf": 1, "ferplus_unknown": 1, "ferplus_contempt": 1, "ferplus_no_majority": 3}
    # Each row names its line in both files: after drops, its position alone would point at another row.
    assert records.sources[2] == "fer2013new.csv:8 (fer2013.csv:8)"
    assert records.sources[3] == "fer2013new.csv:10 (fer2013.csv:10)"


def test_ferplus_row_count_mismatch_is_an_error(tmp_path: Path) -> None:
    _write_ferplus(tmp_path, [[0, 1, 0, 0, 0, 0, 0, 0, 0, 0]], ["Training"])
    with (tmp_path / "fer2013.csv").open("a") as f:
        f.write("3," + " ".join(["1"] * 2304) + ",Training\n")
    with pytest.raises(ValueError, match="align"):
        read_ferplus(tmp_path)


def _fer_csv_with(path: Path, rows: list[tuple[int, np.ndarray, str]]) -> Path:
    lines = [f"{code},{' '.join(map(str, face.ravel()))},{usage}" for code, face, usage in rows]
    path.write_text("emotion,pixels,Usage\n" + "\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("policy", ["drop", "fail"])
def test_duplicates_and_leakage_policies(tmp_path: Path, policy: str) -> None:
    a, b, c = _face(1), _face(2), _face(3)
    brighter_c = np.clip(c.astype(int) + 3, 0, 255).astype(np.uint8)  # near-identical, not identical
    path = _fer_csv_with(
        tmp_path / "f.csv",
        [
            (3, a, "Training"),
            (3, a, "Training"),
            (4, b, "Training"),
            (5, c, "Training"),
            (5, brighter_c, "PrivateTest"),
        ],
    )
    table, summary = ingest(DataParams(source="fer2013_csv", path=str(path), duplicates=policy, leakage=policy))
    if policy == "drop":
        assert summary["dropped"] == {"duplicate_in_split": 1, "leakage_from_train": 1}
        assert len(table) == 3 and set(table["row"]) == {1, 3, 5}  # the test row stays; train loses its twin
        assert (table["duplicates_in_split"] == 1).all() and (table["phash_splits"] == 1).all()
    else:
        assert summary["dropped"] == {}
        assert list(table["duplicates_in_split"]) == [2, 2, 1, 1, 1]
        assert list(table["phash_splits"]) == [1, 1, 1, 2, 2]


def test_unknown_policy_or_source_is_refused() -> None:
    with pytest.raises(ValueError, match="data.leakage"):
        DataParams(leakage="ignore")
    with pytest.raises(ValueError, match="data.source"):
        DataParams(source="kaggle")


def _run_ingest(tmp_path: Path, data: dict[str, object]) -> dict[str, object]:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"data": data}))
    main(["--params", str(params), "--out", str(tmp_path / "t.parquet"), "--metrics", str(tmp_path / "data.json")])
    return dict(json.loads((tmp_path / "data.json").read_text()))


def test_data_json_of_a_fer2013_csv_names_every_count_right(tmp_path: Path) -> None:
    per_code = {0: 41, 1: 7, 2: 33, 3: 60, 4: 52, 5: 25, 6: 47}  # FER2013 codes, all counts different
    rows, seed = [], 100
    for code, n in per_code.items():
        for i in range(n):
            seed += 1
            rows.append((code, _face(seed), ["Training", "PublicTest", "PrivateTest"][i % 3]))
    path = _fer_csv_with(tmp_path / "fer2013.csv", rows)
    summary = _run_ingest(tmp_path, {"source": "fer2013_csv", "path": str(path)})
    totals = {label: sum(split[label] for split in summary["splits"].values()) for label in LABELS}  # type: ignore[attr-defined]
    assert totals == {"angry": 41, "disgust": 7, "fear": 33, "happy": 60, "sad": 52, "surprise": 25, "neutral": 47}
    assert summary["splits"]["validation"]["neutral"] == 16  # type: ignore[index]
    assert summary["dropped"] == {} and len(str(summary["fingerprint"])) == 64


def test_data_json_of_an_image_folder_tree(tmp_path: Path) -> None:
    layout = {"train": {"happy": 10, "Sad": 5}, "test": {"HAPPY": 2, "sad": 3, "notes": 1}}
    _write_tree(tmp_path / "tree", layout)
    summary = _run_ingest(
        tmp_path, {"source": "image_folder", "path": str(tmp_path / "tree"), "validation_fraction": 0.2}
    )
    splits = summary["splits"]
    assert splits == {  # type: ignore[comparison-overlap]
        "train": dict.fromkeys(LABELS, 0) | {"happy": 8, "sad": 4},
        "validation": dict.fromkeys(LABELS, 0) | {"happy": 2, "sad": 1},
        "test": dict.fromkeys(LABELS, 0) | {"happy": 2, "sad": 3},
    }
    assert summary["dropped"] == {"unknown_class_folder:notes": 1}


def test_kaggle_tar_gz_is_read_and_an_ambiguous_archive_is_named(tmp_path: Path) -> None:
    import tarfile

    csv = _fer_csv_with(tmp_path / "fer2013.csv", [(3, _face(1), "Training"), (4, _face(2), "PrivateTest")])
    (tmp_path / "README").write_text("readme")
    archive = tmp_path / "fer2013.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # Kaggle's layout: fer2013/{fer2013.csv,README,fer2013.bib}
        tar.add(csv, "fer2013/fer2013.csv")
        tar.add(tmp_path / "README", "fer2013/README")
    records = read_fer2013_csv(archive)
    assert [LABELS[i] for i in records.labels] == ["happy", "sad"]
    assert records.sources == ["fer2013.tar.gz/fer2013.csv:2", "fer2013.tar.gz/fer2013.csv:3"]
    two = tmp_path / "two.tar"
    with tarfile.open(two, "w") as tar:
        tar.add(csv, "a.csv")
        tar.add(csv, "b.csv")
    with pytest.raises(ValueError, match=r"two.tar: expected one fer2013.csv .*a.csv, b.csv"):
        read_fer2013_csv(two)


def test_line_numbers_survive_blank_lines_and_parse_errors_name_the_file(tmp_path: Path) -> None:
    face = " ".join(map(str, _face(1).ravel()))
    path = tmp_path / "fer2013.csv"
    path.write_text(f"emotion,pixels,Usage\n3,{face},Training\n\n\n3,1 2 3,Training\n")
    records = read_fer2013_csv(path)
    assert records.sources == ["fer2013.csv:2", "fer2013.csv:5"] and records.pixels[1].size == 3
    path.write_text(f"emotion,pixels,Usage\n3,{face},Training\n3,{face},Training,extra\n")
    with pytest.raises(ValueError, match=r"fer2013.csv: cannot be read as a CSV file: .*line 3"):
        read_fer2013_csv(path)


@pytest.mark.parametrize(
    ("header", "hint"),
    [("emotion,pixels", "train.csv, which has no Usage"), ("id,pixels", "unlabelled test.csv"),
     ("Usage,Image name,neutral", "source: ferplus")],
)  # fmt: skip
def test_files_mistaken_for_fer2013_get_a_hint(tmp_path: Path, header: str, hint: str) -> None:
    path = tmp_path / "x.csv"
    path.write_text(header + "\n" + ",".join(["1"] * len(header.split(","))) + "\n")
    with pytest.raises(ValueError, match=hint):
        read_fer2013_csv(path)


def test_fer2013_usage_names_as_split_folders_and_unknown_split_folders(tmp_path: Path) -> None:
    _write_tree(tmp_path, {"Training": {"happy": 4}, "PublicTest": {"happy": 2}, "PrivateTest": {"happy": 3},
                           "extras": {"happy": 5}})  # fmt: skip
    records = read_image_folder(tmp_path, 0.5, 0)
    assert sorted(records.splits) == ["test"] * 3 + ["train"] * 4 + ["validation"] * 2  # nothing carved
    assert records.dropped == {"unknown_split_folder:extras": 5}


def test_image_folder_without_a_test_split_is_refused_before_training(tmp_path: Path) -> None:
    _write_tree(tmp_path, {"train": {"happy": 4}, "validation": {"happy": 2}})
    with pytest.raises(ValueError, match=r"no test/ folder .*PrivateTest"):
        read_image_folder(tmp_path, 0.1, 0)


def test_hidden_files_are_skipped_and_gifs_decoded(tmp_path: Path) -> None:
    from PIL import Image

    _write_tree(tmp_path, {"train": {"happy": 2}, "test": {"happy": 1}})
    (tmp_path / "train" / "happy" / "._im0.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    (tmp_path / "train" / "happy" / ".DS_Store").write_bytes(b"junk")
    Image.fromarray(_face(5, 64)).save(tmp_path / "train" / "happy" / "anim.gif")
    records = read_image_folder(tmp_path, 0.34, 0)
    assert records.dropped == {"hidden_file": 1}  # .DS_Store has no image suffix: never considered
    assert len(records.pixels) == 4 and all(p.size == 48 * 48 for p in records.pixels)


def test_numeric_class_folders_get_a_hint(tmp_path: Path) -> None:
    _write_tree(tmp_path / "tree", {"train": {"0": 2, "3": 2}, "test": {"3": 1}})
    with pytest.raises(ValueError, match=r"no rows to ingest .*numbers.*rename them to class names"):
        ingest(DataParams(source="image_folder", path=str(tmp_path / "tree")))


def test_leakage_between_validation_and_test_leaves_test_untouched(tmp_path: Path) -> None:
    a, b = _face(1), _face(2)
    path = _fer_csv_with(tmp_path / "f.csv", [(3, a, "Training"), (3, b, "PublicTest"), (3, b, "PrivateTest")])
    table, summary = ingest(DataParams(source="fer2013_csv", path=str(path)))
    assert summary["dropped"] == {"leakage_from_validation": 1}
    assert list(table["split"]) == ["train", "test"] and (table["phash_splits"] == 1).all()


def test_ingest_errors_are_one_clear_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        _run_ingest(tmp_path, {"source": "fer2013_csv", "path": str(tmp_path / "missing.csv")})
    assert exit_info.value.code == 1
    assert any("ingest: " in r.message and "missing.csv: no such file" in r.message for r in caplog.records)


def test_awkward_csv_layouts(tmp_path: Path) -> None:
    import gzip

    face = " ".join(map(str, _face(1).ravel()))
    path = tmp_path / "fer2013.csv"
    # A blank line before the header, a row of empty fields (malformed: kept for validation to refuse).
    path.write_text(f"\nemotion,pixels,Usage\n3,{face},Training\n,,\n4,{face},PrivateTest\n")
    records = read_fer2013_csv(path)
    assert records.sources == ["fer2013.csv:3", "fer2013.csv:4", "fer2013.csv:5"]
    assert records.labels[1] == -1 and records.pixels[1].size == 0
    # A quoted field spanning two lines: no crash, rows numbered in order.
    path.write_text(f'emotion,pixels,Usage\n3,"{face}\n",Training\n4,{face},PrivateTest\n')
    assert len(read_fer2013_csv(path).pixels) == 2
    # gzip, and a truncated gzip named as such.
    packed = gzip.compress(f"emotion,pixels,Usage\n3,{face},Training\n".encode())
    (tmp_path / "f.csv.gz").write_bytes(packed)
    assert read_fer2013_csv(tmp_path / "f.csv.gz").sources == ["f.csv.gz:2"]
    (tmp_path / "cut.csv.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match=r"cut.csv.gz: cannot be read as a CSV file"):
        read_fer2013_csv(tmp_path / "cut.csv.gz")
