"""trainer.py: micro-batches per step, what one step returns, a non-finite step, and the speed
switches' checks (CUDA graphs, float8)."""
import pytest
import torch

import config
from data import Collate, PreparedDataset
from model import FlowTTS
from trainer import Trainer, float8_training, grad_accum_steps


@pytest.mark.parametrize("effective, batch, world, steps", [
    (0, 4, 2, 3),  # unset: grad_accum_steps
    (32, 4, 2, 4), (8, 8, 1, 1), (24, 4, 3, 2)])
def test_micro_batches_per_step(effective, batch, world, steps):
    cfg = config.load_config(None, {"effective_batch_size": effective, "batch_size": batch,
                                    "grad_accum_steps": 3})
    assert grad_accum_steps(cfg, world) == steps


def test_an_effective_batch_that_does_not_divide_is_refused():
    cfg = config.load_config(None, {"effective_batch_size": 30, "batch_size": 4})
    with pytest.raises(config.ConfigError, match="30 is not a multiple of batch_size 4 x 2"):
        grad_accum_steps(cfg, 2)


@pytest.mark.parametrize("accum, world", [(2, 1), (1, 2)])
def test_cuda_graphs_refuse_more_than_one_micro_batch_per_gpu_step(tiny_overrides, accum, world):
    cfg = config.load_config(None, {**tiny_overrides, "compile": True, "cuda_graphs": True,
                                    "grad_accum_steps": accum})
    with pytest.raises(config.ConfigError, match=f"cuda_graphs.*{accum} micro-batch.*{world} GPU"):
        Trainer(cfg, PreparedDataset(cfg.data_dir), world, torch.device("cpu"))


def test_fp8_matmuls_refuse_a_device_without_float8(tiny_overrides):
    cfg = config.load_config(None, {**tiny_overrides, "fp8_matmuls": True})
    with pytest.raises(config.ConfigError, match="fp8_matmuls.*GPU with float8.*on cpu"):
        Trainer(cfg, PreparedDataset(cfg.data_dir), 1, torch.device("cpu"))


def test_float8_training_swaps_the_block_matmuls_but_the_fused_qkv_and_keeps_the_weights(
        tiny_overrides):
    pytest.importorskip("torchao.float8", reason="torchao (requirements.txt) is not installed")
    from torchao.float8.float8_linear import Float8Linear
    cfg = config.load_config(None, {**tiny_overrides, "mel_mean": -5.0, "mel_std": 2.0})
    model = FlowTTS(cfg)
    before = dict(model.named_parameters())
    float8_training(model.decoder)
    swapped = sorted(name.split(".", 1)[1] for name, module in model.decoder.blocks.named_modules()
                     if isinstance(module, Float8Linear))
    assert swapped == sorted(["cross_attn.q", "cross_attn.kv", "cross_attn.proj", "mlp.fc",
                              "mlp.proj", "self_attn.proj"] * cfg.decoder_n_layer)
    assert type(model.decoder.blocks[0].self_attn.q) is torch.nn.Linear
    assert type(model.decoder.in_proj) is torch.nn.Linear  # outside the blocks
    after = dict(model.named_parameters())  # the same Parameters under the same names
    assert after.keys() == before.keys() and all(after[k] is before[k] for k in before)


def micro_batches(dataset, cfg, row_groups):
    return [(0, i + 1, Collate(dataset, cfg)(rows)) for i, rows in enumerate(row_groups)]


@pytest.fixture
def trainer_and_data(tiny_overrides):
    cfg = config.load_config(None, {**tiny_overrides, "mel_mean": -5.0, "mel_std": 2.0,
                                    "optimizer": "adamw", "weight_decay": 0.0,
                                    "grad_accum_steps": 2, "text_condition_dropout": 0.0})
    dataset = PreparedDataset(cfg.data_dir)
    return Trainer(cfg, dataset, 1, torch.device("cpu")), dataset, cfg


def test_a_step_averages_its_micro_batches_and_counts_their_frames(trainer_and_data):
    trainer, dataset, cfg = trainer_and_data
    batches = micro_batches(dataset, cfg, [[0, 1], [2, 3, 4]])
    with torch.no_grad():  # the same losses before the update (no dropout: deterministic)
        expected = [trainer.model(trainer.to_device(b)).flow_loss.item() for _, _, b in batches]
    before = trainer.model.decoder.out_proj.weight.detach().clone()
    out = trainer.step(iter(batches), lr=1e-3)
    assert out.flow_loss.item() == pytest.approx(sum(expected) / 2, rel=1e-5)
    assert out.useful_frames.item() == sum(int(b.mel_mask.sum()) for _, _, b in batches)
    assert out.padded_frames == sum(b.mel_mask.numel() for _, _, b in batches)
    assert bool(out.finite) and (out.epoch, out.position) == (0, 2)
    # AdamW's first step moves every weight with a gradient by about lr
    moved = (trainer.model.decoder.out_proj.weight - before).abs()
    assert moved.max().item() == pytest.approx(1e-3, rel=0.01)


def test_a_non_finite_step_leaves_the_weights_as_they_were(trainer_and_data):
    trainer, dataset, cfg = trainer_and_data
    batches = micro_batches(dataset, cfg, [[0, 1], [2, 3]])
    batches[1][2].mel[0, 0, 0] = float("nan")
    before = [p.detach().clone() for p in trainer.trained]
    out = trainer.step(iter(batches), lr=1e-3)
    assert not bool(out.finite)
    assert all(torch.equal(p, q) for p, q in zip(trainer.trained, before))
    assert all(p.grad is None for p in trainer.trained)
