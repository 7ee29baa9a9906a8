"""Speed of the real training step and of sampling, as JSONL records.

    python scripts/bench.py --config configs/ljspeech.yaml --out docs/bench/DATE_DEVICE.jsonl
    python scripts/bench.py --mode train --variants eager,compile --steps 30
    python scripts/bench.py --mode attention --out X.jsonl   # the attention kernels alone (GPU)

Training goes through trainer.Trainer.step (collation from a memmap, the feature cache,
forward/backward, clipping, the optimizer) on a synthetic prepared dataset whose lengths
follow LJSpeech (from its real texts at ~15.2 characters per second: 1-10 s, mean ~6.6 s),
with random weights and random mels. Records: useful (non-pad) frames/s, padding, step ms,
model TFLOP/s and MFU (FLOPs from model.decoder_flops_per_frame), peak memory. Sampling:
real-time factor (generation seconds / audio seconds) for Euler + CFG at batch 1 and 32,
mel only and mel + vocoder. `--profile N` adds where the GPU time goes, by kind of kernel.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable

import numpy as np
import torch
from tqdm import tqdm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
import audio  # noqa: E402
import checks  # noqa: E402
import config as config_lib  # noqa: E402
from data import BatchStream, PreparedDataset  # noqa: E402
from model import FlowTTS, decoder_flops_per_frame  # noqa: E402
from optim import lr_at  # noqa: E402
from scripts.bench_attention import bench_attention  # noqa: E402
from scripts.bench_profile import profile, synchronize  # noqa: E402
from trainer import Trainer  # noqa: E402

# Training variants: name -> config overrides. "eager" is the baseline.
VARIANTS = {
    "eager": {"compile": False},
    "compile": {"compile": True},
    "compile_nocache": {"compile": True, "cache_text_features": False},
    "compile_nobucket": {"compile": True, "bucket_batches": 1},
    "compile_adamw": {"compile": True, "optimizer": "adamw"},
    # Utterances per micro-batch; the optimizer step keeps the config's effective batch.
    "compile_b16": {"compile": True, "batch_size": 16},
    "compile_b32": {"compile": True, "batch_size": 32},
    "compile_b64": {"compile": True, "batch_size": 64},
    # The decoder's head shape: 8 heads of 128 instead of the config's (4 of 256 by default).
    "compile_h8": {"compile": True, "decoder_n_head": 8},
    # Each compiled block's forward and backward replayed as CUDA graphs.
    "graphs": {"compile": True, "cuda_graphs": True},
    "graphs_h8": {"compile": True, "cuda_graphs": True, "decoder_n_head": 8},
    # The blocks' matmuls in float8 (torchao), but the self-attention's fused q/k/v.
    "fp8": {"compile": True, "fp8_matmuls": True},
    "fp8_h8": {"compile": True, "fp8_matmuls": True, "decoder_n_head": 8},
    "eager_fp32": {"compile": False, "dtype": "fp32"},
}


def ljspeech_texts(path: str | None, n: int, seed: int) -> list[str]:
    """n texts: LJSpeech's own (metadata.csv, normalized column) when given, else made up."""
    rng = np.random.default_rng(seed)
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            texts = [line.rstrip("\n").split("|")[2] for line in f]
        return [texts[i] for i in rng.choice(len(texts), n, replace=len(texts) < n)]
    words = "the of and a to in was he that it his for as with on by at which from".split()
    return [" ".join(rng.choice(words, rng.integers(4, 30))) + "." for _ in range(n)]


def synthetic_dataset(root: str, texts: list[str], seed: int) -> str:
    """A prepared dataset (the real on-disk format) of random mels with LJSpeech lengths."""
    prepare = importlib.import_module("scripts.prepare_ljspeech")
    rng = np.random.default_rng(seed)
    seconds = np.clip(np.array([len(t) for t in texts]) / 15.2 * rng.normal(1, 0.08, len(texts)),
                      1.1, 10.1)
    n_frames = (seconds * audio.FRAMES_PER_SECOND).astype(np.int64)
    out = os.path.join(root, "synthetic")
    os.makedirs(os.path.join(out, "metadata"))
    mels = np.memmap(os.path.join(out, "mels.f16"), np.float16, "w+", shape=(n_frames.sum(), 80))
    mels[:] = rng.normal(-5.5, 2.0, mels.shape).astype(np.float16)
    mels.flush()
    offsets = np.concatenate([[0], np.cumsum(n_frames)[:-1]])
    columns = {"id": [f"S{i:05d}" for i in range(len(texts))], "text": texts, "raw_text": texts,
               "frame_offset": offsets.tolist(), "n_frames": n_frames.tolist(),
               "n_text_bytes": [len(t.encode()) for t in texts], "duration_sec": seconds.tolist(),
               "split": ["train"] * len(texts)}
    prepare.write_index(os.path.join(out, "index.parquet"), columns)
    prepare.write_stats(out, {"mel_mean": -5.5, "mel_std": 2.0, "n_utterances": len(texts)})
    return out


def device_record(device: torch.device, cfg_path: str) -> dict:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": name, "gpus": max(1, int(os.environ.get("WORLD_SIZE", 1))),
            "config": cfg_path, "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d", time.gmtime())}


def default_warmup(cfg, utterances: int, accum: int) -> int:
    """Optimizer steps of warm-up: one epoch, or four with cuda_graphs. An epoch meets most
    (frames, text length) shapes, each of which costs its first time an attention kernel
    plan; a CUDA graph is recorded at a shape's second step and replayed from its third, and
    the batches of a new epoch's shuffle have shapes the last one did not."""
    epochs = 4 if cfg.cuda_graphs else 1
    return epochs * -(-utterances // (cfg.batch_size * accum))


def counting_shapes(batches, shapes: list):
    """Yield from `batches`, appending each micro-batch's (utterances, frames, text tokens)."""
    for epoch, position, batch in batches:
        shapes.append((batch.mel.shape[0], batch.mel.shape[1], batch.text_ids.shape[1]))
        yield epoch, position, batch


def shape_record(warmup_shapes: list, timed_shapes: list, settled_after: int) -> dict:
    """Distinct shapes the warm-up met, and the timed micro-batches whose shape had been met
    fewer than `settled_after` times before (1: its first step plans its kernels; 2 with CUDA
    graphs: the second records the graph): 0 says the timed steps are the steady state."""
    seen = Counter(warmup_shapes)
    unsettled = 0
    for shape in timed_shapes:
        unsettled += seen[shape] < settled_after
        seen[shape] += 1
    return {"warmup_shapes": len(set(warmup_shapes)), "timed_unsettled_shapes": unsettled}


def bench_train(cfg, dataset: PreparedDataset, device, warmup: int | None, steps: int,
                peak_tflops: float, profile_steps: int = 0) -> dict:
    """Time `steps` optimizer steps after `warmup` (default: default_warmup). The warm-up
    compiles and meets the shapes; a long run pays that once, so timing it would not be the
    steady state."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    trainer = Trainer(cfg, dataset, 1, device)
    trainer.wrap()
    rows = list(range(len(dataset)))
    shapes = []
    batches = counting_shapes(BatchStream(dataset, rows, cfg).iterate(0, 0), shapes)
    if warmup is None:
        warmup = default_warmup(cfg, len(rows), trainer.accum)
    t_compile = time.time()
    for step in tqdm(range(warmup), desc=f"warm-up (compile={cfg.compile})", mininterval=5):
        trainer.step(batches, lr_at(step, cfg))
        synchronize(device)  # so the bar shows each step's time, compilation included
    warmup_s, useful, padded = time.time() - t_compile, 0, 0
    marks = StepMarks(device, steps)
    start = time.time()
    for step in range(warmup, warmup + steps):
        marks.record()
        out = trainer.step(batches, lr_at(step, cfg))
        useful, padded = useful + out.useful_frames, padded + out.padded_frames
    marks.record()
    synchronize(device)
    seconds = time.time() - start
    split = warmup * trainer.accum
    shapes_seen = shape_record(shapes[:split], shapes[split:split + steps * trainer.accum],
                               2 if cfg.cuda_graphs else 1)
    profiled = {}
    if profile_steps:
        count = iter(range(warmup + steps, warmup + steps + profile_steps))
        profiled = profile(lambda: trainer.step(batches, lr_at(next(count), cfg)), profile_steps,
                           device, f"train {cfg.optimizer} compile={cfg.compile} "
                                   f"batch={cfg.batch_size} heads={cfg.decoder_n_head}")
    useful = float(useful)
    lengths = dataset.n_frames[rows]
    text_tokens = float(np.mean([len(t.encode()) + 1 for t in dataset.texts]))
    flops = decoder_flops_per_frame(cfg, float(lengths.mean()), text_tokens)["train"]
    tflops = useful / seconds * flops / 1e12
    return {"mode": "train", "useful_frames_per_s": round(useful / seconds),
            "padding_fraction": round(1 - useful / padded, 4),
            "step_ms": round(1000 * seconds / steps, 2), "tflops": round(tflops, 1),
            "mfu": round(tflops / peak_tflops, 4), "warmup_s": round(warmup_s, 1),
            "utterances_per_step": cfg.batch_size * trainer.accum,
            "peak_mem_gb": round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
            if device.type == "cuda" else None, **marks.spread(), **shapes_seen, **profiled}


class StepMarks:
    """A CUDA event on the stream at each timed step's start: the intervals between them are
    each step's span on the GPU's timeline, idle gaps included, without a sync in the loop. A
    median well under the mean says a few steps stall (a new shape's first kernel plan)."""

    def __init__(self, device, steps: int):
        cuda = device.type == "cuda"
        event = lambda: torch.cuda.Event(enable_timing=True)
        self.events = [event() for _ in range(steps + 1)] if cuda else []
        self.next = 0

    def record(self) -> None:
        if self.events:
            self.events[self.next].record()
            self.next += 1

    def spread(self) -> dict:
        """After a sync: median, 90th percentile and max step ms (none on a CPU)."""
        if not self.events:
            return {}
        ms = [a.elapsed_time(b) for a, b in zip(self.events, self.events[1:])]
        return {"step_ms_median": round(float(np.median(ms)), 2),
                "step_ms_p90": round(float(np.percentile(ms, 90)), 2),
                "step_ms_max": round(max(ms), 2)}


def loss_curve(cfg, dataset: PreparedDataset, device, steps: int) -> dict:
    """The flow loss of the first `steps` optimizer steps of a fresh run (cfg.seed: the same
    weights and batches for every code version), read once at the end: two versions of the
    code that compute the same function give curves within bf16 noise of each other."""
    trainer = Trainer(cfg, dataset, 1, device)
    trainer.wrap()
    batches = BatchStream(dataset, list(range(len(dataset))), cfg).iterate(0, 0)
    losses = [trainer.step(batches, lr_at(step, cfg)).flow_loss for step in range(steps)]
    return {"mode": "losses", "steps": steps, "flow_loss": torch.stack(losses).tolist()}


VOCODER_DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def bench_sample(model: FlowTTS, vocoder, batch: int, steps: int, cfg_scale: float,
                 seconds: float, repeats: int, device, profile_calls: int = 0,
                 vocoder_dtype: str = "fp32") -> dict:
    """RTF of sampling `batch` prompts of `seconds` each (oracle length: no duration noise).
    vocoder_dtype fp16/bf16: the vocoder runs under that autocast (its weights stay fp32)."""
    texts = ["Printing, in the only sense with which we are at present concerned."] * batch
    frames = [int(seconds * audio.FRAMES_PER_SECOND)] * batch

    def run():
        mel, _ = model.sample(texts, steps=steps, cfg_scale=cfg_scale, n_frames=frames)
        return vocode(vocoder, mel, vocoder_dtype, device) if vocoder is not None else mel

    for _ in range(2):  # warm-up: compilation, cuDNN autotuning
        run()
    synchronize(device)
    start = time.time()
    for _ in range(repeats):
        run()
    synchronize(device)
    rtf = (time.time() - start) / repeats / (batch * seconds)
    if profile_calls:
        profile(run, profile_calls, device, f"sample batch={batch} steps={steps}")
    return {"mode": "sample", "batch": batch, "steps": steps, "cfg_scale": cfg_scale,
            "vocoder": vocoder.name if vocoder is not None else "none",
            "vocoder_dtype": vocoder_dtype if vocoder is not None else None,
            "rtf": round(rtf, 5), "x_real_time": round(1 / rtf, 1)}


def vocode(vocoder, mel: torch.Tensor, dtype: str, device) -> torch.Tensor:
    """mel (b, n, m) -> audio (b, s) on the CPU, the vocoder under autocast to `dtype`."""
    with torch.autocast(device.type, dtype=VOCODER_DTYPES[dtype] or torch.float32,
                        enabled=VOCODER_DTYPES[dtype] is not None):
        return vocoder(mel.transpose(1, 2))


def vocoder_error(model: FlowTTS, vocoder, dtype: str, device) -> dict:
    """How far the vocoder's audio under autocast `dtype` is from its fp32 audio, on one
    sampled mel: relative L2 error of the waveform (what faster vocoding costs in fidelity)."""
    mel, _ = model.sample(["Printing, in the only sense with which we are at present "
                           "concerned."], steps=8, n_frames=[int(6.57 * audio.FRAMES_PER_SECOND)])
    reference, fast = vocode(vocoder, mel, "fp32", device), vocode(vocoder, mel, dtype, device)
    return {"mode": "vocoder_error", "vocoder": vocoder.name, "vocoder_dtype": dtype,
            "wav_rel_l2": float(f"{((fast - reference).norm() / reference.norm()).item():.2e}")}


def comma_list(what: str, choices) -> Callable[[str], list[str]]:
    """An argparse type: a comma list of names from `choices` (`what` names them in errors)."""
    def parse(text: str) -> list[str]:
        unknown = [name for name in text.split(",") if name not in choices]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown {what} {', '.join(map(repr, unknown))}; "
                                             f"choose from {', '.join(choices)}")
        return text.split(",")
    return parse


def parse_args():
    """(the bench's own arguments, the config with the rest applied as --key value overrides)."""
    parser = checks.ArgumentParser(description=__doc__.split("\n\n")[0])
    count, positive = checks.flag(checks.COUNT), checks.flag(checks.POSITIVE_COUNT)
    parser.add_argument("--config", default="configs/ljspeech.yaml")
    parser.add_argument("--out", required=True, help="JSONL file to append records to")
    parser.add_argument("--mode", choices=("train", "sample", "all", "attention"), default="all",
                        help="all: train and sample; attention: its kernels alone (GPU)")
    parser.add_argument("--variants", type=comma_list("variant(s)", VARIANTS), default="eager,compile")
    parser.add_argument("--steps", type=positive, default=20)
    parser.add_argument("--warmup", type=count, default=None,
                        help="training steps before timing (default: one epoch, four with "
                             "cuda_graphs)")
    parser.add_argument("--utterances", type=positive, default=2048)
    parser.add_argument("--texts", default=os.path.join(REPO, "..", "shared", "data",
                                                         "ljspeech_text", "metadata.csv"))
    parser.add_argument("--loss_steps", type=count, default=0,
                        help="also record each variant's flow loss over this many steps of a "
                             "fresh run (same seed), to overlay two versions of the code")
    parser.add_argument("--profile", type=count, default=0,
                        help="profile this many training steps of each variant, and this many "
                             "samplings (with the vocoder) of each batch and NFE")
    parser.add_argument("--sample_steps", type=checks.flag(checks.STEPS, many=True),
                        default="16,32,50")
    parser.add_argument("--sample_batches", type=checks.flag(checks.POSITIVE_COUNT, many=True),
                        default="1,32")
    parser.add_argument("--vocoder", default="hifigan")
    parser.add_argument("--vocoder_dtypes", type=comma_list("vocoder dtype(s)", VOCODER_DTYPES),
                        default="fp32",
                        help="a comma list of fp32, fp16, bf16: the vocoder under that autocast")
    parser.add_argument("--sample_weights", default="bf16", choices=("bf16", "fp32", "fp32,bf16"),
                        help="decoder Linear weights when sampling on a GPU (bf16: as sample.py)")
    parser.add_argument("--peak_tflops", type=checks.flag(checks.Limit(float, 0, low_open=True)),
                        default=790.0,
                        help="bf16 dense matmul rate measured on an H100 SXM")
    args, overrides = parser.parse_known_args()
    if args.mode == "attention" and not torch.cuda.is_available():
        parser.error("--mode attention times CUDA kernels: it needs a GPU")
    try:
        return args, config_lib.load_config(args.config, config_lib.parse_overrides(overrides))
    except config_lib.ConfigError as exc:
        parser.error(str(exc))


def train_records(args, base, device, root: str):
    """One record per training variant, on a synthetic dataset in root."""
    texts = ljspeech_texts(args.texts, args.utterances, base.seed)
    dataset = PreparedDataset(synthetic_dataset(root, texts, base.seed))
    for name in args.variants:
        cfg = config_lib.apply(base, {**VARIANTS[name], "mel_mean": -5.5, "mel_std": 2.0,
                                      "out_dir": root}, f"variant {name}")
        about = {"variant": name, "compile": cfg.compile, "dtype": cfg.dtype,
                 "cuda_graphs": cfg.cuda_graphs, "fp8_matmuls": cfg.fp8_matmuls,
                 "optimizer": cfg.optimizer, "decoder_n_head": cfg.decoder_n_head,
                 "cache_text_features": cfg.cache_text_features,
                 "bucket_batches": cfg.bucket_batches}
        yield {**about, **bench_train(cfg, dataset, device, args.warmup, args.steps,
                                      args.peak_tflops, args.profile)}
        if args.loss_steps:
            yield {**about, **loss_curve(cfg, dataset, device, args.loss_steps)}
        if device.type == "cuda":
            torch.cuda.empty_cache()


def sample_records(args, base, device):
    """The sampling records: for each decoder weights, the vocoder's error under each autocast
    dtype, then for each batch and NFE the RTF mel only and with the vocoder in each dtype."""
    cfg = config_lib.apply(base, {"mel_mean": -5.5, "mel_std": 2.0}, "sampling")
    vocoder = audio.load_vocoder(args.vocoder, str(device))
    for weights in args.sample_weights.split(","):
        model = FlowTTS(cfg).to(device).eval()
        cast = weights == "bf16" and model.samples_in_bf16
        if cast:
            model.bf16_decoder_weights()  # as checkpoint.model_from_checkpoint does
        if cfg.compile:
            model.compile_decoder(sampling=True)
        about = {"compile": cfg.compile, "decoder_weights": "bf16" if cast else "fp32"}
        for dtype in args.vocoder_dtypes:
            if dtype != "fp32" and vocoder.name != "griffinlim":
                yield {**about, **vocoder_error(model, vocoder, dtype, device)}
        for batch in args.sample_batches:
            for steps in args.sample_steps:
                runs = [(None, "fp32")] + [(vocoder, dtype) for dtype in args.vocoder_dtypes]
                for voc, dtype in runs:
                    profile_calls = args.profile if voc is not None else 0
                    yield {**about, **bench_sample(model, voc, batch, steps, 2.0, 6.57, 3, device,
                                                   profile_calls, dtype)}


def main() -> None:
    args, base = parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    common = device_record(device, args.config)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)

    def emit(record: dict) -> None:
        record = {**common, **record}
        print(json.dumps(record), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")

    if args.mode == "attention":
        for record in bench_attention(base, device, 32, 576, 128, base.seed):
            emit(record)
    with tempfile.TemporaryDirectory() as root:
        if args.mode in ("train", "all"):
            for record in train_records(args, base, device, root):
                emit(record)
        if args.mode in ("sample", "all"):
            for record in sample_records(args, base, device):
                emit(record)


if __name__ == "__main__":
    main()
