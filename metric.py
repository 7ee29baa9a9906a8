"""Metrics: one JSON object per line in <run>/metrics.jsonl, mirrored to W&B when asked.

Knows nothing about which metrics exist, except the few that older runs logged under other
names before they took the seed's (`read_metrics` reads those under the new ones). W&B is optional: used only when `wandb_project`
is set and the package imports; offline unless WANDB_MODE says otherwise.
"""
from __future__ import annotations

import json
import math
import os
import time


class MetricLogger:
    def __init__(self, run_dir: str, enabled: bool = True, wandb_project: str = "",
                 config: dict | None = None, run_name: str | None = None):
        self.enabled = enabled
        self.path = os.path.join(run_dir, "metrics.jsonl")
        self.run_name = run_name or os.path.basename(os.path.abspath(run_dir))
        self.wandb = None
        if not enabled:
            return
        os.makedirs(run_dir, exist_ok=True)
        if wandb_project:
            try:
                import wandb
            except ImportError:
                print("note: wandb is not installed; metrics go to metrics.jsonl only")
            else:
                self.wandb = wandb.init(project=wandb_project, dir=run_dir, config=config,
                                        name=self.run_name,
                                        mode=os.environ.get("WANDB_MODE", "offline"),
                                        resume="allow")

    def log(self, step: int, values: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3)}
        record.update({k: _plain(v) for k, v in values.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def close(self) -> None:
        if self.wandb is not None:
            self.wandb.finish()


def _plain(value):
    """Tensors and numpy scalars to Python numbers; NaN/inf as strings JSON can hold."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


# name before -> the seed's name, now logged (runs before 2026-12-02 wrote the old ones)
RENAMED = {"train/lr": "optim/lr", "train/grad_norm": "optim/grad_norm",
           "train/frames_per_s": "perf/frames_per_sec", "train/tflops": "perf/tflops"}


def current_names(record: dict) -> dict:
    """An older record under today's names (train/step_ms, milliseconds, as time/step_sec)."""
    for old, new in RENAMED.items():
        if old in record:
            record[new] = record.pop(old)
    if "train/step_ms" in record:
        record["time/step_sec"] = record.pop("train/step_ms") / 1000
    return record


def read_metrics(run_dir_or_file: str) -> list[dict]:
    """All records of a metrics.jsonl (a run still writing may end in a partial line), older
    runs' renamed metrics under their current names."""
    path = run_dir_or_file
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(current_names(json.loads(line)))
            except json.JSONDecodeError:
                continue
    return records
