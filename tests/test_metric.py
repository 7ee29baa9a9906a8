"""metric.py: metrics.jsonl records as written and read back."""
import json

import numpy as np
import torch

from metric import MetricLogger, read_metrics


def test_records_hold_the_step_and_plain_numbers(tmp_path):
    logger = MetricLogger(str(tmp_path / "run"))
    logger.log(10, {"train/loss": torch.tensor(0.25), "train/epoch": np.int64(3), "note": "x"})
    logger.log(20, {"train/loss": float("nan"), "val/flow_loss": float("inf")})
    logger.close()
    records = read_metrics(str(tmp_path / "run"))
    assert [r["step"] for r in records] == [10, 20]
    assert records[0]["train/loss"] == 0.25 and records[0]["train/epoch"] == 3
    assert records[0]["note"] == "x"
    assert records[1]["train/loss"] == "nan" and records[1]["val/flow_loss"] == "inf"
    assert all(isinstance(r["time"], float) for r in records)


def test_a_run_still_writing_reads_up_to_its_partial_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "train/loss": 2.0}) + "\n" + '{"step": 2, "trai')
    assert read_metrics(str(path)) == [{"step": 1, "train/loss": 2.0}]


def test_the_run_is_named_after_its_folder_unless_named(tmp_path):
    assert MetricLogger(str(tmp_path / "exp_7") + "/").run_name == "exp_7"
    assert MetricLogger(str(tmp_path / "exp_7"), run_name="baseline").run_name == "baseline"


def test_a_disabled_logger_writes_nothing(tmp_path):
    logger = MetricLogger(str(tmp_path / "rank1"), enabled=False)
    logger.log(1, {"train/loss": 1.0})
    assert not (tmp_path / "rank1").exists()


def test_an_older_runs_metrics_read_under_the_seeds_names(tmp_path):
    """Runs logged train/lr, train/step_ms, ... before those took the seed's names."""
    older = {"step": 50, "train/loss": 0.5, "train/lr": 1e-3, "train/grad_norm": 2.0,
             "train/step_ms": 40.0, "train/frames_per_s": 3.5e5, "train/tflops": 120.0}
    (tmp_path / "metrics.jsonl").write_text(json.dumps(older) + "\n")
    record, = read_metrics(str(tmp_path))
    assert record == {"step": 50, "train/loss": 0.5, "optim/lr": 1e-3, "optim/grad_norm": 2.0,
                      "time/step_sec": 0.04, "perf/frames_per_sec": 3.5e5, "perf/tflops": 120.0}
