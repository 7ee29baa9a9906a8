"""Train the flow-matching TTS model, alone or under torchrun (DDP).

    python train.py --config configs/ljspeech_overfit64.yaml [--key value ...]
    torchrun --standalone --nproc_per_node 2 train.py --config configs/ljspeech.yaml

The run directory (`out_dir`) holds latest.pt, metrics.jsonl (its first record describes
the run: its name, code revision, libraries, device, sizes), config.yaml and eval/step_<N>/.
A run with a latest.pt resumes from it (`--resume PATH`: from that checkpoint instead);
`touch <out_dir>/STOP`, SIGTERM or SIGINT make it finish the step, save and exit 0.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time

import torch
import torch.distributed as dist
import yaml

import checkpoint
import config as config_lib
from data import BatchStream, Collate, DatasetError, PreparedDataset
from metric import MetricLogger
from model import FlowTTS
from optim import lr_at
from trainer import LogWindow, Trainer, grad_accum_steps

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


def resolve_run_length(cfg, batches_per_epoch: int, accum: int):
    """cfg with max_steps the run's real length, min(max_steps, max_epochs x optimizer steps per
    epoch), and lr_schedule_steps that length unless set (or the schedule runs over
    lr_schedule_seconds). Every epoch has as many batches (data.global_batches)."""
    steps = cfg.max_steps
    if cfg.max_epochs:
        steps = min(steps, math.ceil(cfg.max_epochs * batches_per_epoch / accum))
    schedule_steps = 0 if cfg.lr_schedule_seconds else cfg.lr_schedule_steps or steps
    return config_lib.apply(cfg, {"max_steps": steps, "lr_schedule_steps": schedule_steps},
                            "run length")


def code_revision(repo_dir: str) -> str:
    """The checkout's commit, with "-dirty" when tracked files differ from it (a run from
    edited code must not claim a clean commit); "unknown" outside a git checkout."""
    try:
        revision = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7",
                                   "--exclude=*"], capture_output=True, text=True,
                                  cwd=repo_dir, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        revision = ""
    return revision or "unknown"


def describe_run(cfg, device, world_size: int, model: FlowTTS) -> dict:
    """What a run needs to explain itself later: code version, libraries, hardware, sizes."""
    import transformers
    return {"git_revision": code_revision(os.path.dirname(os.path.abspath(__file__))),
            "torch": torch.__version__,
            "transformers": transformers.__version__, "python": sys.version.split()[0],
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "world_size": world_size, "parameters": model.parameter_counts()}


def shared_clock(train_seconds: float, stop_reason: str, world_size: int,
                 device) -> tuple[float, bool]:
    """(training seconds, stop?), the same on every rank: the slowest rank's clock, which the
    time budget and a seconds schedule follow (ranks with different lrs would drift apart),
    and whether any rank was asked to stop."""
    if world_size == 1:
        return train_seconds, bool(stop_reason)
    values = torch.tensor([train_seconds, float(bool(stop_reason))], dtype=torch.float64,
                          device=device)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    seconds, stop = values.tolist()
    return seconds, bool(stop)


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


def resume_or_init(trainer: Trainer, cfg, log) -> tuple[int, int, int, float]:
    """Restore (step, epoch, position, training seconds) from `resume` (a checkpoint named on
    the command line) or else out_dir/latest.pt; with neither, start from init_from's weights
    or from scratch."""
    model, ema = trainer.model, trainer.ema
    state = checkpoint.load(cfg.resume) if cfg.resume else checkpoint.load_latest(cfg.out_dir)
    source = cfg.resume or os.path.join(cfg.out_dir, checkpoint.LATEST)
    if state is None:
        if cfg.init_from:  # fine-tuning: weights only; fresh optimizer, step 0
            init_state = checkpoint.load(cfg.init_from)
            checkpoint.check_compatible(init_state["config"], cfg)
            checkpoint.load_weights(model, init_state["model"], cfg.init_from)
            if ema is not None:
                ema.load_state_dict(model.state_dict())
            log(f"initialised weights from {cfg.init_from} (step {init_state['step']})")
        return 0, 0, 0, 0.0
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
    # checkpoints older than the seconds schedule have no clock: it restarts
    return state["step"], state["epoch"], state["position"], state.get("train_seconds", 0.0)


def save(trainer: Trainer, cfg, step: int, epoch: int, position: int,
         train_seconds: float) -> None:
    ema = trainer.ema
    state = {"model": checkpoint.trainable_state(trainer.model),
             "optimizers": [opt.state_dict() for opt in trainer.optimizers],
             "ema": checkpoint.trainable_state(ema) if ema is not None else None,
             "step": step, "epoch": epoch, "position": position, "train_seconds": train_seconds,
             "config": config_lib.as_dict(cfg), "rng_cpu": torch.get_rng_state(),
             "rng_cuda": torch.cuda.get_rng_state() if torch.cuda.is_available() else None}
    checkpoint.save(cfg.out_dir, state, cfg.keep_checkpoints)


@torch.no_grad()
def validation_loss(trainer: Trainer, batches) -> float:
    trainer.model.eval()
    losses = []
    for batch in batches:
        with trainer.autocast:
            losses.append(trainer.model(trainer.to_device(batch)).flow_loss)
    trainer.model.train()
    return torch.stack(losses).mean().item()


# ----------------------------------------------------------------------------- setup


def load_data(cfg, rank: int, world_size: int):
    """(cfg, dataset, train rows, val rows, this rank's BatchStream), cfg completed from the
    data: the mel statistics the model normalizes with, the run's real length."""
    dataset = PreparedDataset(cfg.data_dir)
    if cfg.mel_mean is None or cfg.mel_std is None:
        cfg = config_lib.apply(cfg, {"mel_mean": dataset.stats["mel_mean"],
                                     "mel_std": dataset.stats["mel_std"]}, "dataset stats")
    train_rows = dataset.rows("train", cfg.block_size, cfg.max_text_length,
                              cfg.overfit_first_n_samples)
    val_rows = dataset.rows("val", cfg.block_size, cfg.max_text_length)
    if not train_rows:
        raise DatasetError(f"{cfg.data_dir}: no training utterances fit block_size "
                           f"{cfg.block_size} and max_text_length {cfg.max_text_length}")
    stream = BatchStream(dataset, train_rows, cfg, rank, world_size)
    cfg = resolve_run_length(cfg, len(stream.epoch_batches(0)), grad_accum_steps(cfg, world_size))
    return cfg, dataset, train_rows, val_rows, stream


def open_run(cfg, trainer: Trainer, step: int, master: bool, log, n_train: int,
             n_val: int) -> MetricLogger:
    """The metrics log, and on rank 0 config.yaml and the run's description."""
    metrics = MetricLogger(cfg.out_dir, master, cfg.wandb_project, config_lib.as_dict(cfg),
                           cfg.run_name or None)
    if master:
        with open(os.path.join(cfg.out_dir, "config.yaml"), "w") as f:
            yaml.safe_dump(config_lib.as_dict(cfg), f, sort_keys=False)
        info = {"run_name": metrics.run_name,
                **describe_run(cfg, trainer.device, trainer.world_size, trainer.model)}
        metrics.log(step, {"run": info, "train_utterances": n_train})
        log(f"run: {info}")
        schedule = (f"{cfg.lr_schedule_seconds:g} s of training" if cfg.lr_schedule_seconds
                    else f"{cfg.lr_schedule_steps} steps")
        log(f"data: {n_train} train / {n_val} val utterances, {trainer.accum} micro-batch(es) "
            f"of {cfg.batch_size} per step on {trainer.world_size} rank(s); {cfg.max_steps} "
            f"steps, lr schedule over {schedule}")
    return metrics


def in_loop_evaluator(cfg, dataset: PreparedDataset, train_rows: list[int], val_rows: list[int]):
    """The evaluator that samples and scores the model every eval_interval steps (or seconds);
    None when neither is set."""
    if not (cfg.eval_interval or cfg.eval_interval_seconds):
        return None
    import evaluator as evaluator_lib  # only when evaluating: it loads the ASR stack
    texts = lambda rows: [dataset.texts[r] for r in rows]
    true_frames = {dataset.texts[r]: int(dataset.n_frames[r]) for r in val_rows + train_rows}
    test_rows = dataset.rows("test", cfg.block_size, cfg.max_text_length)
    return evaluator_lib.InLoopEvaluator(cfg, cfg.out_dir, texts(train_rows), texts(val_rows),
                                         true_frames, texts(test_rows))


def validation_batches(dataset: PreparedDataset, val_rows: list[int], cfg) -> list:
    """The first four held-out batches, collated once."""
    if not val_rows:
        return []
    return [Collate(dataset, cfg)(rows)
            for rows in BatchStream(dataset, val_rows, cfg).epoch_batches(0)[:4]]


class EvalSchedule:
    """When the in-loop evaluation runs, and running it: every eval_interval steps, and at the
    first step past each multiple of eval_interval_seconds of training time (every rank
    agrees). Rank 0 holds the evaluator; the other ranks wait for it."""

    def __init__(self, trainer: Trainer, evaluator, metrics: MetricLogger, train_seconds: float):
        self.cfg, self.trainer = trainer.cfg, trainer
        self.evaluator, self.metrics = evaluator, metrics
        interval = self.cfg.eval_interval_seconds
        self.next_seconds = 0.0
        if interval:  # the first multiple past the clock: a resumed run's is not at 0
            self.next_seconds = (math.floor(train_seconds / interval) + 1) * interval
        self.last_step = None  # of the latest evaluation

    def due(self, step: int, train_seconds: float) -> bool:
        cfg, trainer = self.cfg, self.trainer
        by_clock = bool(cfg.eval_interval_seconds) and any_rank(
            train_seconds >= self.next_seconds, trainer.world_size, trainer.device)
        while by_clock and self.next_seconds <= train_seconds:
            self.next_seconds += cfg.eval_interval_seconds
        return by_clock or (bool(cfg.eval_interval) and step % cfg.eval_interval == 0)

    def run(self, step: int, train_seconds: float, wait: bool = True) -> None:
        """Sample and score the weights to sample with; wait: all ranks meet afterwards."""
        if self.evaluator is not None:
            values = self.evaluator(self.trainer.sampling_model, step)
            self.metrics.log(step, {**values, "eval/train_seconds": train_seconds})
        self.last_step = step
        if wait and self.trainer.world_size > 1:
            dist.barrier()


def finish(trainer: Trainer, step: int, epoch: int, position: int, train_seconds: float,
           stop: StopFlag, evals: EvalSchedule, log) -> None:
    """Final save; a run that ended on its own also evaluates its final weights."""
    cfg = trainer.cfg
    if trainer.rank == 0:
        save(trainer, cfg, step, epoch, position, train_seconds)
        reason = stop()
        log(f"saved {cfg.out_dir}/latest.pt at step {step}" + (f" ({reason})" if reason else ""))
        if evals.evaluator is not None and evals.last_step != step and not reason:
            evals.run(step, train_seconds, wait=False)  # the other ranks wait at the end
    evals.metrics.close()
    if trainer.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- main


def main(argv: list[str]) -> None:
    cfg = config_lib.config_from_argv(argv)
    rank, world_size, device = setup_distributed()
    master = rank == 0
    log = (lambda msg: print(msg, flush=True)) if master else (lambda msg: None)
    cfg, dataset, train_rows, val_rows, stream = load_data(cfg, rank, world_size)
    if master:
        checkpoint.make_run_dir(cfg.out_dir)
    trainer = Trainer(cfg, dataset, world_size, device, rank)
    # train_seconds sums the steps only: the clock stops for checkpoints and evaluation
    step, epoch, position, train_seconds = resume_or_init(trainer, cfg, log)
    trainer.wrap()
    metrics = open_run(cfg, trainer, step, master, log, len(train_rows), len(val_rows))
    evaluator = in_loop_evaluator(cfg, dataset, train_rows, val_rows) if master else None
    evals = EvalSchedule(trainer, evaluator, metrics, train_seconds)
    batches = stream.iterate(epoch, position)
    val_batches = validation_batches(dataset, val_rows, cfg)
    stop = StopFlag(cfg.out_dir)
    window = LogWindow(cfg, world_size, device, log, metrics, dataset.n_frames.mean(),
                       train_seconds)

    # The loop: one optimizer step per iteration. Nothing in it waits for the device except
    # the finite check at log and save steps.
    while True:
        # Stop: at the run's length (max_steps, max_epochs included: resolve_run_length; the
        # same step on every rank), when asked to, or out of time.
        if step >= cfg.max_steps:
            break
        train_seconds, stop_asked = shared_clock(train_seconds, stop(), world_size, device)
        if stop_asked or cfg.max_train_seconds and train_seconds >= cfg.max_train_seconds:
            break

        # Step: forward/backward through the DDP wrapper, clip, update.
        t_step = time.time()
        out = trainer.step(batches, lr_at(step, cfg, train_seconds))
        epoch, position = out.epoch, out.position
        window.add(out)
        step += 1
        if step % cfg.log_interval == 0 or step % cfg.save_interval == 0:
            window.check_finite(step)  # waits for the device
        train_seconds += time.time() - t_step

        # Log.
        if step % cfg.log_interval == 0:
            window.flush(step, train_seconds)

        # Checkpoint.
        if master and step % cfg.save_interval == 0:
            save(trainer, cfg, step, epoch, position, train_seconds)

        # Validate: the held-out flow loss.
        if master and val_batches and step % cfg.val_interval == 0:
            metrics.log(step, {"val/flow_loss": validation_loss(trainer, val_batches)})

        # Evaluate: sample, vocode, transcribe, WER.
        if evals.due(step, train_seconds):
            evals.run(step, train_seconds)

    window.check_finite(step)
    finish(trainer, step, epoch, position, train_seconds, stop, evals, log)


if __name__ == "__main__":
    StopFlag.catch_signals()
    try:
        main(sys.argv[1:])
    except (config_lib.ConfigError, DatasetError, checkpoint.CheckpointError,
            FloatingPointError, OSError) as exc:  # OSError: a full disk writing the metrics
        sys.exit(f"error: {exc}")
