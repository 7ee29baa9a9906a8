"""Optimizers and the learning-rate schedule.

Muon (Jordan et al. 2024) for the decoder blocks' 2-D weights, AdamW for the rest. The Muon
update is torch.optim.Muon's, computed for all same-shape matrices at once: the library
orthogonalizes one matrix at a time, about 1,000 small kernel launches per step for the
seed-shaped decoder, and on an H100 that launch-bound step took longer than the
forward/backward passes it follows.
"""
from __future__ import annotations

import math
from collections import defaultdict

import torch


def orthogonalize(update: torch.Tensor, coefficients, steps: int, eps: float) -> torch.Tensor:
    """Quintic Newton-Schulz iteration towards U V^T of each matrix in (k, A, B), in bf16, as
    torch.optim.Muon does for one matrix: X <- a X + (b X X^T + c (X X^T)^2) X, with X scaled
    to Frobenius norm 1 and wide (A <= B) so X X^T is the small Gram matrix."""
    a, b, c = coefficients
    x = update.bfloat16()
    tall = update.size(-2) > update.size(-1)
    if tall:
        x = x.mT
    x = x / x.norm(dim=(-2, -1), keepdim=True).clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.mT  # (k, A, A)
        x = torch.baddbmm(x, torch.baddbmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.mT if tall else x


class StackedMuon(torch.optim.Muon):
    """torch.optim.Muon (same hyperparameters, state and update), batched by matrix shape."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            by_shape = defaultdict(list)
            for p in group["params"]:
                if p.grad is not None:
                    by_shape[p.shape].append(p)
            for shape, params in by_shape.items():
                grads = [p.grad for p in params]
                buffers = [self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                           for p in params]
                torch._foreach_lerp_(buffers, grads, 1 - group["momentum"])
                updates = (torch._foreach_lerp(grads, buffers, group["momentum"])
                           if group["nesterov"] else buffers)
                ortho = orthogonalize(torch.stack(updates), group["ns_coefficients"],
                                      group["ns_steps"], group["eps"])
                scale = (0.2 * math.sqrt(max(shape)) if group["adjust_lr_fn"] == "match_rms_adamw"
                         else math.sqrt(max(1, shape[0] / shape[1])))
                torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
                torch._foreach_add_(params, list(ortho.unbind(0)), alpha=-group["lr"] * scale)


def build_optimizers(model, cfg) -> list[torch.optim.Optimizer]:
    """[StackedMuon for decoder.blocks.* matrices, AdamW for the rest] or [AdamW]."""
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    fused = next(model.parameters()).is_cuda
    adamw = lambda ps: torch.optim.AdamW(ps, lr=cfg.lr, betas=(0.9, 0.95),
                                         weight_decay=cfg.weight_decay, fused=fused)
    if cfg.optimizer == "adamw":
        return [adamw([p for _, p in params])]
    use_muon = lambda n, p: p.ndim == 2 and n.startswith("decoder.blocks.")
    return [StackedMuon([p for n, p in params if use_muon(n, p)], lr=cfg.lr,
                        weight_decay=cfg.weight_decay, adjust_lr_fn="match_rms_adamw"),
            adamw([p for n, p in params if not use_muon(n, p)])]


def lr_at(step: int, cfg, train_seconds: float = 0.0) -> float:
    """The lr of optimizer step `step` (from 0): linear warmup over warmup_steps, then a cosine
    from lr that reaches min_lr at the last step of lr_schedule_steps (train.py sets it to the
    run's real length unless the config does), or constant.

    With lr_schedule_seconds the cosine's clock is the training time instead: progress
    p = train_seconds / lr_schedule_seconds from the first step, so a run bounded by time ends
    its schedule at its budget however fast its steps are; the warmup ramp multiplies it,
    lr_t = min(1, (step + 1) / warmup_steps) * (min_lr + (lr - min_lr) (1 + cos(pi p)) / 2)."""
    if cfg.cosine_lr and cfg.lr_schedule_seconds:
        warmup = min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0
        return warmup * cosine(cfg, train_seconds / cfg.lr_schedule_seconds)
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if not cfg.cosine_lr:
        return cfg.lr
    total = cfg.lr_schedule_steps or cfg.max_steps
    return cosine(cfg, (step + 1 - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))


def cosine(cfg, progress: float) -> float:
    """lr at progress 0, min_lr at progress 1 and after."""
    progress = min(1.0, progress)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * progress))
