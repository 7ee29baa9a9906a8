"""Save a randomly initialised ByT5-architecture encoder to a local directory.

No model hub is needed: `--size small` is google/byt5-small's encoder architecture
(d_model 1472, 12 layers, 6 heads, d_ff 3584; Xue et al. 2022) with random weights, for
runs where the pretrained weights cannot be downloaded; `--size tiny` is a few-thousand-
parameter stand-in for tests and the CPU demo. Point `text_encoder_name` at the directory.

    python scripts/make_random_encoder.py --size tiny --out .artifacts/encoders/byt5-tiny
"""
from __future__ import annotations

import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import checks  # noqa: E402

SIZES = {
    "tiny": dict(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4),
    "small": dict(d_model=1472, d_kv=64, d_ff=3584, num_layers=12, num_heads=6),
}


def byt5_config(size: str):
    """The T5Config of a ByT5-architecture encoder of the given size (byte vocabulary)."""
    from transformers import T5Config
    return T5Config(vocab_size=384, feed_forward_proj="gated-gelu", is_encoder_decoder=False,
                    tie_word_embeddings=False, **SIZES[size])


def make_random_encoder(out_dir: str, size: str = "tiny", seed: int = 0) -> str:
    """Write config + weights to out_dir (atomically); return out_dir. A no-op if present."""
    if os.path.exists(os.path.join(out_dir, "config.json")):
        return out_dir
    import torch
    from transformers import T5EncoderModel

    torch.manual_seed(seed)
    model = T5EncoderModel(byt5_config(size))
    tmp = f"{out_dir.rstrip('/')}.tmp-{os.getpid()}"
    model.save_pretrained(tmp)
    os.makedirs(os.path.dirname(os.path.abspath(out_dir)), exist_ok=True)
    if os.path.exists(out_dir):  # another process made it meanwhile
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, out_dir)
    return out_dir


def main() -> None:
    parser = checks.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="tiny")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=checks.flag(checks.SEED), default=0)
    args = parser.parse_args()
    print(make_random_encoder(args.out, args.size, args.seed))


if __name__ == "__main__":
    sys.exit(main())
