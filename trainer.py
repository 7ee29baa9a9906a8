"""One optimizer step, and what it needs built once: Trainer.

train.py runs the loop around it and scripts/bench.py times it. The step is forward/backward
over the micro-batches through the DDP wrapper, clipping, and the optimizers' update; a step
whose loss or gradient norm is not finite contributes no gradient. LogWindow sums the steps
between two log lines and writes their line and metrics record.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

import config as config_lib
from data import PreparedDataset, TextFeatureCache
from model import FlowTTS, LossResult, decoder_flops_per_frame
from optim import build_optimizers


def grad_accum_steps(cfg, world_size: int) -> int:
    """Micro-batches per optimizer step: from effective_batch_size when set."""
    if not cfg.effective_batch_size:
        return cfg.grad_accum_steps
    steps, rest = divmod(cfg.effective_batch_size, cfg.batch_size * world_size)
    if rest or not steps:
        raise config_lib.ConfigError(
            f"effective_batch_size {cfg.effective_batch_size} is not a multiple of batch_size "
            f"{cfg.batch_size} x {world_size} GPU(s)")
    return steps


def check_speed_switches(cfg, accum: int, world_size: int, device: torch.device) -> None:
    """The speed switches' needs, checked before anything is built. cuda_graphs: one
    micro-batch per step on one GPU. A replayed backward leaves each parameter's gradient in
    the graph's memory, and autograd takes that tensor as p.grad without a copy: the next
    micro-batch's replay would overwrite it before the optimizer reads it
    (pytorch/pytorch#169545). fp8_matmuls: a GPU that multiplies float8 (compute capability
    8.9+) and torchao."""
    if cfg.cuda_graphs and (accum > 1 or world_size > 1):
        raise config_lib.ConfigError(
            f"config key 'cuda_graphs': needs one micro-batch per step on one GPU, got "
            f"{accum} micro-batch(es) on {world_size} GPU(s) (set effective_batch_size "
            f"to batch_size, or 0)")
    if not cfg.fp8_matmuls:
        return
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < (8, 9):
        raise config_lib.ConfigError(
            f"config key 'fp8_matmuls': needs a GPU with float8 matmuls (H100, H200: compute "
            f"capability 8.9 or later), this run is on {device}")
    try:
        import torchao.float8  # noqa: F401
    except ImportError:
        raise config_lib.ConfigError("config key 'fp8_matmuls': needs torchao "
                                     "(pip install torchao)") from None


def float8_training(decoder) -> None:
    """Swap the decoder blocks' Linear layers for torchao's Float8Linear: each matmul casts
    its operands to float8 with one dynamic scale per tensor (amax / the format's max) and
    returns bf16; the weights stay the same fp32 Parameters, so optimizers and checkpoints
    see no difference. The self-attention's fused q/k/v matmul stays bf16: it reads the q
    and kv weights, not their modules."""
    from torchao.float8 import convert_to_float8_training
    fused = ("self_attn.q", "self_attn.kv")
    convert_to_float8_training(decoder.blocks, module_filter_fn=lambda module, name:
                               not name.endswith(fused))


@dataclass
class StepOutput:
    result: LossResult  # of the last micro-batch
    flow_loss: torch.Tensor  # mean over the micro-batches
    grad_norm: torch.Tensor
    useful_frames: torch.Tensor  # this rank's non-padding frames
    padded_frames: int  # this rank's frames including padding
    utterances: int  # this rank's utterances
    finite: torch.Tensor  # bool; False: the loss or gradient norm was not finite, gradient dropped
    epoch: int  # data position after the step
    position: int
    lr: float


class Trainer:
    """What one optimizer step needs, built once: model, DDP wrapper, optimizers, EMA, the text
    feature cache and autocast. `step` is the whole step; train.py and scripts/bench.py use it."""

    def __init__(self, cfg, dataset: PreparedDataset, world_size: int, device: torch.device,
                 rank: int = 0):
        self.cfg, self.world_size, self.device, self.rank = cfg, world_size, device, rank
        self.accum = grad_accum_steps(cfg, world_size)
        check_speed_switches(cfg, self.accum, world_size, device)
        torch.manual_seed(cfg.seed)
        self.model = FlowTTS(cfg).to(device)
        if cfg.fp8_matmuls:
            float8_training(self.model.decoder)
        self.ema = copy.deepcopy(self.model).requires_grad_(False) if cfg.ema_decay > 0 else None
        self.optimizers = build_optimizers(self.model, cfg)
        self.trained = [p for p in self.model.parameters() if p.requires_grad]
        self.ema_trained = [p for p, q in zip(self.ema.parameters(), self.model.parameters())
                            if q.requires_grad] if self.ema else []
        self.cache = (TextFeatureCache(self.model.encode_texts, dataset.texts)
                      if cfg.cache_text_features and self.model.text_encoder.frozen else None)
        use_bf16 = cfg.dtype == "bf16" and device.type == "cuda"
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if use_bf16
                         else contextlib.nullcontext())
        self.ddp = None  # the DDP wrapper of `model` (after wrap, under torchrun)

    @property
    def sampling_model(self) -> FlowTTS:
        """The weights to sample with: the EMA when one is kept."""
        return self.ema if self.ema is not None else self.model

    def wrap(self) -> None:
        """Compile and wrap for DDP; after weights are loaded, before the first step."""
        if self.cfg.compile:
            self.model.compile_decoder(cuda_graphs=self.cfg.cuda_graphs)
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.ddp = DistributedDataParallel(self.model, device_ids=ids)

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
        forward = self.model if self.ddp is None else self.ddp  # DDP's forward syncs gradients
        # A new step for the CUDA graphs (cuda_graphs): the last step's graph outputs are
        # used up, their memory free for this step's replays.
        torch.compiler.cudagraph_mark_step_begin()
        flow_loss = frames = padded = utterances = 0
        for micro in range(self.accum):
            epoch, position, batch = next(batches)
            batch = self.to_device(batch)
            sync = micro == self.accum - 1 or self.world_size == 1
            with (contextlib.nullcontext() if sync else self.ddp.no_sync()), self.autocast:
                result = forward(batch)
                (result.loss / self.accum).backward()
            flow_loss = flow_loss + result.flow_loss / self.accum
            frames = frames + batch.useful_frames
            padded += batch.mel_mask.numel()
            utterances += batch.mel_mask.shape[0]
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
        return StepOutput(result, flow_loss, grad_norm, frames, padded, utterances, finite, epoch,
                          position, lr)


class LogWindow:
    """The steps since the last log line. Their losses and frames are summed on the device,
    so a step never waits for it; `check_finite` (at log and save steps) reads which steps
    were dropped as non-finite, and `flush` writes the console line and the metrics record."""

    def __init__(self, cfg, world_size: int, device, log, metrics, mean_frames: float,
                 train_seconds: float = 0.0):
        self.cfg, self.world_size, self.log, self.metrics = cfg, world_size, log, metrics
        self.flops_per_frame = decoder_flops_per_frame(cfg, mean_frames, 100)["train"]
        self.loss_sum = torch.zeros((), device=device)  # flow loss of the finite steps
        self.useful_frames = torch.zeros((), device=device)  # this rank's
        self.utterances = 0  # this rank's
        self.cuda = device.type == "cuda"  # peak memory is logged per window
        self.unchecked = []  # finite flags (bool tensors) of the steps not checked yet
        self.updates = 0  # checked steps of this window whose gradient was applied
        self.bad_run = 0  # dropped steps in a row; carries over from window to window
        self.flushed_at_seconds = train_seconds  # training time at the last flush (or start)
        self.last = None  # StepOutput of the newest step

    def add(self, out: StepOutput) -> None:
        self.loss_sum += torch.where(out.finite, out.flow_loss, 0.0)
        self.useful_frames += out.useful_frames
        self.utterances += out.utterances
        self.unchecked.append(out.finite)
        self.last = out

    def check_finite(self, step: int) -> None:
        """Log the unchecked steps whose gradient was dropped; stop the run after
        max_bad_steps of them in a row. Waits for the device."""
        finite = torch.stack(self.unchecked).tolist() if self.unchecked else []
        for i, ok in enumerate(finite):
            self.bad_run = 0 if ok else self.bad_run + 1
            if not ok:
                at = step - len(finite) + 1 + i
                self.log(f"step:{at} gradient dropped: non-finite loss or grad norm "
                         f"({self.bad_run} in a row)")
                self.metrics.log(at, {"train/skipped_nonfinite": 1})
            if self.bad_run >= self.cfg.max_bad_steps:
                raise FloatingPointError(
                    f"non-finite loss or grad norm {self.bad_run} steps in a row "
                    f"(max_bad_steps {self.cfg.max_bad_steps}); stopped, not saved")
        self.updates += sum(finite)
        self.unchecked = []

    def flush(self, step: int, train_seconds: float) -> None:
        """The window's line and metrics record (after check_finite); then a new window."""
        cfg, out = self.cfg, self.last
        elapsed, self.flushed_at_seconds = train_seconds - self.flushed_at_seconds, train_seconds
        if self.world_size > 1:  # log the global batch's loss, not rank 0's share
            dist.all_reduce(self.loss_sum)
            self.loss_sum /= self.world_size
        frames = self.useful_frames.item() * self.world_size
        lr = out.lr
        loss = self.loss_sum.item() / self.updates if self.updates else float("nan")
        # The seed's names where it logged the same thing (docs/RESEARCH_WORKFLOW.md, section 5)
        values = {"train/loss": loss, "train/duration_loss": out.result.duration_loss.item(),
                  "train/duration_pred_sec": out.result.predicted_seconds.item(),
                  "train/duration_target_sec": out.result.true_seconds.item(),
                  "train/epoch": out.epoch, "optim/lr": lr, "optim/grad_norm": out.grad_norm.item(),
                  "time/step_sec": elapsed / cfg.log_interval,
                  "perf/frames_per_sec": frames / elapsed,
                  "perf/samples_per_sec": self.utterances * self.world_size / elapsed,
                  "perf/tflops": frames * self.flops_per_frame / elapsed / 1e12}
        if self.cuda:
            values["cuda/max_memory_gb"] = torch.cuda.max_memory_allocated() / 2 ** 30
            torch.cuda.reset_peak_memory_stats()
        self.log(f"step:{step} loss:{loss:.4f} dur:{values['train/duration_loss']:.4f} "
                 f"lr:{lr:.2e} step_avg:{1000 * values['time/step_sec']:.0f}ms "
                 f"frames/s:{values['perf/frames_per_sec']:.0f}")
        self.metrics.log(step, values)
        self.loss_sum.zero_()
        self.useful_frames.zero_()
        self.utterances = 0
        self.updates = 0
