"""Training curves of a run, finished or still writing: loss, eval WER and step time vs step.

    python scripts/plot_run.py RUN_DIR [--out PNG]     # default RUN_DIR/training.png
    python scripts/plot_run.py RUN_A RUN_B --out compare.png   # runs overlaid, by name

Reads RUN_DIR/metrics.jsonl with metric.read_metrics (a line being written is skipped) and
draws with report.plot_run; prints each series' length and last value, so a glance at the
terminal says whether the run is alive and improving.
"""
from __future__ import annotations

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from checks import ArgumentParser  # noqa: E402
from metric import read_metrics  # noqa: E402
from report import plot_runs  # noqa: E402


def last_value(records: list[dict], key: str) -> tuple[int, float] | None:
    for record in reversed(records):
        if isinstance(record.get(key), (int, float)):
            return record["step"], record[key]
    return None


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", help="run directories holding metrics.jsonl")
    parser.add_argument("--out", help="PNG to write (default RUN_DIR/training.png, one run)")
    args = parser.parse_args(argv)
    if len(args.run_dirs) > 1 and not args.out:
        parser.error("several runs: say where the comparison goes with --out")
    runs = {}
    for run_dir in args.run_dirs:
        try:
            runs[os.path.basename(os.path.abspath(run_dir))] = read_metrics(run_dir)
        except OSError as exc:
            print(f"error: {run_dir}: no metrics.jsonl to read ({exc.strerror})", file=sys.stderr)
            return 2
    out = args.out or os.path.join(args.run_dirs[0], "training.png")
    last_step = max((r.get("step", 0) for records in runs.values() for r in records), default=0)
    title = " vs ".join(runs) + f" (step {last_step})"
    counts = plot_runs(runs, out, title)
    for name, records in runs.items():
        for key, n in counts[name].items():
            last = last_value(records, key)
            tail = f", last {last[1]:.4g} at step {last[0]}" if last else ""
            print(f"{name + ' ' if len(runs) > 1 else ''}{key:<16} {n:>6} points{tail}")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
