"""The speedrun's steps around training: the benchmark's text, its floors, records and samples.

    python scripts/speedrun.py text --ljspeech_text ../shared/data/ljspeech_text --out DIR
    python scripts/speedrun.py overrides          # the protocol's --key value pairs for train.py
    python scripts/speedrun.py floor --data_dir HELDOUT --out DIR
    python scripts/speedrun.py record RUN --floors DIR/floors.json --name NAME --recipe R \
        [--records docs/records --run_command "..." --commit C --scored_only]
    python scripts/speedrun.py samples RUN --step N --name NAME [--out docs/samples --n 4]

`record` scores a finished run the protocol's way (benchmark.py) on a CPU: the val mels kept at
every evaluation, in training-time order, then the test mels of the first evaluation at or
under the target (or, when none is, of the last: a row that says it did not reach it). It
appends one line to RECORDS/speedrun.jsonl and writes RECORDS/<name>/ (the run's log, config
and metrics, points.jsonl, curve.png) and RECORDS/speedrun.png (every record's curve).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import sys

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import benchmark  # noqa: E402
import checks  # noqa: E402
from benchmark import PROTOCOL, BenchmarkError  # noqa: E402
from evaluator import EvalError  # noqa: E402
from metric import read_metrics  # noqa: E402

FLOOR_VOCODERS = ("hifigan-LJSpeech", "hifigan-universal")
FLOOR_ASRS = ("base", "tiny.en")


def protocol_argv(protocol=PROTOCOL) -> list[str]:
    return [item for key, value in protocol.config_overrides().items()
            for item in (f"--{key}", str(value))]


def load_scorer(protocol):
    """(vocoder, asr) of the protocol, on the CPU."""
    import audio
    from asr import load_asr
    return (audio.load_vocoder(protocol.vocoder, "cpu"),
            load_asr(protocol.asr, protocol.whisper_model))


def score_mels(path: str, out_dir: str, vocoder, asr, dataset, cached_only: bool = False):
    """WER of the mels.npz an evaluation kept (its wavs, wer.jsonl and summary in out_dir),
    and its duration error against the same texts' utterances in `dataset`. A summary already
    in out_dir from the same vocoder and recognizer is reused: scoring costs CPU minutes."""
    import time

    import evaluator
    done = os.path.join(out_dir, "summary.json")
    if os.path.exists(done):
        with open(done) as f:
            summary = json.load(f)
        if (summary.get("vocoder"), summary.get("whisper_model")) == (vocoder.name, asr.name):
            return summary
    if cached_only:
        return None
    prompts, mels, settings = evaluator.load_mels(path)
    start = time.time()
    summary = evaluator.voice_and_score(out_dir, prompts, mels, vocoder, asr,
                                        {"kind": "model samples", **settings}, report=False)
    summary["seconds"] = round(time.time() - start, 2)
    summary["duration_error"] = evaluator.length_error(dataset, prompts, mels)
    with open(done, "w") as f:
        json.dump(summary, f, indent=2)
    return summary


# --- floors ------------------------------------------------------------------------------------
def floors(data_dir: str, out_dir: str, protocol=PROTOCOL) -> dict:
    """Ground-truth mels -> each HiFi-GAN weight -> each Whisper, for val (the scored subset)
    and test: {split: {vocoder: {whisper: wer}}}, written to OUT/floors.json with each
    transcript in OUT/<split>/<vocoder>/<whisper>.jsonl. Transcripts already in OUT for the
    same prompts are scored again from their text, not heard again (a floor costs CPU hours)."""
    import evaluator
    from data import PreparedDataset
    dataset = PreparedDataset(data_dir)
    result = {}
    for split, n in (("val", protocol.n_val_scored), ("test", protocol.n_test)):
        rows = evaluator.evenly_spaced(dataset.rows(split, 10 ** 9, 10 ** 9), n)
        if not rows:
            raise BenchmarkError(f"{data_dir}: no {split} utterances")
        split_dir = os.path.join(out_dir, split)
        result[split] = {name: split_floor(dataset, rows, name, split_dir, protocol)
                         for name in FLOOR_VOCODERS}
    with open(os.path.join(out_dir, "floors.json"), "w") as f:
        json.dump({"protocol": protocol.as_dict(), "data_dir": os.path.abspath(data_dir),
                   "floors": result}, f, indent=2)
    return result


def split_floor(dataset, rows: list[int], vocoder_name: str, split_dir: str, protocol) -> dict:
    """{whisper: corpus WER} of these utterances' own mels through one vocoder; transcripts in
    SPLIT_DIR/<vocoder>/<whisper>.jsonl."""
    import audio
    import evaluator
    import torch
    from asr import load_asr
    folder = os.path.join(split_dir, vocoder_name)
    prompts = [(dataset.ids[r], dataset.texts[r]) for r in rows]
    heard = {model: cached_hypotheses(os.path.join(folder, f"{model}.jsonl"), prompts)
             for model in FLOOR_ASRS}
    wavs = None
    if any(h is None for h in heard.values()):  # one vocoding, both recognizers
        vocoder = audio.load_vocoder(vocoder_name, "cpu")
        wavs = [vocoder(torch.as_tensor(dataset.mel(r)).T[None])[0].numpy()  # (m, n) -> (s,)
                for r in rows]
    wers = {}
    for model in FLOOR_ASRS:
        if heard[model] is None:
            heard[model] = load_asr(protocol.asr, model).transcribe(wavs)
        scored, corpus = evaluator.score(prompts, heard[model])
        wers[model] = corpus["wer"]
        os.makedirs(folder, exist_ok=True)
        with open(os.path.join(folder, f"{model}.jsonl"), "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in scored)
        print(f"floor {os.path.basename(split_dir)} ({len(rows)}) {vocoder_name} "
              f"{protocol.asr}:{model}: {100 * corpus['wer']:.2f}%")
    return wers


def cached_hypotheses(path: str, prompts: list[tuple[str, str]]) -> list[str] | None:
    """The transcripts an earlier floor run wrote to path, when they are of these prompts."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if [row["id"] for row in rows] != [pid for pid, _ in prompts]:
        return None
    return [row["hypothesis"] for row in rows]


def read_floors(floors_file: str, protocol) -> tuple[float, float, str]:
    """(val floor, test floor, the floors' dataset) of the protocol's vocoder and Whisper."""
    with open(floors_file) as f:
        written = json.load(f)
    table = written["floors"]
    return (table["val"][protocol.vocoder][protocol.whisper_model],
            table["test"][protocol.vocoder][protocol.whisper_model], written["data_dir"])


# --- record ------------------------------------------------------------------------------------
def check_protocol(run_dir: str, protocol) -> dict:
    """The run's config, refused when its evaluation did not follow the protocol."""
    with open(os.path.join(run_dir, "config.yaml")) as f:
        config = yaml.safe_load(f)
    for key, wanted in protocol.evaluation_overrides().items():
        if config.get(key) != wanted:
            raise BenchmarkError(f"{run_dir}/config.yaml: {key} is {config.get(key)!r}; the "
                                 f"protocol says {wanted!r} (scripts/speedrun.py overrides)")
    return config


def compile_seconds(records: list[dict], log_interval: int) -> float:
    """Training time beyond the steady step time: the first steps' compilation, mostly."""
    step_sec = [r["time/step_sec"] for r in records if "time/step_sec" in r]
    if not step_sec:
        return 0.0
    steady = statistics.median(step_sec)
    return sum(max(0.0, sec - steady) for sec in step_sec) * log_interval


def score_points(run_dir: str, vocoder, asr, dataset,
                 scored_only: bool = False) -> tuple[list[dict], list[int]]:
    """One point per evaluation the run kept: its step, training seconds, val WER and
    duration error; and the steps left out (scored_only: those not scored before)."""
    points, unscored = [], []
    for record in read_metrics(run_dir):
        if "eval/train_seconds" not in record:
            continue
        folder = os.path.join(run_dir, "eval", f"step_{record['step']}")
        summary = score_mels(os.path.join(folder, "mels.npz"), os.path.join(folder, "scored"),
                             vocoder, asr, dataset, cached_only=scored_only)
        if summary is None:
            unscored.append(record["step"])
            continue
        points.append({"step": record["step"], "train_seconds": record["eval/train_seconds"],
                       "wer_val": summary["wer"], "duration_error": summary["duration_error"]})
        print(f"step {record['step']} ({record['eval/train_seconds']:.0f} s): val WER "
              f"{100 * summary['wer']:.2f}%, duration error "
              f"{100 * summary['duration_error']:.1f}%")
    if not points:
        raise BenchmarkError(f"{run_dir}: no evaluation by the training clock to score")
    return sorted(points, key=lambda p: p["train_seconds"]), unscored


def run_date(records: list[dict]) -> str:
    """The UTC day the run started (a record is often written on a later day)."""
    started = records[0].get("time") if records else None
    if started is None:
        return datetime.date.today().isoformat()
    return datetime.datetime.fromtimestamp(started, datetime.timezone.utc).date().isoformat()


def make_record(run_dir: str, floors_file: str, name: str, recipe: str, command: str,
                protocol=PROTOCOL, commit: str = "", scored_only: bool = False) -> dict:
    config = check_protocol(run_dir, protocol)
    records = read_metrics(run_dir)
    info = next((r["run"] for r in records if "run" in r), {})
    from data import PreparedDataset
    floor_val, floor_test, heldout = read_floors(floors_file, protocol)
    dataset = PreparedDataset(heldout)  # the same texts and audio: their true lengths
    vocoder, asr = load_scorer(protocol)
    points, unscored = score_points(run_dir, vocoder, asr, dataset, scored_only)
    target = benchmark.target_wer(floor_val, protocol)
    hit = benchmark.first_at_target(points, target)
    chosen = hit or points[-1]
    folder = os.path.join(run_dir, "eval", f"step_{chosen['step']}")
    test = score_mels(os.path.join(folder, "test", "mels.npz"),
                      os.path.join(folder, "test", "scored"), vocoder, asr, dataset)
    return {"date": run_date(records), "device": info.get("device", "unknown"),
            "commit": commit or info.get("git_revision", "unknown"), "name": name,
            "recipe": recipe,
            "seed": config["seed"], "reached": hit is not None,
            "train_seconds": hit["train_seconds"] if hit else None,
            "compile_seconds": round(compile_seconds(records, config["log_interval"]), 1),
            "steps": chosen["step"], "wer_heldout": test["wer"], "wer_val": chosen["wer_val"],
            "wer_floor": floor_test, "wer_floor_val": floor_val, "target": target,
            "duration_error": chosen["duration_error"],
            "budget_seconds": config["max_train_seconds"], "command": command,
            "points_unscored": unscored,
            "points": points, "protocol": protocol.as_dict()}


def plot_speedrun(curves: dict[str, list[dict]], target: float, path: str) -> None:
    """Val WER against training seconds, one line per run, the target as a dashed line."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, points in curves.items():
        ax.plot([p["train_seconds"] for p in points], [100 * p["wer_val"] for p in points],
                marker="o", label=name)
    ax.axhline(100 * target, color="gray", linestyle="--", label=f"target {100 * target:.1f}%")
    ax.set(xlabel="training seconds (compilation included)", ylabel="val WER (%)",
           yscale="log", title="speedrun: val WER by training time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def publish(record: dict, run_dir: str, records_dir: str) -> str:
    """RECORDS/speedrun.jsonl + RECORDS/<name>/ + the curves of every record."""
    folder = os.path.join(records_dir, record["name"])
    os.makedirs(folder, exist_ok=True)
    for name in ("train.log", "config.yaml", "metrics.jsonl"):
        if os.path.exists(os.path.join(run_dir, name)):
            shutil.copyfile(os.path.join(run_dir, name), os.path.join(folder, name))
    with open(os.path.join(folder, "points.jsonl"), "w") as f:
        f.writelines(json.dumps(point) + "\n" for point in record["points"])
    row = {k: v for k, v in record.items() if k != "points"}
    with open(os.path.join(records_dir, "speedrun.jsonl"), "a") as f:
        f.write(json.dumps(row) + "\n")
    plot_speedrun({record["name"]: record["points"]}, record["target"],
                  os.path.join(folder, "curve.png"))
    plot_speedrun(all_curves(records_dir), record["target"],
                  os.path.join(records_dir, "speedrun.png"))
    return folder


def all_curves(records_dir: str) -> dict[str, list[dict]]:
    curves = {}
    with open(os.path.join(records_dir, "speedrun.jsonl")) as f:
        for line in f:
            name = json.loads(line)["name"]
            with open(os.path.join(records_dir, name, "points.jsonl")) as points:
                curves[name] = [json.loads(p) for p in points]
    return curves


def publish_samples(run_dir: str, step: int, name: str, out_dir: str, n: int = 4,
                    protocol=PROTOCOL) -> float:
    """n evenly spaced test utterances of one scored evaluation: OUT/<name>_step<N>_<id>.wav
    (the protocol's vocoding, as scored) beside its prompt in a .txt of the same name, and
    OUT/report.html (each clip's player, mel, prompt and what Whisper tiny.en heard); returns
    tiny.en's corpus WER on them, the listener the samples are published for."""
    import audio
    import evaluator
    from asr import load_asr
    from report import write_report
    folder = os.path.join(run_dir, "eval", f"step_{step}", "test")
    prompts, mels, _ = evaluator.load_mels(os.path.join(folder, "mels.npz"))
    chosen = evaluator.evenly_spaced(list(zip(prompts, mels)), n)
    missing = [pid for (pid, _), _ in chosen
               if not os.path.exists(os.path.join(folder, "scored", f"{pid}.wav"))]
    if missing:
        raise BenchmarkError(f"{folder}/scored/{missing[0]}.wav: missing; score the run first "
                             "(scripts/speedrun.py record)")
    os.makedirs(out_dir, exist_ok=True)
    published, wavs, images = [], [], {}
    for (pid, text), mel in chosen:
        stem = f"{name}_step{step}_{pid}"
        images[stem] = (mel, None)  # no ground truth beside it: the run keeps none
        shutil.copyfile(os.path.join(folder, "scored", f"{pid}.wav"),
                        os.path.join(out_dir, f"{stem}.wav"))
        with open(os.path.join(out_dir, f"{stem}.txt"), "w", encoding="utf-8") as f:
            f.write(text + "\n")
        published.append((stem, text))
        wavs.append(audio.load_wav(os.path.join(out_dir, f"{stem}.wav")))
    rows, corpus = evaluator.score(published, load_asr(protocol.asr, "tiny.en").transcribe(wavs))
    summary = {"kind": f"{name}: test samples at step {step}", "vocoder": protocol.vocoder,
               "whisper_model": "tiny.en", "n_prompts": len(rows), "wer": corpus["wer"]}
    write_report(out_dir, rows, summary, mels=images)
    print(f"{len(rows)} samples in {out_dir}: Whisper tiny.en WER {100 * corpus['wer']:.2f}%")
    return corpus["wer"]


# --- command line ------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    text = sub.add_parser("text", help="the benchmark's metadata.csv and splits.tsv")
    text.add_argument("--ljspeech_text", required=True, help="LJSpeech metadata.csv + splits.tsv")
    text.add_argument("--out", required=True)
    sub.add_parser("overrides", help="print the protocol's train.py overrides")
    floor = sub.add_parser("floor", help="resynthesis floors of a prepared val+test dataset")
    floor.add_argument("--data_dir", required=True)
    floor.add_argument("--out", required=True)
    rec = sub.add_parser("record", help="score a finished run and write its record")
    rec.add_argument("run_dir")
    rec.add_argument("--floors", required=True, help="floors.json written by `floor`")
    rec.add_argument("--name", required=True)
    rec.add_argument("--recipe", required=True, help='"speedrun", or "seed" for the baseline')
    rec.add_argument("--records", default=os.path.join(REPO, "docs", "records"))
    rec.add_argument("--run_command", default="", help="the command that trained the run")
    rec.add_argument("--commit", default="",
                     help="the code's commit, where the run's own git_revision is not it")
    rec.add_argument("--scored_only", action="store_true",
                     help="leave out the val points not scored yet (listed in the row as "
                          "points_unscored: the first time at the target may be among them)")
    samples = sub.add_parser("samples", help="a scored run's test samples with their prompts")
    samples.add_argument("run_dir")
    samples.add_argument("--step", type=checks.flag(checks.COUNT), required=True,
                         help="the scored evaluation's step")
    samples.add_argument("--name", required=True, help="the record's name: the files' prefix")
    samples.add_argument("--out", default=os.path.join(REPO, "docs", "samples"))
    samples.add_argument("--n", type=checks.flag(checks.POSITIVE_COUNT), default=4)
    args = p.parse_args(argv)
    try:
        if args.command == "text":
            print(benchmark.write_benchmark_text(args.ljspeech_text, args.out))
        elif args.command == "overrides":
            print(" ".join(protocol_argv()))
        elif args.command == "floor":
            floors(args.data_dir, args.out)
        elif args.command == "samples":
            publish_samples(args.run_dir, args.step, args.name, args.out, args.n)
        else:
            record = make_record(args.run_dir, args.floors, args.name, args.recipe,
                                 args.run_command, commit=args.commit,
                                 scored_only=args.scored_only)
            print(json.dumps({k: v for k, v in record.items() if k != "points"}))
            print(f"wrote {publish(record, args.run_dir, args.records)}")
    except (BenchmarkError, EvalError, OSError) as exc:  # EvalError: a kept mels.npz unread
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
