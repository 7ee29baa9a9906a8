"""optim.py: StackedMuon against torch's Muon, which weights each optimizer takes, the lr
schedule at hand-computed points."""
import math

import pytest
import torch

import config
import optim
from model import FlowTTS


@pytest.mark.parametrize("adjust_lr_fn", ["match_rms_adamw", None])
def test_stacked_muon_matches_torch_muon(adjust_lr_fn):
    # Same-shape, tall, wide and odd-shaped matrices; three steps so momentum matters.
    shapes = [(8, 8), (8, 8), (8, 8), (24, 8), (24, 8), (8, 24), (5, 7)]
    torch.manual_seed(0)
    start = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(3)]
    params = {name: [torch.nn.Parameter(w.clone()) for w in start] for name in ("ref", "ours")}
    kwargs = dict(lr=0.02, weight_decay=0.1, adjust_lr_fn=adjust_lr_fn)
    reference = torch.optim.Muon(params["ref"], **kwargs)
    stacked = optim.StackedMuon(params["ours"], **kwargs)
    for step_grads in grads:
        for opt, ps in ((reference, params["ref"]), (stacked, params["ours"])):
            for p, g in zip(ps, step_grads):
                p.grad = g.clone()
            opt.step()
    for ref, ours, w in zip(params["ref"], params["ours"], start):
        moved = (ref - w).abs().max()
        assert moved > 1e-3 and (ours - ref).abs().max() < 1e-3 * moved
    # The state has torch.optim.Muon's layout, so checkpoints load either way.
    reference.load_state_dict(stacked.state_dict())
    assert torch.equal(reference.state[params["ref"][0]]["momentum_buffer"],
                       stacked.state[params["ours"][0]]["momentum_buffer"])


def test_lr_schedule_warms_up_linearly_then_follows_the_cosine_to_min_lr():
    cfg = config.load_config(None, {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 10,
                                    "max_steps": 110})
    assert optim.lr_at(0, cfg) == pytest.approx(1e-4)  # (0 + 1) / 10 of lr
    assert optim.lr_at(9, cfg) == pytest.approx(1e-3)
    # step 59: half way through the 100 cosine steps, cos(pi / 2) = 0: the midpoint
    assert optim.lr_at(59, cfg) == pytest.approx(5.5e-4)
    assert optim.lr_at(34, cfg) == pytest.approx(1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi / 4)))
    assert optim.lr_at(109, cfg) == pytest.approx(1e-4)
    assert optim.lr_at(500, cfg) == pytest.approx(1e-4)  # past the schedule: stays at min_lr
    flat = config.apply(cfg, {"cosine_lr": False}, "test")
    assert optim.lr_at(59, flat) == 1e-3


def test_seconds_schedule_follows_the_training_clock_times_the_warmup_ramp():
    cfg = config.load_config(None, {"lr": 1e-3, "min_lr": 1e-4, "warmup_steps": 10,
                                    "lr_schedule_seconds": 600, "max_steps": 100000})
    # half way through the budget, cos(pi / 2) = 0: the midpoint, whatever the step
    assert optim.lr_at(50, cfg, 300.0) == pytest.approx(5.5e-4)
    assert optim.lr_at(5000, cfg, 300.0) == pytest.approx(5.5e-4)
    quarter = 1e-4 + 0.5 * 9e-4 * (1 + math.cos(math.pi / 4))
    assert optim.lr_at(50, cfg, 150.0) == pytest.approx(quarter)
    # during the warmup the ramp scales the cosine: step 4 of 10 at 300 s
    assert optim.lr_at(4, cfg, 300.0) == pytest.approx(0.5 * 5.5e-4)
    assert optim.lr_at(0, cfg, 0.0) == pytest.approx(1e-4)
    assert optim.lr_at(50, cfg, 600.0) == pytest.approx(1e-4)
    assert optim.lr_at(50, cfg, 900.0) == pytest.approx(1e-4)  # past the budget: min_lr
    no_warmup = config.apply(cfg, {"warmup_steps": 0}, "test")
    assert optim.lr_at(0, no_warmup, 0.0) == pytest.approx(1e-3)


def test_muon_takes_the_decoder_block_matrices_and_adamw_everything_else(tiny_encoder_dir):
    cfg = config.load_config(None, {"text_encoder_name": tiny_encoder_dir, "decoder_d_model": 64,
                                    "decoder_n_layer": 2, "decoder_n_head": 2, "mel_mean": -5.0,
                                    "mel_std": 2.0, "optimizer": "muon"})
    model = FlowTTS(cfg)
    muon, adamw = optim.build_optimizers(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    in_muon = [names[id(p)] for group in muon.param_groups for p in group["params"]]
    in_adamw = [names[id(p)] for group in adamw.param_groups for p in group["params"]]
    assert in_muon and all(n.startswith("decoder.blocks.") for n in in_muon)
    assert all(p.ndim == 2 for group in muon.param_groups for p in group["params"])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert sorted(in_muon + in_adamw) == sorted(trainable)  # each weight exactly once
    assert "decoder.out_proj.weight" in in_adamw  # 2-D, but outside the blocks
    only_adamw = optim.build_optimizers(model, config.apply(cfg, {"optimizer": "adamw"}, "t"))
    assert len(only_adamw) == 1
    assert sum(len(g["params"]) for g in only_adamw[0].param_groups) == len(trainable)
