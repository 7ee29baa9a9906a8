"""The whole job, offline, on a speech corpus the project makes itself (`./run.sh --demo`).

Stages (each reused when already done; `--fresh` starts over):
  1. corpus   espeak-ng speaks sentences from the project's own generator
  2. prepare  corpus -> mels.f16 + index.parquet + stats
  3. encoder  a small randomly initialised ByT5-architecture encoder (no hub needed)
  4. train    overfit a few training sentences (configs/demo.yaml; demo_gpu.yaml on a GPU)
  5. evaluate training and held-out prompts -> vocoder -> Whisper WER, the resynthesis floor,
              duration error -> .artifacts/demo/summary.json, report.html, training curves
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import torch  # noqa: E402

import audio  # noqa: E402
import checks  # noqa: E402
import config as config_lib  # noqa: E402
import evaluator  # noqa: E402
import report  # noqa: E402
from asr import load_asr  # noqa: E402
from checkpoint import load as load_checkpoint, model_from_checkpoint  # noqa: E402
from data import PreparedDataset  # noqa: E402
from metric import read_metrics  # noqa: E402

ROOT = os.path.join(REPO, ".artifacts", "demo")
MAX_PROMPTS = 24  # training sentences scored (each is sampled, vocoded, transcribed, drawn)


def script(name: str):
    return importlib.import_module(f"scripts.{name}")  # importable by worker processes too


def stage(number: int, text: str) -> float:
    print(f"\n[demo {number}/5] {text}", flush=True)
    return time.time()


def train(cfg_path: str, overrides: list[str]) -> None:
    """train.py in a child process: its log streams here, and it resumes if interrupted."""
    cmd = [sys.executable, os.path.join(REPO, "train.py"), "--config", cfg_path, *overrides]
    print(" ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, cwd=REPO, check=True)


def evaluate(cfg, run_dir: str, device: str, whisper: str, asr_name: str) -> dict:
    """Training prompts, held-out prompts and the floor, scored with one vocoder and ASR
    (asr_name none: wavs and mels only, to score elsewhere with eval_checkpoint.py --mels)."""
    dataset = PreparedDataset(cfg.data_dir)
    train_rows = evaluator.evenly_spaced(  # the GPU demo trains on all ~180: score 24
        dataset.rows("train", cfg.block_size, cfg.max_text_length, cfg.overfit_first_n_samples),
        MAX_PROMPTS)
    val_rows = dataset.rows("val", cfg.block_size, cfg.max_text_length)[:len(train_rows)]
    model = model_from_checkpoint(os.path.join(run_dir, "latest.pt"), device)
    vocoder = audio.load_vocoder("auto", device)
    asr = None if asr_name == "none" else load_asr(asr_name, whisper)
    results, rows = {}, []
    for name, subset in (("train", train_rows), ("heldout", val_rows)):
        prompts = [(dataset.ids[r], dataset.texts[r]) for r in subset]
        results[name] = evaluator.evaluate_texts(
            model, prompts, os.path.join(ROOT, name), vocoder, asr,
            evaluator.Sampling.from_config(cfg),
            gt_mels={dataset.ids[r]: dataset.mel(r) for r in subset})
        with open(os.path.join(ROOT, name, "wer.jsonl")) as f:  # ids relative to ROOT
            rows += [{**row, "id": f"{name}/{row['id']}"} for row in map(json.loads, f)]
    results["floor"] = evaluator.resynth_floor(dataset, train_rows, vocoder, asr,
                                               os.path.join(ROOT, "floor"))
    results["duration_error"] = evaluator.duration_error(model, dataset, val_rows)
    return {"results": results, "rows": rows, "vocoder": vocoder.name,
            "asr": asr.name if asr else None}


def main() -> None:
    parser = checks.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fresh", action="store_true", help="delete .artifacts/demo first")
    parser.add_argument("--n", type=checks.flag(checks.Limit(int, 20)), default=200,
                        help="corpus size (utterances; it trains on 6, holds out about 10%%)")
    parser.add_argument("--whisper", default="base.en")
    parser.add_argument("--asr", default="auto", choices=("auto", "faster-whisper",
                                                          "openai-whisper", "none"),
                        help="none: no WER (a machine without the ASR packages)")
    args = parser.parse_args()
    if args.fresh:
        shutil.rmtree(ROOT, ignore_errors=True)
    os.makedirs(ROOT, exist_ok=True)
    gpu = torch.cuda.is_available()
    device = "cuda" if gpu else "cpu"
    cfg_path = os.path.join(REPO, "configs", "demo_gpu.yaml" if gpu else "demo.yaml")
    seconds, t0 = {}, time.time()

    t = stage(1, f"corpus: {args.n} sentences spoken by espeak-ng")
    corpus = os.path.join(ROOT, "corpus")
    script("make_speech_corpus").make_corpus(corpus, args.n, seed=0, val_fraction=0.1,
                                             max_words=12)
    seconds["corpus"] = time.time() - t

    t = stage(2, "prepare: log-mels, index and statistics")
    data_dir = os.path.join(ROOT, "data")
    script("prepare_ljspeech").prepare(data_dir, src=corpus, workers=os.cpu_count() or 1,
                                       split_file=os.path.join(corpus, "splits.tsv"))
    seconds["prepare"] = time.time() - t

    t = stage(3, "encoder: a small random ByT5-architecture text encoder")
    encoder = script("make_random_encoder").make_random_encoder(
        os.path.join(REPO, ".artifacts", "encoders", "byt5-tiny"), "tiny")
    seconds["encoder"] = time.time() - t

    t = stage(4, f"train on {device} with {os.path.relpath(cfg_path, REPO)}")
    run_dir = os.path.join(ROOT, "run")
    overrides = ["--data_dir", data_dir, "--text_encoder_name", encoder, "--out_dir", run_dir,
                 "--eval_asr", args.asr]
    train(cfg_path, overrides)
    seconds["train"] = time.time() - t

    t = stage(5, "evaluate: sample, vocode, transcribe, score")
    cfg = config_lib.load_config(cfg_path, config_lib.parse_overrides(overrides))
    scored = evaluate(cfg, run_dir, device, args.whisper, args.asr)
    seconds["evaluate"] = time.time() - t
    write_outputs(scored, run_dir, seconds, time.time() - t0, device)


def write_outputs(scored: dict, run_dir: str, seconds: dict, total: float, device: str) -> None:
    results = scored["results"]
    records = read_metrics(run_dir)
    steps = load_checkpoint(os.path.join(run_dir, "latest.pt"))["step"]  # not the last log line
    report.plot_run(records, os.path.join(ROOT, "training.png"), "demo run")
    summary = {"wer_train_prompts": results["train"]["wer"],
               "wer_heldout": results["heldout"]["wer"],
               "wer_resynth_floor": results["floor"]["wer"],
               "duration_error": results["duration_error"], "train_steps": steps,
               "seconds": round(total, 1),
               "stage_seconds": {k: round(v, 1) for k, v in seconds.items()},
               "device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu",
               "whisper_model": scored["asr"], "vocoder": scored["vocoder"],
               "n_train_prompts": results["train"]["n_prompts"],
               "n_heldout_prompts": results["heldout"]["n_prompts"]}
    with open(os.path.join(ROOT, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    report.write_report(ROOT, scored["rows"], {"kind": "demo: training and held-out prompts",
                                               **{k: v for k, v in summary.items()
                                                  if k != "stage_seconds"}},
                        figures=("training.png",))
    print("\n" + json.dumps(summary, indent=2))
    print(f"\nlisten: {os.path.join(ROOT, 'report.html')}")


if __name__ == "__main__":
    main()
