import pytest
import torch
import torch.nn.functional as F

import config
from data import Collate, PreparedDataset, TextFeatureCache
from model import Attention, FlowTTS, decoder_flops_per_frame, rope_rotation
from tokenizer import tokenize


@pytest.fixture
def tiny(tiny_overrides):
    cfg = config.load_config(None, {**tiny_overrides, "mel_mean": -5.0, "mel_std": 2.0})
    torch.manual_seed(0)
    return FlowTTS(cfg), cfg


def test_loss_shapes_and_frozen_encoder_gets_no_grads(tiny, tiny_dataset):
    model, cfg = tiny
    batch = Collate(PreparedDataset(tiny_dataset), cfg)([0, 1, 2])
    result = model(batch)
    assert result.loss.shape == () and torch.isfinite(result.loss)
    result.loss.backward()
    t5 = list(model.text_encoder.t5.parameters())
    assert t5 and all(p.grad is None and not p.requires_grad for p in t5)
    assert model.decoder.out_proj.weight.grad is not None
    assert model.duration_predictor.mlp[0].weight.grad.abs().sum() > 0
    model.train()
    assert not model.text_encoder.t5.training  # frozen encoder stays in eval mode


def test_cached_text_features_give_bit_identical_loss(tiny, tiny_dataset):
    model, cfg = tiny
    dataset = PreparedDataset(tiny_dataset)
    cache = TextFeatureCache(model.encode_texts, dataset.texts, batch_size=3)
    for rows in ([0, 4, 7], [5, 1]):
        batch = Collate(dataset, cfg)(rows)
        on_the_fly = model(batch)
        batch.text_hidden = cache.gather(batch.rows, batch.text_ids.shape[1])
        cached = model(batch)
        assert torch.equal(on_the_fly.loss, cached.loss)
        assert torch.equal(on_the_fly.duration_loss, cached.duration_loss)


def test_text_dropout_uses_the_null_condition(tiny, tiny_dataset):
    model, cfg = tiny
    batch = Collate(PreparedDataset(tiny_dataset), cfg)([0, 1])
    hidden = model.text_encoder(batch.text_ids, batch.text_mask)
    text, mask = model._drop_text(hidden, batch.text_mask, torch.tensor([True, False]))
    assert mask[0].sum() == 1 and torch.equal(mask[1], batch.text_mask[1])
    null = model.text_encoder(*tokenize([""], cfg.max_text_length))
    assert torch.equal(text[0, 0], null[0, 0]) and torch.equal(text[1], hidden[1])


def test_sample_shapes_seed_and_oracle_frames(tiny):
    model, _ = tiny
    model.eval()
    mel, frames = model.sample(["hello there", "a second prompt"], steps=3, cfg_scale=2.0,
                               seed=1, n_frames=[40, 25])
    assert mel.shape == (2, 40, 80) and frames.tolist() == [40, 25]
    assert torch.all(mel[1, 25:] == -11.512925465) or torch.allclose(
        mel[1, 25:], torch.full_like(mel[1, 25:], -11.5129), atol=1e-3)
    again, _ = model.sample(["hello there"], steps=3, cfg_scale=2.0, seed=1, n_frames=[40])
    assert torch.allclose(again[0], mel[0], atol=1e-5)  # same seed, same prompt: same mel
    other, _ = model.sample(["hello there"], steps=3, cfg_scale=2.0, seed=2, n_frames=[40])
    assert not torch.allclose(other[0], mel[0])


def test_sway_spends_more_euler_steps_near_the_noise_end(tiny, monkeypatch):
    model, _ = tiny
    model.eval()
    grids = []
    monkeypatch.setattr(model, "_integrate", lambda x, grid, *rest: grids.append(grid) or x)
    for sway in (0.0, -1.0):
        model.sample(["hello"], steps=8, n_frames=[16], sway=sway)
    uniform, swayed = grids
    assert torch.allclose(uniform, torch.linspace(0, 1, 9))
    assert swayed[0] == 0 and swayed[-1] == pytest.approx(1) and torch.all(swayed.diff() > 0)
    assert swayed[1] < uniform[1] / 2  # the first step, out of pure noise, is much shorter
    with pytest.raises(ValueError, match="sway"):
        model.sample(["hello"], steps=2, n_frames=[16], sway=1.5)


def test_compiled_training_blocks_share_one_graph_and_match_eager(tiny):
    model, cfg = tiny
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    eager = FlowTTS(cfg)
    eager.load_state_dict(model.state_dict())
    model.compile_decoder()
    for n, l in ((24, 9), (40, 13)):  # two lengths: dynamic shapes, no recompilation
        x, t = torch.randn(2, n, cfg.n_mels), torch.rand(2)
        text, text_mask = torch.randn(2, l, cfg.decoder_d_model), torch.ones(2, l, dtype=torch.bool)
        mel_mask = torch.arange(n)[None] < torch.tensor([[n], [n - 5]])
        outs = [m.decoder(x, t, text, text_mask, mel_mask) for m in (model, eager)]
        assert torch.allclose(outs[0], outs[1], atol=1e-4)
        outs[0].square().mean().backward()
    # each block compiled on its own (not the decoder as one graph), all blocks one graph
    assert model.decoder._compiled_call_impl is None
    assert all(block._compiled_call_impl is not None for block in model.decoder.blocks)
    assert cfg.decoder_n_layer > 1 and torch._dynamo.utils.counters["stats"]["unique_graphs"] == 1


def test_flops_per_frame_hand_count():
    cfg = config.load_config(None, {"decoder_d_model": 8, "decoder_n_layer": 2, "decoder_n_head": 2})
    n, l, d = 10, 5, 8
    # per block per frame (multiply-adds): q,k,v,o 4d^2 + cross q,o 2d^2 + cross k,v 2d^2*l/n
    # + SwiGLU (d*8d + 4d*d) + attention products 2nd + 2ld
    macs = 4 * 64 + 2 * 64 + 2 * 64 * l / n + 12 * 64 + 2 * n * d + 2 * l * d
    expected_forward = 2 * (2 * macs + 2 * 80 * d)  # 2 blocks; in and out projections
    flops = decoder_flops_per_frame(cfg, n, l)
    assert flops["forward"] == pytest.approx(expected_forward)
    assert flops["train"] == pytest.approx(3 * expected_forward)
    seed_shape = decoder_flops_per_frame(config.TrainConfig(), 570, 100)["train"]
    assert 0.9e9 < seed_shape < 1.1e9  # the seed-shaped decoder: about 1 GFLOP per frame


def test_a_prompts_sample_does_not_depend_on_its_batch(tiny):
    model, _ = tiny
    model.eval()
    # Row 1 is the same prompt, seed and length; its partner and the padded length differ.
    with_long, _ = model.sample(["a much longer partner prompt", "hello"], steps=3, seed=4,
                                n_frames=[70, 30])
    with_short, _ = model.sample(["hi", "hello"], steps=3, seed=4, n_frames=[12, 30])
    assert with_long.shape[1] == 70 and with_short.shape[1] == 30
    assert torch.allclose(with_long[1, :30], with_short[1, :30], atol=1e-4)
    assert not torch.allclose(with_long[0, :12], with_short[0, :12], atol=1e-2)


def test_bf16_decoder_weights_match_autocast_exactly(tiny):
    """Sampling on a GPU stores the decoder's Linear weights in bf16: the decoder must give the
    same output as under bf16 autocast with fp32 weights (checked with CPU autocast)."""
    model, cfg = tiny
    model.eval()
    b, n, l, d = 2, 24, 8, cfg.decoder_d_model
    x, t = torch.randn(b, n, cfg.n_mels), torch.rand(b)
    text, text_mask = torch.randn(b, l, d), torch.ones(b, l, dtype=torch.bool)
    mel_mask = torch.arange(n)[None] < torch.tensor([[n], [n - 7]])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        reference = model.decoder(x, t, text, text_mask, mel_mask)
        model.bf16_decoder_weights()
        cast_once = model.decoder(x, t, text, text_mask, mel_mask)
    assert model.decoder.blocks[0].mlp.fc.weight.dtype == torch.bfloat16
    assert model.decoder.blocks[0].self_norm.weight.dtype == torch.float32  # norms stay fp32
    assert torch.equal(reference, cast_once)


def plain_attention(attn, x, memory, key_mask, q_angles, k_angles):
    """model.Attention written the plain way: separate q and kv projections, heads moved to dim 1
    first, and RoPE as a complex rotation of (x[2i], x[2i+1]) by e^(i angle)."""
    b, n, d = x.shape
    heads = lambda y: y.view(b, y.shape[1], attn.n_head, -1).transpose(1, 2)
    rotate = lambda y, angles: torch.view_as_real(
        torch.view_as_complex(y.unflatten(-1, (-1, 2)).contiguous())
        * torch.polar(torch.ones_like(angles), angles)).flatten(-2)
    k, v = attn.kv(memory).chunk(2, dim=-1)
    y = F.scaled_dot_product_attention(rotate(heads(attn.q(x)), q_angles),
                                       rotate(heads(k), k_angles), heads(v),
                                       attn_mask=key_mask[:, None, None, :])
    return attn.proj(y.transpose(1, 2).reshape(b, n, d))


@pytest.mark.parametrize("is_self", [True, False])
def test_attention_computes_the_plain_function_with_the_seed_parameters(is_self):
    """Self-attention's one q/k/v matmul and RoPE in (b, n, heads, head_dim) order give the
    plain form's outputs and gradients; the parameters keep the seed's names and shapes, so
    older checkpoints load and Muon orthogonalizes the same matrices."""
    torch.manual_seed(0)
    d, heads, b, n, s = 32, 4, 2, 12, 7
    attn = Attention(d, heads, 0.0, is_self=is_self)
    assert {k: tuple(v.shape) for k, v in attn.state_dict().items()} == {
        "q.weight": (d, d), "kv.weight": (2 * d, d), "proj.weight": (d, d)}
    x = torch.randn(b, n, d, requires_grad=True)
    memory = x if is_self else torch.randn(b, s, d)
    keys = memory.shape[1]
    key_mask = torch.arange(keys)[None] < torch.tensor([[keys], [keys - 3]])
    positions = torch.rand(b, max(n, keys)) * 50
    head_dim = d // heads
    rotation = lambda m: rope_rotation(positions[:, :m], head_dim, 1e4)
    inv_freq = 1e4 ** (-torch.arange(0, head_dim, 2) / head_dim)
    angles = lambda m: (positions[:, :m, None] * inv_freq)[:, None]  # (b, 1, m, head_dim / 2)
    grad_out = torch.randn(b, n, d)
    results = []
    for forward in (lambda: attn(x, memory, key_mask, rotation(n), rotation(keys)),
                    lambda: plain_attention(attn, x, memory, key_mask, angles(n), angles(keys))):
        attn.zero_grad()
        x.grad = None
        out = forward()
        out.backward(grad_out)
        results.append([out, x.grad, attn.q.weight.grad, attn.kv.weight.grad])
    for fast, plain in zip(*results):
        assert torch.allclose(fast, plain, atol=1e-5, rtol=1e-4)
    assert results[0][0].abs().mean() > 0.01  # a real output, not zeros on both sides
