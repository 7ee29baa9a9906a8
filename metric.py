"""Metrics: one JSON object per line in <run>/metrics.jsonl, mirrored to W&B when asked.

Knows nothing about which metrics exist. W&B is optional: used only when `wandb_project`
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


def read_metrics(run_dir_or_file: str) -> list[dict]:
    """All records of a metrics.jsonl (a run still writing may end in a partial line)."""
    path = run_dir_or_file
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.jsonl")
    records = []
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records
