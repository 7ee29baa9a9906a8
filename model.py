"""The TTS model: frozen ByT5 text encoder, duration predictor, Transformer mel flow decoder.

It owns its training loss (conditional flow matching, Lipman et al. 2023, with the
rectified-flow path x_t = (1 - t) noise + t data: the whole objective is written out in
FlowTTS.forward, whose random draws come from data.py) and its sampler (Euler steps with
classifier-free guidance, Ho & Salimans 2022). Everyone else calls `forward` and `sample`.

Shape letters: b batch, n mel frames, m mel bands, l text tokens (UTF-8 bytes + EOS),
h text-encoder width, d decoder width.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

import audio
from config import check_sway
from tokenizer import BYTE_VOCAB, MEL_PAD_MULTIPLE, TEXT_PAD_MULTIPLE, round_up, tokenize

class TextEncoder(nn.Module):
    """Frozen ByT5 encoder (`text_encoder: byt5`) or a trained byte embedding (ablation)."""

    def __init__(self, cfg):
        super().__init__()
        self.frozen = cfg.text_encoder == "byt5"
        self.padded_length = round_up(cfg.max_text_length, TEXT_PAD_MULTIPLE)
        if self.frozen:
            from transformers import T5EncoderModel
            self.t5 = T5EncoderModel.from_pretrained(cfg.text_encoder_name)
            self.t5.requires_grad_(False).eval()
            self.width = self.t5.config.d_model
        else:
            self.embedding = nn.Embedding(BYTE_VOCAB, cfg.decoder_d_model)
            self.width = cfg.decoder_d_model

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.t5.eval()  # a frozen encoder never runs dropout
        return self

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """ids, mask (b, l) -> text_hidden (b, l, h)."""
        if not self.frozen:
            return self.embedding(ids)
        # Pad to a fixed length so every row is computed the same way whatever the batch:
        # this makes cached features bit-identical to features computed on the fly.
        pad = self.padded_length - ids.shape[1]
        with torch.no_grad():
            hidden = self.t5(input_ids=F.pad(ids, (0, pad)),
                             attention_mask=F.pad(mask, (0, pad)).long()).last_hidden_state
        return hidden[:, : ids.shape[1]].float()


class RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), eps=1e-6)  # fused in bf16


def rope_rotation(positions: torch.Tensor, head_dim: int,
                  theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions (b, n) float -> (cos, sin) of the rotation angles, each (b, n, 1, head_dim / 2)
    (Su et al. 2021). Computed once per decoder forward: every block rotates by the same angles."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device) / head_dim)
    angles = (positions.float()[..., None] * inv_freq)[:, :, None]
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of x (b, n, heads, head_dim) by rotation = (cos, sin)."""
    cos, sin = rotation
    x1, x2 = x.float()[..., 0::2], x.float()[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2).type_as(x)


class Attention(nn.Module):
    """Multi-head attention with RoPE on queries and keys; self- or cross-attention."""

    def __init__(self, d: int, n_head: int, dropout: float, is_self: bool):
        super().__init__()
        self.n_head, self.dropout, self.is_self = n_head, dropout, is_self
        self.q = nn.Linear(d, d, bias=False)
        self.kv = nn.Linear(d, 2 * d, bias=False)
        self.proj = nn.Linear(d, d, bias=False)

    def forward(self, x, memory, key_mask, q_rotation, k_rotation):
        """x (b, n, d), memory (b, s, d) (x if self), key_mask (b, s) bool -> (b, n, d)."""
        b, n, d = x.shape
        # Rotated in (b, n or s, heads, head_dim) order, q makes the attention kernel write its
        # output in that order too: the output projection reads it without a transposing copy.
        heads = lambda y: y.view(b, y.shape[1], self.n_head, -1)
        if self.is_self:  # one matmul for q, k, v: the same function, one kernel for three
            q, k, v = F.linear(x, torch.cat([self.q.weight, self.kv.weight])).split(d, dim=-1)
        else:
            q, (k, v) = self.q(x), self.kv(memory).chunk(2, dim=-1)
        q, k = apply_rope(heads(q), q_rotation), apply_rope(heads(k), k_rotation)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), heads(v).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :],
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class SwiGLU(nn.Module):
    """d -> 2 x 4d gated -> d, as in the seed (Shazeer 2020)."""

    def __init__(self, d: int):
        super().__init__()
        self.fc = nn.Linear(d, 8 * d, bias=False)
        self.proj = nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        a, b = self.fc(x).chunk(2, dim=-1)
        return self.proj(F.silu(a) * b)


class DecoderBlock(nn.Module):
    """Self-attention, text cross-attention, MLP; pre-RMSNorm residuals. The timestep
    modulates the self-attention and MLP branches (shift, scale, gate), adaLN-single style
    (PixArt-alpha, Chen et al. 2023): one shared projection plus a learned per-block offset."""

    def __init__(self, d: int, n_head: int, dropout: float):
        super().__init__()
        self.self_norm, self.cross_norm, self.mlp_norm = RMSNorm(d), RMSNorm(d), RMSNorm(d)
        self.self_attn = Attention(d, n_head, dropout, is_self=True)
        self.cross_attn = Attention(d, n_head, dropout, is_self=False)
        self.mlp = SwiGLU(d)
        self.modulation_offset = nn.Parameter(torch.zeros(6, d))

    def forward(self, x, t_mod, text, text_mask, mel_mask, mel_rotation, text_rotation):
        shift1, scale1, gate1, shift2, scale2, gate2 = (t_mod + self.modulation_offset).unbind(1)
        h = self.self_norm(x) * (1 + scale1[:, None]) + shift1[:, None]
        x = x + gate1[:, None] * self.self_attn(h, h, mel_mask, mel_rotation, mel_rotation)
        x = x + self.cross_attn(self.cross_norm(x), text, text_mask, mel_rotation, text_rotation)
        h = self.mlp_norm(x) * (1 + scale2[:, None]) + shift2[:, None]
        return x + gate2[:, None] * self.mlp(h)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t (b,) in [0, 1] -> sinusoidal features (b, dim) (Vaswani et al. 2017)."""
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, device=t.device) / (dim // 2))
    angles = 1000.0 * t.float()[:, None] * freqs
    return torch.cat([angles.cos(), angles.sin()], dim=-1)


class MelDecoder(nn.Module):
    """Predicts the flow velocity for normalized log-mels x_t (b, n, m) at time t (b,)."""

    def __init__(self, cfg):
        super().__init__()
        d = cfg.decoder_d_model
        self.d, self.head_dim, self.rope_theta = d, d // cfg.decoder_n_head, cfg.rope_theta
        self.in_proj = nn.Linear(cfg.n_mels, d)
        self.t_mlp = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.t_modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        nn.init.zeros_(self.t_modulation[1].weight)  # blocks start as plain pre-norm residuals
        nn.init.zeros_(self.t_modulation[1].bias)
        # Added to the modulation so the gates start at 1. A buffer, not a tensor made in
        # forward: building one from a list copies it to the GPU and waits for the GPU.
        self.register_buffer("gate_offset", torch.tensor([0.0, 0, 1, 0, 0, 1])[:, None],
                             persistent=False)
        self.blocks = nn.ModuleList(DecoderBlock(d, cfg.decoder_n_head, cfg.decoder_dropout)
                                    for _ in range(cfg.decoder_n_layer))
        self.norm = RMSNorm(d)
        self.out_proj = nn.Linear(d, cfg.n_mels)

    def forward(self, x_t, t, text, text_mask, mel_mask, rotations=None):
        """x_t (b, n, m), t (b,), text (b, l, d), masks (b, l) / (b, n) bool -> (b, n, m)."""
        t_emb = self.t_mlp(timestep_embedding(t, self.d).to(x_t.dtype))  # (b, d)
        t_mod = self.t_modulation(t_emb).view(-1, 6, self.d) + self.gate_offset.to(t_emb.dtype)
        mel_rotation, text_rotation = rotations or self.rotations(text_mask, mel_mask)
        h = self.in_proj(x_t) + t_emb[:, None]
        for block in self.blocks:
            h = block(h, t_mod, text, text_mask, mel_mask, mel_rotation, text_rotation)
        return self.out_proj(self.norm(h))

    def rotations(self, text_mask, mel_mask):
        """RoPE (cos, sin) for mel frames 0..n-1 and for text tokens spread over the same span
        (token j of l at j * n_frames / l): zero relative rotation marks a monotonic alignment's
        diagonal, a prior for cross-attention. The sampler passes them to forward, computed once
        for all its steps: a compiled decoder would recompute them in every block's kernels."""
        n_frames = mel_mask.sum(1, keepdim=True).float()  # (b, 1)
        n_tokens = text_mask.sum(1, keepdim=True).float().clamp(min=1)
        positions = lambda n: torch.arange(n, device=mel_mask.device)[None].float()  # (1, n)
        mel_pos, text_pos = positions(mel_mask.shape[1]), positions(text_mask.shape[1])
        text_pos = text_pos * n_frames / n_tokens
        return (rope_rotation(mel_pos, self.head_dim, self.rope_theta),
                rope_rotation(text_pos, self.head_dim, self.rope_theta))


class DurationPredictor(nn.Module):
    """log seconds = log(n_tokens) + MLP(masked mean of text features): the MLP predicts the
    log speaking time per byte, since a mean-pooled vector alone forgets the text's length."""

    def __init__(self, width: int, hidden: int = 256):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, text_hidden, text_mask):
        """(b, l, h), (b, l) -> log_duration (b,) in log seconds."""
        weights = text_mask.float()[..., None]
        n_tokens = weights.sum(1).clamp(min=1)  # (b, 1)
        pooled = (text_hidden.float() * weights).sum(1) / n_tokens
        return (n_tokens.log() + self.mlp(pooled.to(self.mlp[0].weight.dtype)).float()).squeeze(1)


@dataclass
class LossResult:
    loss: torch.Tensor  # what backward() sees
    flow_loss: torch.Tensor
    duration_loss: torch.Tensor
    predicted_seconds: torch.Tensor  # batch means, for logging
    true_seconds: torch.Tensor


class FlowTTS(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.text_encoder = TextEncoder(cfg)
        self.text_proj = nn.Linear(self.text_encoder.width, cfg.decoder_d_model, bias=False)
        self.duration_predictor = DurationPredictor(self.text_encoder.width)
        self.decoder = MelDecoder(cfg)
        null_ids, null_mask = tokenize([""], cfg.max_text_length)  # EOS only: the CFG null text
        self.register_buffer("null_ids", null_ids, persistent=False)
        self.register_buffer("null_mask", null_mask, persistent=False)

    def encode_texts(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> text_hidden (b, l, h), mask (b, l), on the model's device."""
        ids, mask = tokenize(texts, self.cfg.max_text_length)
        ids, mask = ids.to(self.null_ids.device), mask.to(self.null_ids.device)
        return self.text_encoder(ids, mask), mask

    def forward(self, batch) -> LossResult:
        """The training objective for a data.Batch: conditional flow matching + duration loss.

        For data x1 (the normalized mel), noise x0 ~ N(0, I) and a time t in (0, 1), the
        rectified-flow path and its velocity are
            x_t = (1 - t) x0 + t x1,    v = x1 - x0,
        and flow_loss is |decoder(x_t, t, text) - v|^2 over each utterance's valid frames,
        averaged per utterance, then over the batch. x0, t ~ sigmoid(N(timestep_logit_mean,
        timestep_logit_std)) and the text dropout (rows trained on the null text, for CFG)
        are drawn in data.Collate.utterance, from seeds of (seed, epoch, utterance), so a
        resumed or DDP-split run draws the same numbers; the interpolation and the loss are
        here. duration_loss is the MSE of the predicted log seconds;
        loss = flow_loss + lambda_duration * duration_loss."""
        cfg = self.cfg
        text_hidden = batch.text_hidden if batch.text_hidden is not None else \
            self.text_encoder(batch.text_ids, batch.text_mask)
        log_duration = self.duration_predictor(text_hidden, batch.text_mask)
        true_seconds = batch.mel_mask.sum(1).float() / audio.FRAMES_PER_SECOND
        duration_loss = F.mse_loss(log_duration, true_seconds.log())

        text, text_mask = self._drop_text(text_hidden, batch.text_mask, batch.drop_text)
        data = audio.normalize(batch.mel, cfg.mel_mean, cfg.mel_std)  # (b, n, m)
        t = batch.t[:, None, None]
        x_t = (1 - t) * batch.noise + t * data
        velocity = self.decoder(x_t, batch.t, self.text_proj(text), text_mask, batch.mel_mask)
        valid = batch.mel_mask.float()[..., None]
        # Each utterance weighs the same, so a batch split over ranks averages exactly as one.
        per_utt = ((velocity.float() - (data - batch.noise)) ** 2 * valid).sum((1, 2)) / (
            valid.sum((1, 2)) * data.shape[-1])
        flow_loss = per_utt.mean()
        return LossResult(flow_loss + cfg.lambda_duration * duration_loss, flow_loss.detach(),
                          duration_loss.detach(), log_duration.exp().mean().detach(),
                          true_seconds.mean().detach())

    def _drop_text(self, text_hidden, text_mask, drop):
        """Replace dropped rows by the empty text's features (EOS only): the CFG null condition.
        A select, not a branch on drop.any(): the step never waits on the GPU."""
        null_hidden = F.pad(self._null_features()[:, :1], (0, 0, 0, text_hidden.shape[1] - 1))
        null_mask = torch.zeros_like(text_mask[:1])
        null_mask[:, 0] = True
        keep = ~drop[:, None]  # (b, 1)
        return (torch.where(keep[..., None], text_hidden, null_hidden.to(text_hidden.dtype)),
                torch.where(keep, text_mask, null_mask))

    def _null_features(self) -> torch.Tensor:
        """The empty text's encoder features (1, l, h). A frozen encoder's are computed once
        per device; running ByT5 on them every step cost a whole encoder forward."""
        if not self.text_encoder.frozen:
            return self.text_encoder(self.null_ids, self.null_mask)  # trained: changes each step
        cached = getattr(self, "_null_cache", None)
        if cached is None or cached.device != self.null_ids.device:
            self._null_cache = cached = self.text_encoder(self.null_ids, self.null_mask)
        return cached

    @torch.no_grad()
    def predict_frames(self, text_hidden, text_mask, duration_scale: float = 1.0):
        seconds = self.duration_predictor(text_hidden, text_mask).exp() * duration_scale
        return (seconds * audio.FRAMES_PER_SECOND).round().clamp(1, self.cfg.block_size).long()

    @torch.no_grad()
    def sample(self, texts: list[str], steps: int = 32, cfg_scale: float = 2.0, seed: int = 0,
               duration_scale: float = 1.0, n_frames: list[int] | None = None,
               sway: float = -1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """texts -> (log-mel (b, n, m) denormalized, n_frames (b,)). Euler from t=0 (noise) to 1.

        cfg_scale w: v = v_null + w (v_text - v_null); w = 1 is plain conditional sampling.
        sway < 0 spends more steps near the noise end (F5-TTS, Chen et al. 2024)."""
        check_sway(sway, "sway")
        device = self.null_ids.device
        text_hidden, mask = self.encode_texts(texts)
        frames = (torch.tensor(n_frames, device=device) if n_frames is not None
                  else self.predict_frames(text_hidden, mask, duration_scale))
        # Each row's noise covers only its own frames, so a prompt's sample does not depend on
        # the other prompts in the batch (or on the padding).
        b, n = len(texts), round_up(int(frames.max()), MEL_PAD_MULTIPLE)
        mel_mask = torch.arange(n, device=device)[None] < frames[:, None]
        x = torch.zeros(b, n, self.cfg.n_mels)
        for i, length in enumerate(frames.tolist()):
            x[i, :length] = torch.randn(length, self.cfg.n_mels,
                                        generator=torch.Generator().manual_seed(seed + i))
        x = x.to(device)
        text = self.text_proj(text_hidden)
        if cfg_scale != 1.0:  # null rows after the conditional ones
            null_text, null_mask = self._drop_text(text_hidden, mask, mask.new_ones(b))
            text, mask = torch.cat([text, self.text_proj(null_text)]), torch.cat([mask, null_mask])
        grid = torch.linspace(0, 1, steps + 1, device=device)
        grid = grid + sway * (torch.cos(math.pi / 2 * grid) - 1 + grid)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.samples_in_bf16):
            x = self._integrate(x, grid, text, mask, mel_mask, cfg_scale)
        mel = audio.denormalize(x, self.cfg.mel_mean, self.cfg.mel_std)
        n_max = int(frames.max())
        return mel.masked_fill(~mel_mask[..., None], audio.SILENCE_LOGMEL)[:, :n_max], frames

    def _integrate(self, x, grid, text, mask, mel_mask, cfg_scale):
        """Euler steps along `grid`; CFG rows batched with the conditional ones in one forward."""
        guided = cfg_scale != 1.0
        mel_mask = torch.cat([mel_mask, mel_mask]) if guided else mel_mask
        rotations = self.decoder.rotations(mask, mel_mask)  # the same at every step
        for i in range(len(grid) - 1):
            torch.compiler.cudagraph_mark_step_begin()  # each step's output is used up at once
            t = grid[i].expand(mel_mask.shape[0])
            velocity = self.decoder(torch.cat([x, x]) if guided else x, t, text, mask,
                                    mel_mask, rotations).float()
            if guided:
                v_text, v_null = velocity.chunk(2)
                velocity = v_null + cfg_scale * (v_text - v_null)
            x = x + (grid[i + 1] - grid[i]) * velocity
        return x

    def compile_decoder(self, sampling: bool = False, cuda_graphs: bool = False) -> None:
        """torch.compile with dynamic shapes: one graph serves every length. Training compiles
        each block on its own: the blocks share one graph, compiled in a fifth of the time of a
        whole-decoder graph; cuda_graphs replays each block's kernels, forward and backward, as
        one CUDA graph per padded shape. Sampling compiles the whole decoder and replays CUDA
        graphs (one per padded length): at batch 1 launching a step's kernels takes longer than
        running them."""
        if sampling:
            self.decoder.compile(dynamic=True, mode="reduce-overhead")
        else:
            for block in self.decoder.blocks:
                block.compile(dynamic=True, mode="reduce-overhead" if cuda_graphs else None)

    @property
    def samples_in_bf16(self) -> bool:
        """Sampling runs under bf16 autocast: on a GPU, with dtype bf16."""
        return self.null_ids.device.type == "cuda" and self.cfg.dtype == "bf16"

    def bf16_decoder_weights(self) -> None:
        """Sampling under bf16 autocast (GPU): store the decoder's Linear weights in bf16, the
        values autocast would cast them to on every call (inference only: no fp32 masters)."""
        for module in self.decoder.modules():
            if isinstance(module, nn.Linear):
                module.to(torch.bfloat16)

    def parameter_counts(self) -> dict[str, int]:
        count = lambda module: sum(p.numel() for p in module.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"text_encoder": count(self.text_encoder), "text_proj": count(self.text_proj),
                "duration_predictor": count(self.duration_predictor),
                "decoder": count(self.decoder),
                "trainable": trainable, "frozen": count(self) - trainable}


def decoder_flops_per_frame(cfg, mel_frames: float, text_tokens: float) -> dict[str, float]:
    """Matmul FLOPs per mel frame (2 per multiply-add) of the decoder for an utterance of
    `mel_frames` frames and `text_tokens` tokens. Per block and frame: self-attention q,k,v,o
    4d^2, cross-attention q,o 2d^2 (+ k,v 2d^2 per text token), SwiGLU 12d^2, and the two
    attention products 2nd (self) and 2ld (cross). Training = forward + 2x for backward."""
    d, n_layer = cfg.decoder_d_model, cfg.decoder_n_layer
    per_block = 2 * (18 * d * d + 2 * d * d * text_tokens / mel_frames
                     + 2 * mel_frames * d + 2 * text_tokens * d)
    forward = n_layer * per_block + 2 * 2 * cfg.n_mels * d
    return {"forward": forward, "train": 3 * forward}
