"""Evaluate a checkpoint: sample prompts, vocode, transcribe with Whisper, score WER.

    python scripts/eval_checkpoint.py --ckpt RUN/latest.pt --prompts eval/libritts_samples.txt \
        --out DIR [--whisper base.en --vocoder auto --steps 32 --cfg_scale 2]
    python scripts/eval_checkpoint.py --data_dir data/ljspeech --resynth --out DIR  # floor only
    python scripts/eval_checkpoint.py --ckpt CKPT --data_dir D --oracle_duration --resynth --out DIR
    python scripts/eval_checkpoint.py --ckpt CKPT --prompts F --out DIR \
        --sweep "steps=8,16,32 cfg_scale=1,2,3"
    python scripts/eval_checkpoint.py --mels RUN/eval/step_N/mels.npz --out DIR \
        [--data_dir D] [--log_to_run]   # mels sampled elsewhere; WER into RUN/metrics.jsonl

Writes DIR/wer.jsonl (one line per prompt), DIR/summary.json (wer, n_prompts, whisper_model,
vocoder, steps, cfg, and duration_error when a dataset is given), DIR/report.html and the wavs.
--resynth puts the floor (ground-truth mels -> vocoder -> Whisper) in DIR/resynth/; --sweep
puts each setting in DIR/sweep/<setting>/, one line each in DIR/sweep.jsonl, and the best
setting's summary in DIR/summary.json.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import audio  # noqa: E402
import evaluator  # noqa: E402
import checks  # noqa: E402
from asr import ASRError, load_asr  # noqa: E402
from checkpoint import CheckpointError, model_from_checkpoint  # noqa: E402
from config import ConfigError, TrainConfig  # noqa: E402
from data import DatasetError, PreparedDataset  # noqa: E402
from metric import MetricLogger  # noqa: E402

SWEEP_KEYS = {"steps": checks.STEPS, "cfg_scale": checks.CFG_SCALE, "sway": checks.SWAY,
              "duration_scale": checks.DURATION_SCALE, "seed": checks.SEED}
USER_ERRORS = (evaluator.EvalError, ASRError, audio.VocoderError, CheckpointError,
               DatasetError, audio.AudioError, ConfigError)


def parse_args(argv=None) -> argparse.Namespace:
    p = checks.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", help="checkpoint file (a run's latest.pt)")
    p.add_argument("--mels", help="score generated mels saved by an evaluation (mels.npz)")
    p.add_argument("--log_to_run", action="store_true",
                   help="with --mels RUN/eval/step_N[/oracle_duration]/mels.npz: append the WER "
                        "to RUN/metrics.jsonl at step N, as the in-loop evaluation logs it")
    p.add_argument("--prompts", help="text file, one prompt a line; default: the split's texts")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--num_samples", type=checks.flag(checks.COUNT), default=0,
                   help="evenly spaced subset; 0: all")
    p.add_argument("--whisper", default="base.en", help="Whisper model name (tiny.en, base, ...)")
    p.add_argument("--asr", default="auto", choices=("auto", "openai-whisper", "faster-whisper",
                                                      "none"), help="none: wavs only, no WER")
    p.add_argument("--vocoder", default="auto", choices=audio.VOCODERS + ("none",),
                   help="none: keep the generated mels only (DIR/mels.npz), to score elsewhere")
    p.add_argument("--bigvgan_model", default=audio.BIGVGAN_MODEL)
    p.add_argument("--steps", type=checks.flag(checks.STEPS), default=TrainConfig.eval_steps)
    p.add_argument("--cfg_scale", type=checks.flag(checks.CFG_SCALE),
                   default=TrainConfig.eval_cfg_scale)
    p.add_argument("--sway", type=checks.flag(checks.SWAY), default=TrainConfig.eval_sway,
                   help="time-grid sway in [-1, 1]; < 0 puts more Euler steps near the noise end")
    p.add_argument("--weights", default="ema", choices=("ema", "raw"),
                   help="sample with the run's EMA weights (when it kept them) or the raw ones")
    p.add_argument("--seed", type=checks.flag(checks.SEED), default=0)
    p.add_argument("--duration_scale", type=checks.flag(checks.DURATION_SCALE), default=1.0)
    p.add_argument("--batch_size", type=checks.flag(checks.POSITIVE_COUNT), default=8)
    p.add_argument("--data_dir", help="prepared dataset: prompts, true durations, the floor")
    p.add_argument("--split", default="val")
    p.add_argument("--oracle_duration", action="store_true",
                   help="sample the split's utterances at their true lengths")
    p.add_argument("--resynth", action="store_true", help="also score the resynthesis floor")
    p.add_argument("--sweep", default="", help='e.g. "steps=8,16,32 cfg_scale=1,2,3"')
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--compile", action="store_true",
                   help="GPU: compile the decoder with CUDA graphs (about a minute once; then "
                        "faster per step: for many prompts)")
    args = p.parse_args(argv)
    if not args.ckpt and not args.mels and not (args.resynth and args.data_dir):
        p.error("give --ckpt, --mels, or --data_dir with --resynth for the floor alone")
    if args.ckpt and not (args.prompts or args.data_dir):
        p.error("give --prompts FILE or --data_dir DIR")
    if (args.oracle_duration or args.resynth) and not args.data_dir:
        p.error("--oracle_duration and --resynth need --data_dir")
    if args.vocoder == "none" and (args.resynth or args.mels):
        p.error("--resynth and --mels need a vocoder")
    if args.log_to_run and (not args.mels or args.asr == "none"):
        p.error("--log_to_run needs --mels and an ASR")
    if args.oracle_duration and args.prompts:
        p.error("--oracle_duration samples the split's own texts: drop --prompts")
    return args


def parse_sweep(spec: str) -> list[dict]:
    """"steps=8,16 cfg_scale=1,2" -> the grid [{steps: 8, cfg_scale: 1.0}, ...]."""
    axes = []
    for part in spec.split():
        key, _, values = part.partition("=")
        if key not in SWEEP_KEYS or not values:
            raise evaluator.EvalError(f"--sweep: {part!r} is not KEY=V1,V2 with KEY one of "
                                      f"{', '.join(SWEEP_KEYS)}")
        axes.append([(key, checks.check_number(f"--sweep {key}", v, SWEEP_KEYS[key]))
                     for v in values.split(",")])
    if not axes:
        raise evaluator.EvalError("--sweep: no settings given")
    return [dict(setting) for setting in itertools.product(*axes)]


def dataset_rows(args, model):
    """The split's usable rows (an evenly spaced subset with --num_samples), or (None, [])."""
    if not args.data_dir:
        return None, []
    dataset = PreparedDataset(args.data_dir)
    cfg = model.cfg if model is not None else None
    rows = dataset.rows(args.split, cfg.block_size if cfg else 10 ** 9,
                        cfg.max_text_length if cfg else 10 ** 9)
    if not rows:
        raise evaluator.EvalError(f"{args.data_dir}: no usable utterances in split {args.split!r}")
    return dataset, evaluator.evenly_spaced(rows, args.num_samples)


def run_and_step(mels_path: str) -> tuple[str, int]:
    """RUN/eval/step_N[/oracle_duration]/mels.npz (the in-loop evaluation's layout) -> (RUN, N)."""
    match = re.search(r"^(.*)/eval/step_(\d+)(/oracle_duration)?/mels\.npz$",
                      os.path.abspath(mels_path))
    if not match:
        raise evaluator.EvalError(f"--log_to_run: {mels_path} is not RUN/eval/step_N/mels.npz")
    return match.group(1), int(match.group(2))


def write_json(path: str, value) -> None:
    with open(path, "w") as f:
        json.dump(value, f, indent=2)
        f.write("\n")


def pct(wer) -> str:
    return "n/a" if wer is None else f"{100 * wer:.2f}%"


def run_model(args, model, prompts, dataset, rows, vocoder, asr) -> dict:
    """One evaluation (or a sweep of them) of the model; returns the summary written."""
    prompts = prompts or [(dataset.ids[r], dataset.texts[r]) for r in rows]
    n_frames = [int(dataset.n_frames[r]) for r in rows] if args.oracle_duration else None
    gt_mels = {dataset.ids[r]: dataset.mel(r) for r in rows} if args.oracle_duration else None
    extra = {"checkpoint": args.ckpt, "prompts": args.prompts or f"{args.data_dir}:{args.split}"}
    if dataset is not None:
        extra["duration_error"] = evaluator.duration_error(model, dataset, rows)
    base = dict(steps=args.steps, cfg_scale=args.cfg_scale, sway=args.sway,
                duration_scale=args.duration_scale, seed=args.seed)
    summaries = []
    for change in parse_sweep(args.sweep) if args.sweep else [{}]:
        s = {**base, **change}
        tag = "_".join(f"{k}{v}" for k, v in change.items())
        out = os.path.join(args.out, "sweep", tag) if args.sweep else args.out
        sampling = evaluator.Sampling(batch_size=args.batch_size, **s)
        summary = evaluator.evaluate_texts(model, prompts, out, vocoder, asr, sampling,
                                           n_frames=n_frames, gt_mels=gt_mels)
        summary.update(extra, setting=change, dir=os.path.relpath(out, args.out))
        write_json(os.path.join(out, "summary.json"), summary)
        print(f"{tag or 'model'}: WER {pct(summary.get('wer'))} over {summary['n_prompts']} "
              f"prompts ({summary.get('whisper_model')}, {summary.get('vocoder', 'no vocoder')}, "
              f"{summary['seconds']} s)")
        summaries.append(summary)
    if not args.sweep:
        return summaries[0]
    keys = ("wer", "n_prompts", "seconds", "dir")
    with open(os.path.join(args.out, "sweep.jsonl"), "w") as f:
        f.writelines(json.dumps({**s["setting"], **{k: s.get(k) for k in keys}}) + "\n"
                     for s in summaries)
    best = min(summaries, key=lambda s: float("inf") if s.get("wer") is None else s["wer"])
    write_json(os.path.join(args.out, "summary.json"), {**best, "sweep_file": "sweep.jsonl"})
    return best


def main(argv=None) -> int:
    args = parse_args(argv)
    # The cheap checks first, so a typo fails before any model loads.
    try:
        if args.sweep:
            parse_sweep(args.sweep)
        prompts = args.prompts and evaluator.load_prompts(args.prompts, None, args.num_samples)
        log_to = run_and_step(args.mels) if args.log_to_run else None
        model = (model_from_checkpoint(args.ckpt, args.device, use_ema=args.weights == "ema",
                                       compile=args.compile) if args.ckpt else None)
        dataset, rows = dataset_rows(args, model)
        vocoder = (None if args.vocoder == "none"
                   else audio.load_vocoder(args.vocoder, args.device, args.bigvgan_model))
        asr = None if args.asr == "none" else load_asr(args.asr, args.whisper)
        floor = None
        if args.resynth:
            floor = evaluator.resynth_floor(dataset, rows, vocoder, asr,
                                            os.path.join(args.out, "resynth"))
            write_json(os.path.join(args.out, "resynth", "summary.json"), floor)
            print(f"floor ({args.split}, resynthesis): WER {pct(floor['wer'])} over "
                  f"{floor['n_prompts']} utterances ({floor['whisper_model']}, {floor['vocoder']})")
        if args.mels:  # mels sampled elsewhere (e.g. on a GPU without the ASR packages)
            prompts, mels, settings = evaluator.load_mels(args.mels)
            keep = evaluator.evenly_spaced(list(range(len(prompts))), args.num_samples)
            prompts, mels = [prompts[i] for i in keep], [mels[i] for i in keep]
            start = time.time()
            summary = evaluator.voice_and_score(args.out, prompts, mels, vocoder, asr, settings)
            summary["seconds"] = round(time.time() - start, 2)
            if dataset is not None and not settings.get("oracle_duration"):
                summary["duration_error"] = evaluator.length_error(dataset, prompts, mels)
            write_json(os.path.join(args.out, "summary.json"), summary)
            if log_to is not None:  # the key the in-loop evaluation logs, at its step
                key = "eval/wer_oracle_duration" if settings.get("oracle_duration") else "eval/wer"
                values = {key: summary["wer"], "eval/scored_prompts": summary["n_prompts"]}
                MetricLogger(log_to[0]).log(log_to[1], values)
            print(f"{args.mels}: WER {pct(summary['wer'])} over {summary['n_prompts']} prompts "
                  f"({summary['whisper_model']}, {summary['vocoder']})")
        if model is not None:
            summary = run_model(args, model, prompts, dataset, rows, vocoder, asr)
            if floor is not None and asr is not None:
                print(f"model WER {pct(summary['wer'])}  floor {pct(floor['wer'])}")
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
