"""Checkpoints: one file holding model, optimizer, step, data position, config and RNG state.

Writes are atomic (temp file, fsync, rename), so a kill at any moment leaves either the old
or the new `latest.pt`, never half of one (the next save deletes the killed writer's temp
file). The previous `keep_checkpoints - 1` checkpoints stay beside it as `step_<N>.pt` (all of
them with keep_checkpoints 0, as the seed kept them).
Non-finite weights are never written. Reads use `torch.load(weights_only=True)`, which
refuses a pickle that would run code, and fall back to an older checkpoint when the newest
is damaged.
"""
from __future__ import annotations

import glob
import os
import re
import sys

import torch

import config as config_lib
from model import FlowTTS

LATEST = "latest.pt"
# Keys that change the shape of the model's weights: resuming with another value is refused.
SHAPE_KEYS = ("text_encoder", "text_encoder_name", "decoder_d_model", "decoder_n_layer",
              "decoder_n_head", "n_mels")


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that does not fit the config: names the path and keys."""


def trainable_state(model: FlowTTS) -> dict:
    """The model's weights without the frozen encoder (which is reloaded from its name)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("text_encoder.t5.")}


def _fsync_dir(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_run_dir(run_dir: str) -> None:
    """Create run_dir and check it takes files, before any work that would be lost."""
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise CheckpointError(f"run directory {run_dir} is not writable")


def first_line(exc: BaseException) -> str:
    """An exception as one short line: the strerror of the OSError behind it (torch turns a
    failed write into a RuntimeError about stream positions), else its message's first line."""
    cause = exc
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__context__
    if cause is not None and cause.strerror:
        return cause.strerror
    return (str(exc).splitlines() or [""])[0][:200]


def check_finite(state: dict) -> None:
    """Refuse to save NaN/inf weights: they would replace the last good checkpoint."""
    for part in ("model", "ema"):
        for key, value in (state.get(part) or {}).items():
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                raise CheckpointError(f"refusing to save step {state['step']}: {part} weight "
                                      f"{key} is not finite")


def save(run_dir: str, state: dict, keep: int) -> str:
    """Write `state` as run_dir/latest.pt atomically; keep the previous keep-1 (keep 0: all) as
    step_<N>.pt. A write that fails (a full disk, a quota) leaves no temp file and the old
    latest.pt whole, and is a CheckpointError naming the path."""
    check_finite(state)
    os.makedirs(run_dir, exist_ok=True)
    latest = os.path.join(run_dir, LATEST)
    tmp = os.path.join(run_dir, f".{LATEST}.tmp{os.getpid()}")
    try:
        _write_and_swap(state, tmp, latest)
    except BaseException as exc:  # Ctrl-C too: never leave the temp file behind
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, (OSError, RuntimeError)):  # torch reports a failed write as either
            raise CheckpointError(f"cannot write {latest} (step {state['step']}): "
                                  f"{first_line(exc)}; the previous one is unchanged") from None
        raise
    for stale in glob.glob(os.path.join(run_dir, f".{LATEST}.tmp*")):  # left by a killed writer
        os.unlink(stale)
    for stale in candidates(run_dir)[keep:] if keep else []:
        if os.path.basename(stale) != LATEST:
            os.unlink(stale)
    return latest


def _write_and_swap(state: dict, tmp: str, latest: str) -> None:
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())  # a full disk may say so only here
    # The old one keeps a second name before the new one takes over.
    try:
        old_step = torch.load(latest, map_location="cpu", weights_only=True, mmap=True)["step"]
    except Exception:  # none yet, or damaged: nothing worth keeping
        old_step = state["step"]
    older = os.path.join(os.path.dirname(latest), f"step_{old_step:08d}.pt")
    if old_step != state["step"] and not os.path.exists(older):
        os.link(latest, older)
    os.replace(tmp, latest)
    _fsync_dir(os.path.dirname(latest))


def candidates(run_dir: str) -> list[str]:
    """latest.pt first, then step_<N>.pt newest first."""
    steps = sorted(glob.glob(os.path.join(run_dir, "step_*.pt")),
                   key=lambda p: int(re.findall(r"\d+", os.path.basename(p))[0]), reverse=True)
    latest = os.path.join(run_dir, LATEST)
    return ([latest] if os.path.exists(latest) else []) + steps


def load(path: str) -> dict:
    """Load one checkpoint file; any failure becomes a CheckpointError naming the path."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, unreadable or empty file
        raise CheckpointError(f"{path}: not a loadable checkpoint "
                              f"({type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise CheckpointError(f"{path}: not a checkpoint of this project (no model/config)")
    return state


def load_latest(run_dir: str) -> dict | None:
    """Newest loadable checkpoint in run_dir (None if there is none); damaged ones are reported."""
    for path in candidates(run_dir):
        try:
            return load(path)
        except CheckpointError as exc:
            print(f"warning: {exc}; trying an older checkpoint", file=sys.stderr)
    if candidates(run_dir):
        raise CheckpointError(f"{run_dir}: no checkpoint there could be loaded")
    return None


def check_compatible(saved: dict, cfg) -> list[str]:
    """Refuse a config whose model shape differs; return the other keys that changed."""
    current = config_lib.as_dict(cfg)
    shape = [k for k in SHAPE_KEYS if saved.get(k) != current[k]]
    if shape:
        raise CheckpointError("checkpoint and config differ in model shape: " + ", ".join(
            f"{k} {saved.get(k)!r} -> {current[k]!r}" for k in shape))
    return [f"{k}: {saved.get(k)!r} -> {current[k]!r}" for k in current
            if k in saved and saved[k] != current[k]]


def model_from_checkpoint(path: str, device, use_ema: bool = True,
                          compile: bool = False) -> FlowTTS:
    """A model ready to sample: config and weights (EMA weights when the run kept them).
    compile (GPU only): the decoder compiled with CUDA graphs. That costs about a minute once
    and then makes each Euler step several times faster at small batches: worth it for
    hundreds of prompts, not for one. On a GPU with dtype bf16 the decoder's Linear weights are
    kept in bf16: the values autocast would compute on every call, computed once."""
    state = load(path)
    cfg = config_lib.from_dict(state["config"])
    model = FlowTTS(cfg)
    weights = state["ema"] if use_ema and state.get("ema") else state["model"]
    load_weights(model, weights, path)
    model = model.to(device).eval()
    if model.samples_in_bf16:
        model.bf16_decoder_weights()
    if compile and torch.device(device).type == "cuda":
        model.compile_decoder(sampling=True)
    return model


# Weights renamed since checkpoints were first written: old prefix -> new prefix.
RENAMED = {"duration.": "duration_predictor."}


def renamed(weights: dict) -> dict:
    """An older checkpoint's weights under the model's current names."""
    def current(key: str) -> str:
        for old, new in RENAMED.items():
            if key.startswith(old):
                return new + key[len(old):]
        return key
    return {current(key): value for key, value in weights.items()}


def load_weights(model: FlowTTS, weights: dict, what: str) -> None:
    """Load trainable weights (the frozen encoder comes from its name); refuse a mismatch."""
    missing, unexpected = model.load_state_dict(renamed(weights), strict=False)
    missing = [k for k in missing if not k.startswith("text_encoder.t5.")]
    if missing or unexpected:
        raise CheckpointError(f"{what}: weights do not fit the model "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
