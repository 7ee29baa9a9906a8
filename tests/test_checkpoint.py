"""checkpoint.py: what a checkpoint holds, loading older ones, and what a resume may change.
(Atomic writes, damaged files and full disks are in test_reliability.py.)"""
import os

import pytest
import torch

import checkpoint
import config
from model import FlowTTS


@pytest.fixture
def tiny_cfg(tiny_encoder_dir):
    return config.load_config(None, {"text_encoder_name": tiny_encoder_dir, "decoder_d_model": 64,
                                     "decoder_n_layer": 2, "decoder_n_head": 2, "mel_mean": -5.5,
                                     "mel_std": 2.0})


def test_trainable_state_leaves_out_exactly_the_frozen_encoder(tiny_cfg):
    model = FlowTTS(tiny_cfg)
    everything = model.state_dict()
    kept = checkpoint.trainable_state(model)
    encoder = [k for k in everything if k.startswith("text_encoder.t5.")]
    assert encoder and len(kept) == len(everything) - len(encoder)
    assert not any(k.startswith("text_encoder.t5.") for k in kept)
    assert sum(v.numel() for v in kept.values()) == model.parameter_counts()["trainable"] + sum(
        b.numel() for k, b in model.named_buffers() if k in kept)


def test_a_checkpoint_from_before_the_rename_loads_its_duration_weights(tiny_cfg, tmp_path):
    torch.manual_seed(1)
    source = FlowTTS(tiny_cfg)
    old_names = {k.replace("duration_predictor.", "duration.", 1): v
                 for k, v in checkpoint.trainable_state(source).items()}
    assert "duration.mlp.0.weight" in old_names
    path = str(tmp_path / "old.pt")
    torch.save({"model": old_names, "config": config.as_dict(tiny_cfg), "step": 7}, path)
    torch.manual_seed(2)  # different initial weights: only the load can make them equal
    loaded = checkpoint.model_from_checkpoint(path, "cpu")
    for key, value in source.duration_predictor.state_dict().items():
        assert torch.equal(loaded.duration_predictor.state_dict()[key], value), key
    assert torch.equal(loaded.decoder.out_proj.weight, source.decoder.out_proj.weight)


def test_weights_that_do_not_fit_are_refused_by_name(tiny_cfg):
    weights = checkpoint.trainable_state(FlowTTS(tiny_cfg))
    del weights["decoder.out_proj.weight"]
    weights["decoder.extra"] = torch.zeros(1)
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"x.pt: .*missing \['decoder.out_proj.weight'\], "
                             r"unexpected \['decoder.extra'\]"):
        checkpoint.load_weights(FlowTTS(tiny_cfg), weights, "x.pt")


def test_resume_refuses_a_shape_change_and_lists_the_others(tiny_cfg):
    saved = config.as_dict(tiny_cfg)
    changed = config.apply(tiny_cfg, {"lr": 5e-4, "batch_size": 8}, "test")
    assert checkpoint.check_compatible(saved, changed) == [
        f"batch_size: {tiny_cfg.batch_size!r} -> 8", f"lr: {tiny_cfg.lr!r} -> 0.0005"]
    wider = config.apply(tiny_cfg, {"decoder_d_model": 128}, "test")
    with pytest.raises(checkpoint.CheckpointError, match="decoder_d_model 64 -> 128"):
        checkpoint.check_compatible(saved, wider)


def test_save_and_load_latest_round_trip_the_step(tiny_cfg, tmp_path):
    weights = checkpoint.trainable_state(FlowTTS(tiny_cfg))
    for step in (10, 20):
        checkpoint.save(str(tmp_path), {"model": weights, "config": {}, "step": step}, keep=2)
    assert sorted(os.listdir(tmp_path)) == ["latest.pt", "step_00000010.pt"]
    state = checkpoint.load_latest(str(tmp_path))
    assert state["step"] == 20
    assert torch.equal(state["model"]["decoder.out_proj.weight"], weights["decoder.out_proj.weight"])
