"""A PNG grid of a few prepared utterances as training sees them: log-mel, text, duration.

    python scripts/visualize_data.py --data_dir data/ljspeech --out grid.png [--n 6] \
        [--split train] [--silence_prob 0.5] [--seed 1234]

The padded batch comes from data.Collate with the training config's seed and epoch 0, so the
tail silence drawn (--silence_prob > 0; a red line marks where speech ends) is the
augmentation the training step would add to these utterances. grid.json beside the PNG lists
ids, texts and frames with and without the added silence.

Shape letters: b utterances, n mel frames, m mel bands.
"""
from __future__ import annotations

import json
import os
import sys
import textwrap

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import audio  # noqa: E402
import checks  # noqa: E402
import config as config_lib  # noqa: E402
from data import Collate, DatasetError, PreparedDataset  # noqa: E402
from evaluator import evenly_spaced  # noqa: E402
from report import draw_mel  # noqa: E402


def collect(dataset: PreparedDataset, cfg, split: str, n: int) -> dict:
    """n evenly spaced usable rows of `split`, collated as one training batch."""
    rows = dataset.rows(split, cfg.block_size, cfg.max_text_length)
    if not rows:
        raise DatasetError(f"{dataset.data_dir}: no usable utterances in split {split!r}")
    rows = evenly_spaced(rows, n)
    batch = Collate(dataset, cfg)(rows)  # mel (b, n, m), padded with silence
    frames = batch.mel_mask.sum(1).tolist()  # speech + any added tail silence
    return {"rows": rows, "ids": [dataset.ids[r] for r in rows],
            "texts": [dataset.texts[r] for r in rows], "frames": frames,
            "speech_frames": [int(dataset.n_frames[r]) for r in rows],
            "mels": [batch.mel[i, :k].numpy() for i, k in enumerate(frames)]}


def draw_grid(path: str, grid: dict) -> tuple[int, int]:
    """One row per utterance on a shared time axis (lengths compare by eye); returns the
    image's (height, width) in pixels."""
    from matplotlib.figure import Figure
    n, dpi = len(grid["ids"]), 80
    fig = Figure(figsize=(10, 1.9 * n), layout="tight")
    axes = fig.subplots(n, 1, squeeze=False)[:, 0]
    longest = max(grid["frames"])
    for ax, uid, text, frames, speech, mel in zip(axes, grid["ids"], grid["texts"], grid["frames"],
                                                  grid["speech_frames"], grid["mels"]):
        title = f"{uid}   {frames / audio.FRAMES_PER_SECOND:.2f} s, {frames} frames"
        if frames > speech:
            title += f"  (incl. {(frames - speech) / audio.FRAMES_PER_SECOND:.2f} s tail silence)"
            ax.axvline(speech - 0.5, color="red", linewidth=1)
        draw_mel(ax, mel, title)
        ax.set_xlim(-0.5, longest - 0.5)
        ax.set_xlabel("\n".join(textwrap.wrap(text, 130)), fontsize=7)
    fig.savefig(path, dpi=dpi)
    width, height = fig.get_size_inches() * dpi
    return int(round(height)), int(round(width))


def main(argv=None) -> int:
    parser = checks.ArgumentParser(description=__doc__.split("\n\n")[0])
    checks.add_utterance_choice(parser, "train", 6, "utterances, evenly spaced over the split")
    parser.add_argument("--out", required=True, help="PNG to write (and .json beside it)")
    parser.add_argument("--silence_prob", type=checks.flag(checks.FRACTION), default=0.0)
    parser.add_argument("--seed", type=checks.flag(checks.SEED),
                        default=config_lib.TrainConfig.seed)
    args = parser.parse_args(argv)
    try:
        cfg = config_lib.load_config(None, {"data_dir": args.data_dir, "seed": args.seed,
                                            "silence_prob": args.silence_prob})
        grid = collect(PreparedDataset(args.data_dir), cfg, args.split, args.n)
    except (config_lib.ConfigError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    height, width = draw_grid(args.out, grid)
    info = {k: grid[k] for k in ("ids", "texts", "frames", "speech_frames")}
    info.update(split=args.split, silence_prob=args.silence_prob, seed=args.seed,
                max_silence_sec=cfg.max_silence_sec, image_height=height, image_width=width)
    json_path = os.path.splitext(args.out)[0] + ".json"
    with open(json_path, "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out} ({len(grid['ids'])} utterances, {height}x{width} px) and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
