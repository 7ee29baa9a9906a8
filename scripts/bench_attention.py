"""The decoder's attention products alone, for each kernel that could serve them (GPU):
`python scripts/bench.py --mode attention` writes one JSONL record a kernel and kind.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def bench_attention(cfg, device, batch: int, frames: int, text_tokens: int, seed: int) -> list:
    """The decoder's two attention products alone, at its head shapes, forward and
    forward + backward, for each kernel that could serve them: masked SDPA as model.Attention
    calls it (PyTorch picks the backend), each masked backend forced, FlexAttention with a
    padding block mask and packed variable-length attention (both exact), and flash with no
    mask (not exact: padded keys take part; what a mask-free layout could reach). Frames per
    row are 94-100% of `frames` (a length bucket), text tokens 50-100% of `text_tokens`.
    Errors: outputs and query gradients on the valid rows against masked SDPA."""
    heads, head_dim = cfg.decoder_n_head, cfg.decoder_d_model // cfg.decoder_n_head
    gen = torch.Generator().manual_seed(seed)
    mel_len = torch.randint(int(frames * 0.94), frames + 1, (batch,), generator=gen).to(device)
    text_len = torch.randint(text_tokens // 2, text_tokens + 1, (batch,), generator=gen).to(device)
    records = []
    for kind, keys, key_len in (("self", frames, mel_len), ("cross", text_tokens, text_len)):
        leaf = lambda n: torch.randn(batch, heads, n, head_dim, device=device,
                                     dtype=torch.bfloat16, requires_grad=True)
        q, k, v = leaf(frames), leaf(keys), leaf(keys)  # (b, heads, n or s, head_dim)
        grad = torch.randn_like(q)
        query_mask = torch.arange(frames, device=device) < mel_len[:, None]  # (b, n)
        key_mask = torch.arange(keys, device=device) < key_len[:, None]  # (b, s)
        reference = None
        for name, attend in attention_kernels(q, k, v, query_mask, key_mask).items():
            def forward_backward():
                q.grad = k.grad = v.grad = None
                attend().backward(grad)
            forward_backward()
            valid = (attend().transpose(1, 2)[query_mask].float(),
                     q.grad.transpose(1, 2)[query_mask].float())  # (rows, heads, head_dim)
            reference = reference or valid
            error = lambda i: ((valid[i] - reference[i]).norm() / reference[i].norm()).item()
            records.append({"mode": "attention", "kind": kind, "variant": name, "batch": batch,
                            "frames": frames, "keys": keys, "heads": heads, "head_dim": head_dim,
                            "fwd_ms": round(cuda_ms(attend), 3),
                            "fwd_bwd_ms": round(cuda_ms(forward_backward), 3),
                            "out_rel_err": float(f"{error(0):.2e}"),
                            "q_grad_rel_err": float(f"{error(1):.2e}")})
    return records


def attention_kernels(q, k, v, query_mask, key_mask) -> dict:
    """name -> a function computing attention (b, heads, n, head_dim) of q over k, v."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    from torch.nn.attention.varlen import varlen_attn
    b, heads, n, head_dim = q.shape
    s = k.shape[2]
    sdpa = lambda mask: F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    masked = lambda: sdpa(key_mask[:, None, None])

    def forced(backend, attend):
        def run():
            with sdpa_kernel([backend]):
                return attend()
        return run

    key_len = key_mask.sum(1)
    block_mask = create_block_mask(lambda bi, hi, qi, ki: ki < key_len[bi], b, None, n, s,
                                   device=q.device)
    flex = torch.compile(flex_attention)
    query_rows, key_rows = query_mask.flatten().nonzero()[:, 0], key_mask.flatten().nonzero()[:, 0]
    starts = lambda mask: F.pad(mask.sum(1).cumsum(0), (1, 0)).int()  # (b + 1,)
    rows = lambda x, index: x.transpose(1, 2).reshape(-1, heads, head_dim)[index]

    def packed():  # padded rows out -> packed rows in, attention, and back
        out = varlen_attn(rows(q, query_rows), rows(k, key_rows), rows(v, key_rows),
                          starts(query_mask), starts(key_mask), n, s)  # (rows, heads, head_dim)
        full = out.new_zeros(b * n, heads, head_dim).index_copy(0, query_rows, out)
        return full.view(b, n, heads, head_dim).transpose(1, 2)

    return {"sdpa_masked": masked,
            "sdpa_masked_cudnn": forced(SDPBackend.CUDNN_ATTENTION, masked),
            "sdpa_masked_efficient": forced(SDPBackend.EFFICIENT_ATTENTION, masked),
            "flex_block_mask": lambda: flex(q, k, v, block_mask=block_mask),
            "varlen_packed": packed,
            "flash_no_mask_inexact": forced(SDPBackend.FLASH_ATTENTION, lambda: sdpa(None))}


def cuda_ms(run, repeats: int = 30) -> float:
    """Median GPU milliseconds of run(), timed with CUDA events after 3 warm-up calls."""
    for _ in range(3):
        run()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times))
