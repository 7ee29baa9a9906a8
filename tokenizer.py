"""Text -> byte ids, and the padding rules every batch follows.

ByT5 reads UTF-8 bytes: id = byte + 3, then EOS (1); 0 pads. data.py (collating a batch) and
model.py (encoding prompts, sizing sampled mels) both import from here.
"""
from __future__ import annotations

import functools

import torch

BYTE_VOCAB = 384  # ByT5: 3 special ids + 256 bytes, padded to 384


@functools.lru_cache(maxsize=1)
def _tokenizer():
    from transformers import ByT5Tokenizer
    return ByT5Tokenizer()  # byte-level: needs no vocabulary file, so no download


# Lengths are padded up to these multiples, so attention sees few distinct shapes: each new
# one costs a kernel plan (cuDNN takes ~6 ms of CPU per shape), a CUDA graph or a recompile.
TEXT_PAD_MULTIPLE = 64
MEL_PAD_MULTIPLE = 16


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def tokenize(texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """UTF-8 bytes + EOS, right-padded to the batch max rounded up to TEXT_PAD_MULTIPLE.
    Returns ids (b, l), mask (b, l) bool."""
    enc = _tokenizer()(texts, padding=True, truncation=True, max_length=max_length,
                       pad_to_multiple_of=TEXT_PAD_MULTIPLE, return_tensors="pt")
    return enc.input_ids, enc.attention_mask.bool()
