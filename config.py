"""TrainConfig: the one list of settings, loaded from YAML with `--key value` overrides.

Key names follow the seed project (nanoAudioDiffusion) so its YAML files load unchanged.
Every value is type-checked; an unknown key or a bad value raises ConfigError naming it.
"""
from __future__ import annotations

import dataclasses
import sys
import typing
import unicodedata
from dataclasses import dataclass, fields

import yaml

import audio
from checks import (COUNT, CFG_SCALE, FRACTION, POSITIVE_COUNT, SEED, STEPS, SWAY, ConfigError,
                    Limit, check_number, shown)


@dataclass
class TrainConfig:
    # Data: a prepared dataset directory (scripts/prepare_ljspeech.py) and what to take from it.
    data_dir: str = "data/ljspeech"
    overfit_first_n_samples: int = 0  # >0: train on the first N training utterances only
    block_size: int = 1024  # max mel frames per utterance (longer ones are skipped), ~11.9 s
    max_text_length: int = 256  # max ByT5 byte tokens per utterance (longer ones are skipped)
    num_workers: int = 2
    prefetch_factor: int = 4
    bucket_batches: int = 64  # batches per length-sorted pool; 1 = plain shuffled batches

    # The mel is fixed by the BigVGAN 22 kHz 80-band fmax 8 kHz vocoder (audio.py); a config
    # may restate these but not change them (FIXED). The model reads n_mels and the length
    # checks sample_rate and hop_length; n_fft, win_length, mel_f_min and mel_f_max are the
    # seed's keys, kept so its configs load: nothing reads them.
    n_mels: int = audio.N_MELS
    sample_rate: int = audio.SAMPLE_RATE
    n_fft: int = audio.N_FFT
    hop_length: int = audio.HOP_LENGTH
    win_length: int = audio.WIN_LENGTH
    mel_f_min: float = audio.MEL_FMIN
    mel_f_max: float = audio.MEL_FMAX
    mel_mean: typing.Optional[float] = None  # None: take the prepared dataset's statistics
    mel_std: typing.Optional[float] = None

    # Tail-silence augmentation: teaches the model (and duration predictor) trailing pauses.
    silence_prob: float = 0.0
    max_silence_sec: float = 0.5

    # Text conditioning: a frozen ByT5 encoder, or a trained byte embedding (ablation).
    text_encoder: str = "byt5"  # byt5 | byte_embedding
    text_encoder_name: str = "google/byt5-small"  # hub name or local directory
    # The seed's keys, kept so its configs load; nothing reads them: only False is accepted
    # (the ByT5 encoder is frozen; the byte embedding always trains).
    text_encoder_trainable: bool = False
    text_embedding_trainable: bool = False
    cache_text_features: bool = True  # encode each utterance once, not every step
    text_condition_dropout: float = 0.1  # drop text for classifier-free guidance

    # Transformer mel flow decoder.
    decoder_d_model: int = 1024
    decoder_n_layer: int = 8
    decoder_n_head: int = 4
    decoder_dropout: float = 0.0
    rope_theta: float = 10000.0

    # Losses and flow-matching time sampling (t=0 noise, t=1 data; t ~ sigmoid(N(mean, std))).
    lambda_duration: float = 0.1
    timestep_logit_mean: float = -0.8
    timestep_logit_std: float = 0.8
    diffusion_train_steps: int = 0  # >1: quantize t to this many levels as the seed did

    # Optimizer and schedule.
    optimizer: str = "muon"  # muon (2-D weights) + adamw (rest) | adamw
    batch_size: int = 16  # per GPU, per micro-step
    effective_batch_size: int = 0  # >0: grad accumulation so batch_size*world*accum equals it
    grad_accum_steps: int = 1  # used when effective_batch_size is 0
    lr: float = 1e-3
    min_lr: float = 6e-5
    cosine_lr: bool = True
    weight_decay: float = 0.1
    warmup_steps: int = 500
    max_steps: int = 200000
    lr_schedule_steps: int = 0  # 0: schedule over max_steps
    lr_schedule_seconds: float = 0.0  # >0: the cosine runs over this much training time instead
    max_epochs: int = 0  # >0: stop after this many passes over the training set
    max_train_seconds: float = 0.0  # >0: stop (and save) after this much training time
    grad_clip: float = 1.0
    max_bad_steps: int = 10  # consecutive non-finite steps before the run stops
    ema_decay: float = 0.0  # >0: keep an EMA of the weights for sampling
    seed: int = 1234
    dtype: str = "bf16"  # bf16 autocast on CUDA; fp32 everywhere else
    compile: bool = False
    cuda_graphs: bool = False  # with compile, on a GPU: replay each block's forward and
    # backward as CUDA graphs (one per padded shape). One micro-batch per step: see trainer.py
    fp8_matmuls: bool = False  # the decoder blocks' Linear layers in float8 (torchao; a GPU
    # with float8 matmuls: H100, H200); 7% slower than bf16 at ljspeech.yaml's shape on an
    # H200 (docs/BENCHMARKS.md, run 9), so no committed config turns it on

    # Run directory, logging and checkpoints.
    out_dir: str = ".artifacts/local/run"
    run_name: str = ""  # the run's name in W&B and metrics.jsonl; empty: out_dir's folder name
    resume: str = ""  # continue from this checkpoint (any step_<N>.pt); empty: out_dir's latest
    init_from: str = ""  # start from another run's weights (fresh optimizer and step)
    log_interval: int = 10
    val_interval: int = 1000  # held-out flow loss
    save_interval: int = 1000
    keep_checkpoints: int = 3  # latest.pt + the newest step_<N>.pt up to this many; 0: keep all
    wandb_project: str = ""  # empty (or --no_wandb): no W&B; offline unless WANDB_MODE says so

    # In-loop evaluation: sample, vocode, transcribe, WER (rank 0).
    eval_interval: int = 0  # steps
    eval_interval_seconds: float = 0.0  # also every this much training time (the clock stops
    # while it evaluates): the speedrun's clock, which does not depend on the step time
    eval_prompts: str = "eval/libritts_samples.txt"  # or overfit / val: the dataset's texts
    eval_oracle_duration: bool = False  # also sample at the true lengths (overfit / val only)
    eval_num_samples: int = 4  # 0: all prompts
    eval_steps: int = 32
    eval_cfg_scale: float = 2.0
    eval_sway: float = -1.0  # Euler time grid; < 0 puts more steps near the noise end
    eval_whisper_model: str = "base.en"  # "": no recognizer (the seed's way); offline, base.en runs base
    eval_whisper_device: str = ""
    eval_asr: str = "auto"  # auto | openai-whisper | faster-whisper | none
    eval_vocoder: str = "auto"  # auto | bigvgan | hifigan | griffinlim | none (mels only)
    eval_vocoder_model: str = "nvidia/bigvgan_v2_22khz_80band_fmax8k_256x"
    eval_keep_test: bool = False  # also sample the dataset's test split, mels only: a record
    # scores test once, at the evaluation val chose (benchmark.py)


CHOICES = {
    "text_encoder": ("byt5", "byte_embedding"),
    "optimizer": ("muon", "adamw"),
    "dtype": ("bf16", "fp32"),
    "eval_asr": ("auto", "openai-whisper", "faster-whisper", "none"),
    "eval_vocoder": ("auto", "bigvgan", "hifigan", "griffinlim", "none"),
}
# Keys a config may restate but not change: the audio front end (audio.py) and the seed's
# trainable switches.
FIXED = {"n_mels": audio.N_MELS, "sample_rate": audio.SAMPLE_RATE, "n_fft": audio.N_FFT,
         "hop_length": audio.HOP_LENGTH, "win_length": audio.WIN_LENGTH,
         "mel_f_min": audio.MEL_FMIN, "mel_f_max": audio.MEL_FMAX,
         "text_encoder_trainable": False, "text_embedding_trainable": False}
NULLS = ("none", "null", "")  # what a command line or YAML string says for an Optional's None
# Every number in TrainConfig, checked by checks.check_number. A log-mel lies in about
# [-11.5, 3] (log 1e-5 to full scale), so its statistics are bounded too: a mel_std of 1e30
# would make every generated mel infinite.
LIMITS = {
    "overfit_first_n_samples": COUNT, "block_size": POSITIVE_COUNT,
    "max_text_length": POSITIVE_COUNT, "num_workers": COUNT, "prefetch_factor": POSITIVE_COUNT,
    "bucket_batches": POSITIVE_COUNT, "mel_mean": Limit(float, -20, 20),
    "mel_std": Limit(float, 0, 20, low_open=True), "silence_prob": FRACTION,
    "max_silence_sec": Limit(float, 0, 60), "text_condition_dropout": FRACTION,
    "decoder_d_model": POSITIVE_COUNT, "decoder_n_layer": POSITIVE_COUNT,
    "decoder_n_head": POSITIVE_COUNT, "decoder_dropout": FRACTION,
    "rope_theta": Limit(float, 0, low_open=True), "lambda_duration": Limit(float, 0),
    "timestep_logit_mean": Limit(float), "timestep_logit_std": Limit(float, 0),
    "diffusion_train_steps": COUNT, "batch_size": POSITIVE_COUNT,
    "effective_batch_size": COUNT, "grad_accum_steps": POSITIVE_COUNT, "lr": Limit(float, 0),
    "min_lr": Limit(float, 0), "weight_decay": Limit(float, 0), "warmup_steps": COUNT,
    "max_steps": POSITIVE_COUNT, "lr_schedule_steps": COUNT, "max_epochs": COUNT,
    "lr_schedule_seconds": Limit(float, 0), "max_train_seconds": Limit(float, 0),
    "grad_clip": Limit(float, 0, low_open=True),
    "max_bad_steps": POSITIVE_COUNT, "ema_decay": Limit(float, 0, 1, high_open=True),
    "seed": SEED, "log_interval": POSITIVE_COUNT, "val_interval": POSITIVE_COUNT,
    "save_interval": POSITIVE_COUNT, "keep_checkpoints": COUNT, "eval_interval": COUNT,
    "eval_interval_seconds": Limit(float, 0), "eval_num_samples": COUNT, "eval_steps": STEPS,
    "eval_cfg_scale": CFG_SCALE,
    "eval_sway": SWAY,
}


def _field_types() -> dict[str, type]:
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig)}


def coerce(key: str, value, kind) -> object:
    """Convert a YAML or command-line value to the field's type, or raise ConfigError."""
    optional = typing.get_origin(kind) is typing.Union
    base = typing.get_args(kind)[0] if optional else kind
    where = f"config key {key!r}"
    # str() is avoided on values that are not strings: it refuses ints of 4,300+ digits
    if optional and (value is None or isinstance(value, str) and value.lower() in NULLS):
        return None
    if base in (int, float):
        return check_number(where, value, LIMITS.get(key, Limit(base)))
    if base is bool:
        if isinstance(value, bool):
            return value
        if type(value) is int and value in (0, 1):  # YAML's 0 / 1
            return bool(value)
        text = value.lower() if isinstance(value, str) else None
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: cannot read {shown(value)} as bool")
    if not isinstance(value, str) and not (type(value) in (int, float) and abs(value) < 1e18):
        # a YAML list, map, null or bool; YAML's 123 for a name is fine
        raise ConfigError(f"{where}: expected a string, got {shown(value)}")
    text = str(value)
    control = sorted({repr(c) for c in text if unicodedata.category(c) == "Cc"})
    if control:  # a NUL byte in a path is an error deep inside os, far from the key
        raise ConfigError(f"{where}: contains control character(s) {', '.join(control)}")
    return text


def check_sway(sway: float, where: str) -> None:
    """The model checks its own sway argument here (the config and the CLIs via LIMITS)."""
    check_number(where, sway, SWAY)


def validate(cfg: TrainConfig) -> None:
    for key, allowed in CHOICES.items():
        if getattr(cfg, key) not in allowed:
            raise ConfigError(f"config key {key!r}: {getattr(cfg, key)!r} is not one of {allowed}")
    for key, fixed in FIXED.items():
        if getattr(cfg, key) != fixed:
            raise ConfigError(f"config key {key!r}: must be {fixed!r} (fixed by the BigVGAN mel "
                              f"and the frozen encoder), got {getattr(cfg, key)!r}")
    for key, limit in LIMITS.items():  # values set in code (dataclasses.replace) come here too
        if getattr(cfg, key) is not None:
            check_number(f"config key {key!r}", getattr(cfg, key), limit)
    if cfg.eval_oracle_duration and cfg.eval_prompts not in ("overfit", "val"):
        raise ConfigError("config key 'eval_oracle_duration': needs eval_prompts overfit or val "
                          f"(true lengths are known only for the dataset's texts), got "
                          f"{cfg.eval_prompts!r}")
    if cfg.lr_schedule_seconds and cfg.lr_schedule_steps:
        raise ConfigError("config keys 'lr_schedule_steps'/'lr_schedule_seconds': set one (the "
                          f"cosine runs over steps or over training time), got "
                          f"{cfg.lr_schedule_steps}/{cfg.lr_schedule_seconds}")
    if cfg.cuda_graphs and not cfg.compile:
        raise ConfigError("config key 'cuda_graphs': replays the compiled blocks, so it needs "
                          "compile: true")
    head_dim, rest = divmod(cfg.decoder_d_model, cfg.decoder_n_head)
    if rest or head_dim % 2:
        raise ConfigError(f"config keys 'decoder_d_model'/'decoder_n_head': {cfg.decoder_d_model}/"
                          f"{cfg.decoder_n_head} must give an even integer head size (RoPE)")


def apply(cfg: TrainConfig, values: dict, source: str) -> TrainConfig:
    """Return cfg with `values` applied; unknown keys raise ConfigError listing valid ones."""
    types = _field_types()
    unknown = sorted(set(values) - set(types), key=str)  # YAML keys may be numbers too
    if unknown:
        raise ConfigError(f"{source}: unknown config key(s) {', '.join(map(repr, unknown))}; "
                          f"valid keys: {', '.join(types)}")
    updates = {key: coerce(key, value, types[key]) for key, value in values.items()}
    return dataclasses.replace(cfg, **updates)


# The seed's switches (flags without a value) and the setting each one stands for.
SWITCHES = {"no_wandb": ("wandb_project", "")}


def parse_overrides(argv: list[str]) -> dict[str, str]:
    """`--key value` / `--key=value` pairs, and SWITCHES; dashes in keys may be written as in
    the field."""
    values, i = {}, 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("--"):
            raise ConfigError(f"expected --key value, got {arg!r}")
        key = arg[2:]
        if key.replace("-", "_") in SWITCHES:
            key, value = SWITCHES[key.replace("-", "_")]
            i += 1
        elif "=" in key:
            key, value = key.split("=", 1)
            i += 1
        elif i + 1 < len(argv):
            value, i = argv[i + 1], i + 2
        else:
            raise ConfigError(f"override {arg!r} has no value")
        values[key.replace("-", "_")] = value
    return values


def load_config(path: str | None = None, overrides: dict | None = None) -> TrainConfig:
    cfg = TrainConfig()
    if path:
        try:
            with open(path) as f:
                values = yaml.safe_load(f) or {}
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except ValueError as exc:  # a NUL byte in the path
            raise ConfigError(f"cannot read config file {path!r}: {exc}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: "
                              f"{' '.join(str(exc).split())}") from None  # one line
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path}: expected a mapping of key: value")
        cfg = apply(cfg, values, path)
    if overrides:
        cfg = apply(cfg, overrides, "command line")
    validate(cfg)
    return cfg


def config_from_argv(argv: list[str]) -> TrainConfig:
    """`--config FILE` plus `--key value` overrides, as train.py takes them."""
    argv = list(argv)
    path = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file")
        path = argv[i + 1]
        del argv[i:i + 2]
    return load_config(path, parse_overrides(argv))


def as_dict(cfg: TrainConfig) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(values: dict) -> TrainConfig:
    """Rebuild a config stored in a checkpoint (validated like any other)."""
    cfg = apply(TrainConfig(), values, "checkpoint config")
    validate(cfg)
    return cfg


if __name__ == "__main__":  # print the resolved config: python config.py --config X --k v
    try:
        print(yaml.safe_dump(as_dict(config_from_argv(sys.argv[1:])), sort_keys=False))
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
