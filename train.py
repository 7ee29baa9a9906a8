"""Train the flow-matching TTS model, alone or under torchrun (DDP).

    python train.py --config configs/ljspeech_overfit64.yaml [--key value ...]
    torchrun --standalone --nproc_per_node 2 train.py --config configs/ljspeech.yaml

The run directory (`out_dir`) holds latest.pt, metrics.jsonl, config.yaml, run.json and
eval/step_<N>/. A run with a latest.pt resumes from it (`--resume PATH`: from that checkpoint
instead); `touch <out_dir>/STOP`, SIGTERM or SIGINT make it finish the step, save and exit 0.
"""
from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel

import checkpoint
import config as config_lib
from data import BatchStream, Collate, DatasetError, PreparedDataset, TextFeatureCache
from metric import MetricLogger
from model import FlowTTS, LossResult, decoder_flops_per_frame
from optim import build_optimizers, lr_at

# ----------------------------------------------------------------------------- helpers


def setup_distributed() -> tuple[int, int, torch.device]:
    """(rank, world_size, device). NCCL on GPUs, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    rank = int(os.environ.get("RANK", 0))
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world_size, device


def grad_accum_steps(cfg, world_size: int) -> int:
    if not cfg.effective_batch_size:
        return cfg.grad_accum_steps
    steps, rest = divmod(cfg.effective_batch_size, cfg.batch_size * world_size)
    if rest or not steps:
        raise config_lib.ConfigError(
            f"effective_batch_size {cfg.effective_batch_size} is not a multiple of batch_size "
            f"{cfg.batch_size} x {world_size} GPU(s)")
    return steps


def resolve_run_length(cfg, batches_per_epoch: int, accum: int):
    """cfg with max_steps the run's real length, min(max_steps, max_epochs x optimizer steps per
    epoch), and lr_schedule_steps that length unless set (runs bounded by time set it: their
    length is not known ahead). Every epoch has as many batches (data.global_batches)."""
    steps = cfg.max_steps
    if cfg.max_epochs:
        steps = min(steps, math.ceil(cfg.max_epochs * batches_per_epoch / accum))
    return config_lib.apply(cfg, {"max_steps": steps,
                                  "lr_schedule_steps": cfg.lr_schedule_steps or steps}, "run length")


def describe_run(cfg, device, world_size: int, model: FlowTTS) -> dict:
    """What a run needs to explain itself later: code version, libraries, hardware, sizes."""
    try:
        revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True, cwd=os.path.dirname(os.path.abspath(__file__)),
                                  timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        revision = ""
    import transformers
    return {"git_revision": revision or "unknown", "torch": torch.__version__,
            "transformers": transformers.__version__, "python": sys.version.split()[0],
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "world_size": world_size, "parameters": model.parameter_counts()}


def any_rank(local: bool, world_size: int, device) -> bool:
    """True on every rank if it is true on any: all ranks stop, or evaluate by the clock, at
    the same step (else DDP would hang)."""
    if world_size == 1:
        return bool(local)
    flag = torch.tensor(float(bool(local)), device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


class StopFlag:
    """A stop signal or a STOP file in the run dir; checked once per step."""
    signals: list[int] = []  # all the handler does is append here: it may run at any bytecode

    def __init__(self, run_dir: str):
        self.stop_file = os.path.join(run_dir, "STOP")

    @classmethod
    def catch_signals(cls) -> None:
        """From now on SIGTERM/SIGINT (scheduler, torchrun, Ctrl-C) only set the flag. Called
        first thing in __main__, so a signal during setup is caught too."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, frame: cls.signals.append(signum))
            signal.siginterrupt(sig, False)  # restart interrupted system calls, don't fail them

    def __call__(self) -> str:
        """Why to stop ("" to go on)."""
        if self.signals:
            return f"stopped by {signal.Signals(self.signals[0]).name}"
        return "stopped by a STOP file" if os.path.exists(self.stop_file) else ""


@dataclass
class StepOutput:
    result: LossResult  # of the last micro-batch
    flow_loss: torch.Tensor  # mean over the micro-batches
    grad_norm: torch.Tensor
    useful_frames: torch.Tensor  # this rank's non-padding frames
    padded_frames: int  # this rank's frames including padding
    finite: torch.Tensor  # bool; False: the loss or gradient norm was not finite, gradient dropped
    epoch: int  # data position after the step
    position: int


class Trainer:
    """What one optimizer step needs, built once: model, DDP wrapper, optimizers, EMA, the text
    feature cache and autocast. `step` is the whole step; train.py and scripts/bench.py use it."""

    def __init__(self, cfg, dataset: PreparedDataset, world_size: int, device: torch.device):
        self.cfg, self.world_size, self.device = cfg, world_size, device
        torch.manual_seed(cfg.seed)
        self.model = FlowTTS(cfg).to(device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if cfg.ema_decay > 0 else None
        self.optimizers = build_optimizers(self.model, cfg)
        self.trained = [p for p in self.model.parameters() if p.requires_grad]
        self.ema_trained = [p for p, q in zip(self.ema.parameters(), self.model.parameters())
                            if q.requires_grad] if self.ema else []
        self.cache = (TextFeatureCache(self.model, dataset.texts)
                      if cfg.cache_text_features and self.model.text_encoder.frozen else None)
        self.accum = grad_accum_steps(cfg, world_size)
        use_bf16 = cfg.dtype == "bf16" and device.type == "cuda"
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16
                         else contextlib.nullcontext())
        self.train_model = self.model

    def wrap(self) -> None:
        """Compile and wrap for DDP; after weights are loaded, before the first step."""
        if self.cfg.compile:
            self.model.compile_decoder()
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)

    def to_device(self, batch):
        batch = batch.to(self.device)
        if self.cache is not None:
            batch.text_hidden = self.cache.gather(batch.rows, batch.text_ids.shape[1])
        return batch

    def step(self, batches, lr: float) -> StepOutput:
        """Forward/backward over `accum` micro-batches (DDP syncs gradients on the last one),
        clip, and update unless the loss or gradient norm is not finite."""
        for opt in self.optimizers:
            for group in opt.param_groups:
                group["lr"] = lr
        flow_loss = frames = padded = 0
        for micro in range(self.accum):
            epoch, position, batch = next(batches)
            batch = self.to_device(batch)
            sync = micro == self.accum - 1 or self.world_size == 1
            with (contextlib.nullcontext() if sync else self.train_model.no_sync()), self.autocast:
                result = self.train_model(batch)
                (result.loss / self.accum).backward()
            flow_loss = flow_loss + result.flow_loss / self.accum
            frames = frames + batch.useful_frames
            padded += batch.mel_mask.numel()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.trained, self.cfg.grad_clip)
        finite = torch.isfinite(grad_norm) & torch.isfinite(result.loss)
        if self.world_size > 1:  # the loss is per rank: all ranks must drop the step together
            finite = finite.float()
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
            finite = finite.bool()
        # A non-finite step contributes no gradient. Zeroing it on the GPU, rather than asking
        # the host whether to skip, keeps the step free of syncs: the CPU queues the next step
        # while this one runs. (The optimizers' momentum still moves the weights.)
        grads = [p.grad for p in self.trained if p.grad is not None]
        torch._foreach_mul_(grads, finite.float())
        for grad in grads:
            grad.nan_to_num_(0.0, 0.0, 0.0)  # NaN * 0 is NaN
        for opt in self.optimizers:
            opt.step()
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self.ema_trained, self.trained, 1 - self.cfg.ema_decay)
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=True)
        return StepOutput(result, flow_loss, grad_norm, frames, padded, finite, epoch, position)


def resume_or_init(trainer: Trainer, cfg, log) -> tuple[int, int, int]:
    """Restore (step, epoch, position) from `resume` (a checkpoint named on the command line)
    or else out_dir/latest.pt; with neither, start from init_from's weights or from scratch."""
    model, ema = trainer.model, trainer.ema
    state = checkpoint.load(cfg.resume) if cfg.resume else checkpoint.load_latest(cfg.out_dir)
    source = cfg.resume or os.path.join(cfg.out_dir, checkpoint.LATEST)
    if state is None:
        if cfg.init_from:  # fine-tuning: weights only; fresh optimizer, step 0
            source = checkpoint.load(cfg.init_from)
            checkpoint.check_compatible(source["config"], cfg)
            checkpoint.load_weights(model, source["model"], cfg.init_from)
            if ema is not None:
                ema.load_state_dict(model.state_dict())
            log(f"initialised weights from {cfg.init_from} (step {source['step']})")
        return 0, 0, 0
    for change in checkpoint.check_compatible(state["config"], cfg):
        log(f"resuming with a changed setting: {change}")
    checkpoint.load_weights(model, state["model"], source)
    for opt, opt_state in zip(trainer.optimizers, state["optimizers"]):
        opt.load_state_dict(opt_state)
    if ema is not None and state.get("ema"):
        checkpoint.load_weights(ema, state["ema"], f"{source} (ema)")
    torch.set_rng_state(state["rng_cpu"])
    if torch.cuda.is_available() and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state(state["rng_cuda"])
    log(f"resumed from {source} at step {state['step']}")
    return state["step"], state["epoch"], state["position"]


def save(trainer: Trainer, cfg, step: int, epoch: int, position: int) -> None:
    ema = trainer.ema
    state = {"model": checkpoint.trainable_state(trainer.model),
             "optimizers": [opt.state_dict() for opt in trainer.optimizers],
             "ema": checkpoint.trainable_state(ema) if ema is not None else None,
             "step": step, "epoch": epoch, "position": position,
             "config": config_lib.as_dict(cfg), "rng_cpu": torch.get_rng_state(),
             "rng_cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
    checkpoint.save(cfg.out_dir, state, cfg.keep_checkpoints)


def check_finite_steps(flags: list[torch.Tensor], step: int, bad_run: int, cfg, log,
                       metrics) -> tuple[int, int]:
    """Log the steps since the last check whose gradient was dropped; stop the run after
    max_bad_steps of them in a row. Returns (finite steps, current run of bad steps)."""
    finite = torch.stack(flags).tolist()
    for i, ok in enumerate(finite):
        bad_run = 0 if ok else bad_run + 1
        if not ok:
            at = step - len(finite) + 1 + i
            log(f"step:{at} gradient dropped: non-finite loss or grad norm ({bad_run} in a row)")
            metrics.log(at, {"train/skipped_nonfinite": 1})
        if bad_run >= cfg.max_bad_steps:
            raise FloatingPointError(f"non-finite loss or grad norm {bad_run} steps in a row "
                                     f"(max_bad_steps {cfg.max_bad_steps}); stopped, not saved")
    return sum(finite), bad_run


@torch.no_grad()
def validation_loss(trainer: Trainer, batches) -> float:
    trainer.model.eval()
    losses = []
    for batch in batches:
        with trainer.autocast:
            losses.append(trainer.model(trainer.to_device(batch)).flow_loss)
    trainer.model.train()
    return torch.stack(losses).mean().item()


# ----------------------------------------------------------------------------- main


def main(argv: list[str]) -> None:
    cfg = config_lib.config_from_argv(argv)
    rank, world_size, device = setup_distributed()
    master = rank == 0
    log = (lambda msg: print(msg, flush=True)) if master else (lambda msg: None)

    # Data, and the mel statistics the model normalizes with.
    dataset = PreparedDataset(cfg.data_dir)
    if cfg.mel_mean is None or cfg.mel_std is None:
        cfg = config_lib.apply(cfg, {"mel_mean": dataset.stats["mel_mean"],
                                     "mel_std": dataset.stats["mel_std"]}, "dataset stats")
    train_rows = dataset.rows("train", cfg.block_size, cfg.max_text_length, cfg.overfit_first_n_samples)
    val_rows = dataset.rows("val", cfg.block_size, cfg.max_text_length)
    if not train_rows:
        raise DatasetError(f"{cfg.data_dir}: no training utterances fit block_size "
                           f"{cfg.block_size} and max_text_length {cfg.max_text_length}")
    stream = BatchStream(dataset, train_rows, cfg, rank, world_size)
    cfg = resolve_run_length(cfg, len(stream.epoch_batches(0)), grad_accum_steps(cfg, world_size))
    if master:
        checkpoint.make_run_dir(cfg.out_dir)

    # Model, optimizer, EMA, text features; resume; compile and DDP.
    trainer = Trainer(cfg, dataset, world_size, device)
    step, epoch, position = resume_or_init(trainer, cfg, log)
    trainer.wrap()
    model = trainer.model

    # Run directory, logging, evaluation.
    metrics = MetricLogger(cfg.out_dir, master, cfg.wandb_project, config_lib.as_dict(cfg),
                           cfg.run_name or None)
    if master:
        with open(os.path.join(cfg.out_dir, "config.yaml"), "w") as f:
            yaml.safe_dump(config_lib.as_dict(cfg), f, sort_keys=False)
        info = {"run_name": metrics.run_name, **describe_run(cfg, device, world_size, model)}
        metrics.log(step, {"run": info, "train_utterances": len(train_rows)})
        log(f"run: {info}")
        log(f"data: {len(train_rows)} train / {len(val_rows)} val utterances, "
            f"{trainer.accum} micro-batch(es) of {cfg.batch_size} per step on {world_size} rank(s); "
            f"{cfg.max_steps} steps, lr schedule over {cfg.lr_schedule_steps}")
    evaluator = None
    if master and (cfg.eval_interval or cfg.eval_interval_seconds):
        import evaluator as evaluator_lib
        test_rows = dataset.rows("test", cfg.block_size, cfg.max_text_length)
        evaluator = evaluator_lib.InLoopEvaluator(
            cfg, cfg.out_dir, [dataset.texts[r] for r in train_rows],
            [dataset.texts[r] for r in val_rows],
            {dataset.texts[r]: int(dataset.n_frames[r]) for r in val_rows + train_rows},
            [dataset.texts[r] for r in test_rows])
    batches = stream.iterate(epoch, position)
    val_batches = [Collate(dataset, cfg)(rows) for rows in
                   BatchStream(dataset, val_rows, cfg).epoch_batches(0)[:4]] if val_rows else []
    stop = StopFlag(cfg.out_dir)
    flops_per_frame = decoder_flops_per_frame(cfg, dataset.n_frames.mean(), 100)["train"]

    # The loop: one optimizer step per iteration. Nothing in it waits for the GPU except the
    # log interval, which also checks for non-finite steps (and runs before every save).
    train_seconds, seconds_at_log, bad_run, updates = 0.0, 0.0, 0, 0  # updates since the log
    next_eval_seconds, evaluated_at = cfg.eval_interval_seconds, None
    loss_sum, frames_since_log = torch.zeros((), device=device), torch.zeros((), device=device)
    finite_since_log = []
    while True:
        if step >= cfg.max_steps:  # max_epochs included (resolve_run_length): every rank stops
            break
        out_of_time = cfg.max_train_seconds and train_seconds >= cfg.max_train_seconds
        if any_rank(stop() or out_of_time, world_size, device):
            break
        t_step = time.time()
        out = trainer.step(batches, lr_at(step, cfg))
        epoch, position = out.epoch, out.position
        loss_sum += torch.where(out.finite, out.flow_loss, 0.0)
        finite_since_log.append(out.finite)
        frames_since_log += out.useful_frames
        step += 1
        if step % cfg.log_interval == 0 or step % cfg.save_interval == 0:  # waits for the GPU
            n_finite, bad_run = check_finite_steps(finite_since_log, step, bad_run, cfg, log, metrics)
            finite_since_log, updates = [], updates + n_finite
        train_seconds += time.time() - t_step

        # Log, save, validate, evaluate. Step time is summed over steps only: the clock stops
        # for checkpoints and evaluation.
        if step % cfg.log_interval == 0:
            elapsed, seconds_at_log = train_seconds - seconds_at_log, train_seconds
            if world_size > 1:  # log the global batch's loss, not rank 0's share
                dist.all_reduce(loss_sum)
                loss_sum /= world_size
            frames = frames_since_log.item() * world_size
            lr = lr_at(step - 1, cfg)
            values = {"train/loss": loss_sum.item() / updates if updates else float("nan"),
                      "train/duration_loss": out.result.duration_loss.item(), "train/lr": lr,
                      "train/grad_norm": out.grad_norm.item(), "train/epoch": epoch,
                      "train/step_ms": 1000 * elapsed / cfg.log_interval,
                      "train/frames_per_s": frames / elapsed,
                      "train/tflops": frames * flops_per_frame / elapsed / 1e12}
            log(f"step:{step} loss:{values['train/loss']:.4f} dur:{values['train/duration_loss']:.4f} "
                f"lr:{lr:.2e} step_avg:{values['train/step_ms']:.0f}ms frames/s:{values['train/frames_per_s']:.0f}")
            metrics.log(step, values)
            loss_sum.zero_()
            frames_since_log.zero_()
            updates = 0
        if master and step % cfg.save_interval == 0:
            save(trainer, cfg, step, epoch, position)
        if master and val_batches and step % cfg.val_interval == 0:
            metrics.log(step, {"val/flow_loss": validation_loss(trainer, val_batches)})
        by_clock = cfg.eval_interval_seconds and any_rank(train_seconds >= next_eval_seconds,
                                                          world_size, device)
        if by_clock:
            while next_eval_seconds <= train_seconds:
                next_eval_seconds += cfg.eval_interval_seconds
        if by_clock or (cfg.eval_interval and step % cfg.eval_interval == 0):
            if evaluator is not None:
                metrics.log(step, {**evaluator(trainer.ema or model, step),
                                   "eval/train_seconds": train_seconds})
            evaluated_at = step
            if world_size > 1:
                dist.barrier()

    # Final save; a run that ended on its own also evaluates its final weights.
    if finite_since_log:
        check_finite_steps(finite_since_log, step, bad_run, cfg, log, metrics)
    if master:
        save(trainer, cfg, step, epoch, position)
        reason = stop()
        log(f"saved {cfg.out_dir}/latest.pt at step {step}" + (f" ({reason})" if reason else ""))
        if evaluator is not None and evaluated_at != step and not reason:
            metrics.log(step, {**evaluator(trainer.ema or model, step),
                               "eval/train_seconds": train_seconds})
    metrics.close()
    if world_size > 1:
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    StopFlag.catch_signals()
    try:
        main(sys.argv[1:])
    except (config_lib.ConfigError, DatasetError, checkpoint.CheckpointError,
            FloatingPointError, OSError) as exc:  # OSError: a full disk writing the metrics
        sys.exit(f"error: {exc}")
