"""Ground-truth vs generated log-mels for a few utterances, and predicted vs true durations.

    python scripts/visualize_predictions.py --ckpt RUN/latest.pt --data_dir data/ljspeech \
        --out DIR [--n 4] [--split val] [--steps 16] [--cfg_scale 2.0] [--seed 0]

DIR/<id>.png: the generated mel (at the predicted length) beside the ground truth
(report.save_mel_image); DIR/durations.png: predicted vs true seconds for every usable
utterance of the split (of the train split, only the run's overfit_first_n_samples when it
set them); DIR/predictions.json: those seconds per utterance, their mean
relative error (the figure evaluator.duration_error reports) and the drawn samples.

Shape letters: b batch, n mel frames, m mel bands, l text tokens.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import numpy as np  # noqa: E402
import torch  # noqa: E402

import audio  # noqa: E402
import checks  # noqa: E402
import evaluator  # noqa: E402
from checkpoint import CheckpointError, load, model_from_checkpoint  # noqa: E402
from data import DatasetError, PreparedDataset  # noqa: E402
from report import save_mel_image  # noqa: E402


def plot_durations(path: str, true_s: np.ndarray, pred_s: np.ndarray, title: str) -> None:
    from matplotlib.figure import Figure
    fig = Figure(figsize=(4.5, 4.5), layout="tight")
    ax = fig.subplots()
    ax.scatter(true_s, pred_s, s=8, alpha=0.6)
    top = 1.05 * max(true_s.max(), pred_s.max())
    ax.plot([0, top], [0, top], color="grey", linewidth=1, label="predicted = true")
    ax.set_xlim(0, top), ax.set_ylim(0, top)
    ax.set_xlabel("true seconds"), ax.set_ylabel("predicted seconds"), ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=9), ax.legend(fontsize=8)
    fig.savefig(path, dpi=80)


def draw_samples(model, dataset, rows, out_dir, steps, cfg_scale, seed) -> list[dict]:
    """Sample the rows' texts at their predicted lengths; one PNG each beside the truth."""
    texts = [dataset.texts[r] for r in rows]
    mels = evaluator.sample_mels(model, texts, evaluator.Sampling(steps, cfg_scale, seed=seed))
    samples = []
    for row, text, mel in zip(rows, texts, mels):
        image = f"{dataset.ids[row]}.png"
        save_mel_image(os.path.join(out_dir, image), mel.numpy(), dataset.mel(row))
        samples.append({"id": dataset.ids[row], "text": text, "image": image,
                        "generated_frames": mel.shape[0],
                        "true_frames": int(dataset.n_frames[row])})
    return samples


def parse_args(argv=None) -> argparse.Namespace:
    parser = checks.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", required=True, help="checkpoint file (a run's latest.pt)")
    checks.add_utterance_choice(parser, "val", 4, "utterances to sample and draw")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--steps", type=checks.flag(checks.STEPS), default=16)
    parser.add_argument("--cfg_scale", type=checks.flag(checks.CFG_SCALE), default=2.0)
    parser.add_argument("--seed", type=checks.flag(checks.SEED), default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    return parser.parse_args(argv)


def split_rows(dataset: PreparedDataset, cfg, split: str) -> list[int]:
    """The split's utterances the model can take; of the train split, only what the run
    trained on (an overfit run's first N)."""
    rows = dataset.rows(split, cfg.block_size, cfg.max_text_length,
                        cfg.overfit_first_n_samples if split == "train" else 0)
    if not rows:
        raise DatasetError(f"{dataset.data_dir}: no usable utterances in split {split!r}")
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        model = model_from_checkpoint(args.ckpt, args.device)
        dataset = PreparedDataset(args.data_dir)
        rows = split_rows(dataset, model.cfg, args.split)
    except (CheckpointError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    true_s = dataset.n_frames[rows] / audio.FRAMES_PER_SECOND
    pred_frames = evaluator.predicted_frames(model, [dataset.texts[r] for r in rows])
    pred_s = pred_frames / audio.FRAMES_PER_SECOND
    error = float(np.mean(np.abs(pred_s - true_s) / true_s))  # as evaluator.duration_error
    step = load(args.ckpt)["step"]
    title = f"{args.split}: {len(rows)} utterances, step {step}, mean |error| {100 * error:.1f}%"
    plot_durations(os.path.join(args.out, "durations.png"), true_s, pred_s, title)
    samples = draw_samples(model, dataset, evaluator.evenly_spaced(rows, args.n), args.out,
                           args.steps, args.cfg_scale, args.seed)
    result = {"checkpoint": args.ckpt, "step": step, "split": args.split, "steps": args.steps,
              "cfg_scale": args.cfg_scale, "seed": args.seed, "duration_error": error,
              "utterances": [{"id": dataset.ids[r], "true_seconds": round(float(t), 4),
                              "predicted_seconds": round(float(p), 4)}
                             for r, t, p in zip(rows, true_s, pred_s)],
              "samples": samples}
    with open(os.path.join(args.out, "predictions.json"), "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"{args.split}: duration error {100 * error:.1f}% over {len(rows)} utterances; "
          f"{len(samples)} samples drawn in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
