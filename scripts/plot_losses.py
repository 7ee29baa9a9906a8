"""The loss overlays of scripts/bench.py (`--loss_steps N`): every `losses` record in the JSONL
files given, one flow-loss curve each, and below them each curve's relative difference from
the first one's.

    python scripts/plot_losses.py docs/bench/A.jsonl [B.jsonl ...] --out overlay.png

Two versions of the code that compute the same function, run from the same seed, give curves
within bf16 noise of each other; the lower panel shows how far within. Prints each curve's
median and largest relative difference, the figures BENCHMARKS.md quotes.
"""
from __future__ import annotations

import json
import os
import sys

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from checks import ArgumentParser  # noqa: E402


def loss_curves(paths: list[str]) -> dict[str, np.ndarray]:
    """label -> flow loss per step, for each `losses` record; the label is the variant, the
    code version where the record names one, and the file."""
    curves = {}
    for path in paths:
        with open(path) as f:
            for line_no, line in enumerate(f, 1):
                record = json.loads(line)
                if record.get("mode") != "losses":
                    continue
                code = f" @ {record['code']}" if record.get("code") else ""
                label = f"{record.get('variant', '?')}{code} ({os.path.basename(path)}:{line_no})"
                curves[label] = np.asarray(record["flow_loss"], dtype=float)
    return curves


def relative_differences(curves: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """|loss - first curve's loss| / first curve's loss, step by step over the steps both
    have, for every other curve."""
    reference = next(iter(curves.values()))
    differences = {}
    for label, curve in list(curves.items())[1:]:
        n = min(len(curve), len(reference))
        differences[label] = np.abs(curve[:n] - reference[:n]) / reference[:n]
    return differences


def plot(curves: dict[str, np.ndarray], differences: dict[str, np.ndarray], out: str) -> None:
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 6), sharex=True,
                                      gridspec_kw={"height_ratios": [2, 1]})
    for label, curve in curves.items():
        top.plot(np.arange(1, len(curve) + 1), curve, label=label, linewidth=1)
    top.set_ylabel("flow loss")
    top.legend(fontsize=7)
    for label, difference in differences.items():
        bottom.semilogy(np.arange(1, len(difference) + 1), np.maximum(difference, 1e-9),
                        label=label, linewidth=1)
    bottom.set_ylabel("relative difference\nfrom the first curve", fontsize=8)
    if len(differences) > 1:
        bottom.legend(fontsize=7)
    bottom.set_xlabel("optimizer step")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None) -> int:
    parser = ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("jsonl", nargs="+", help="scripts/bench.py records")
    parser.add_argument("--out", required=True, help="PNG to write")
    args = parser.parse_args(argv)
    curves = loss_curves(args.jsonl)
    if len(curves) < 2:
        parser.error(f"found {len(curves)} loss curve(s) in {', '.join(args.jsonl)}: an overlay "
                     "needs two (scripts/bench.py --loss_steps N)")
    differences = relative_differences(curves)
    plot(curves, differences, args.out)
    for label, difference in differences.items():
        print(f"{label}: relative difference from the first curve, median "
              f"{np.median(difference):.2g}, max {difference.max():.2g}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
