"""benchmark.py: the corpus selection follows the standard split, evenly spaced, and the
record's rule picks the earliest evaluation at or under the target."""
import os

import pytest

import benchmark
from conftest import SHARED_DATA

LJ_TEXT = os.path.join(SHARED_DATA, "ljspeech_text")


@pytest.mark.skipif(not os.path.isdir(LJ_TEXT), reason="needs ../shared/data/ljspeech_text")
def test_benchmark_text_is_the_standard_split_evenly_spaced(tmp_path):
    counts = benchmark.write_benchmark_text(LJ_TEXT, str(tmp_path))
    assert counts == {"train": 4000, "val": 100, "test": 100}
    rows, split_of = benchmark.read_ljspeech_text(LJ_TEXT)
    source = {row[0]: "|".join(row) for row in rows}
    lines = (tmp_path / "metadata.csv").read_text(encoding="utf-8").splitlines()
    chosen = [line.split("\t") for line in (tmp_path / "splits.tsv").read_text().splitlines()[1:]]
    assert [line.split("|")[0] for line in lines] == [uid for uid, _ in chosen]
    assert all(source[line.split("|")[0]] == line for line in lines)  # rows copied unchanged
    assert all(split_of[uid] == split for uid, split in chosen)
    train_ids = [row[0] for row in rows if split_of[row[0]] == "train"]
    picked = [train_ids.index(uid) for uid, split in chosen if split == "train"]
    gaps = {b - a for a, b in zip(picked, picked[1:])}
    assert gaps <= {3, 4} and picked[0] == 0  # 12,500 / 4,000 = every 3.125th
    all_val = [row[0] for row in rows if split_of[row[0]] == "val"]
    assert [uid for uid, split in chosen if split == "val"] == all_val


def test_too_small_a_split_is_refused():
    rows = [[f"A{i}", "t", "t"] for i in range(10)]
    split_of = {f"A{i}": "train" for i in range(10)}
    small = benchmark.Protocol(n_train=5, n_val=1, n_test=1)
    with pytest.raises(benchmark.BenchmarkError, match="names 0 val ids; the benchmark needs 1"):
        benchmark.select_rows(rows, split_of, small)


def test_the_record_is_the_earliest_point_at_the_target():
    points = [{"train_seconds": 300, "wer_val": 0.12}, {"train_seconds": 100, "wer_val": 0.5},
              {"train_seconds": 200, "wer_val": 0.149}, {"train_seconds": 400, "wer_val": None}]
    target = benchmark.target_wer(0.05)
    assert target == pytest.approx(0.15)
    assert benchmark.first_at_target(points, target)["train_seconds"] == 200
    assert benchmark.first_at_target(points, 0.1) is None
