"""Parameters per part and decoder FLOPs per mel frame of a config, without loading weights.

    python scripts/model_size.py --config configs/ljspeech.yaml --flops [--key value ...]
    python scripts/model_size.py --config configs/demo.yaml --json_out size.json

The model is built on the meta device (shapes only: no memory, no download). The frozen
encoder is built from its config alone: a local directory's config.json, else the Hugging
Face cache, else, for google/byt5-small, its published architecture (the output says which).
FLOPs per frame are model.decoder_flops_per_frame, the figure train.py and scripts/bench.py
turn into TFLOP/s and MFU, at LJSpeech-average lengths (570 frames = 6.6 s, 100 ByT5 tokens)
unless --frames / --text_tokens say otherwise.
"""
from __future__ import annotations

import json
import os
import sys
from unittest import mock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "scripts"))
import torch  # noqa: E402

import checks  # noqa: E402
import config as config_lib  # noqa: E402
from make_random_encoder import byt5_config  # noqa: E402
from model import FlowTTS, decoder_flops_per_frame  # noqa: E402

PUBLISHED = {"google/byt5-small": "small"}  # hub name -> make_random_encoder size, same shapes
PARTS = (("text_encoder", "text encoder"), ("text_proj", "text projection"),
         ("duration_predictor", "duration predictor"), ("decoder", "decoder"))


def encoder_config(name: str):
    """(T5Config, where it came from) for a local directory or a hub name; never downloads
    weights. A hub name is looked up in the local cache first: offline, the hub's retries
    would take half a minute before failing."""
    from transformers import T5Config
    if os.path.isdir(name):
        return T5Config.from_pretrained(name), f"{name}/config.json"
    try:
        return T5Config.from_pretrained(name, local_files_only=True), f"{name} (local cache)"
    except OSError:
        pass
    if name in PUBLISHED:  # ByT5 paper (Xue et al. 2022) / the hub's config.json
        where = f"published {name} architecture (not in the local cache)"
        return byt5_config(PUBLISHED[name]), where
    try:
        return T5Config.from_pretrained(name), f"{name} (hub)"
    except OSError as exc:
        reason = str(exc).splitlines()[0]
        raise config_lib.ConfigError(f"text_encoder_name {name!r}: cannot read its config "
                                     f"({reason}); give a local directory") from None


def meta_model(cfg) -> tuple[FlowTTS, str]:
    """FlowTTS with every tensor on the meta device; the encoder built from its config (FlowTTS
    would load its weights by name, which is all this script avoids)."""
    if cfg.text_encoder != "byt5":
        with torch.device("meta"):
            return FlowTTS(cfg), "trained byte embedding (no pretrained encoder)"
    from transformers import T5EncoderModel
    t5_config, source = encoder_config(cfg.text_encoder_name)
    build = lambda name, **kwargs: T5EncoderModel(t5_config)
    with torch.device("meta"), mock.patch.object(T5EncoderModel, "from_pretrained", build):
        return FlowTTS(cfg), source


def model_size(cfg, flops: bool, frames: float, text_tokens: float) -> dict:
    model, source = meta_model(cfg)
    counts = model.parameter_counts()
    result = {"parameters": {**counts, "total": counts["trainable"] + counts["frozen"]},
              "encoder_frozen": model.text_encoder.frozen, "encoder_config": source}
    if flops:
        per_frame = decoder_flops_per_frame(cfg, frames, text_tokens)
        result.update(frames=frames, text_tokens=text_tokens, flops_per_frame=per_frame,
                      flops_per_utterance={k: v * frames for k, v in per_frame.items()})
    return result


def table(result: dict) -> str:
    p = result["parameters"]
    lines = [f"encoder config: {result['encoder_config']}", f"{'part':<30}{'parameters':>15}"]
    for key, label in PARTS:
        frozen = key == "text_encoder" and result["encoder_frozen"]
        lines.append(f"{label + (' (frozen)' if frozen else ''):<30}{p[key]:>15,}")
    lines += [f"{key:<30}{p[key]:>15,}" for key in ("trainable", "frozen", "total")]
    if "flops_per_frame" in result:
        f, u = result["flops_per_frame"], result["flops_per_utterance"]
        lines += ["", f"decoder matmul FLOPs at {result['frames']:g} frames, "
                      f"{result['text_tokens']:g} text tokens per utterance",
                  f"{'':<30}{'GFLOP/frame':>15}{'GFLOP/utterance':>18}"]
        for key, label in (("forward", "forward"), ("train", "training step (fwd + bwd)")):
            lines.append(f"{label:<30}{f[key] / 1e9:>15.4g}{u[key] / 1e9:>18.1f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = checks.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     epilog="other --key value pairs override the config")
    parser.add_argument("--config", help="YAML config (default: config.py's defaults)")
    parser.add_argument("--flops", action="store_true", help="also the decoder FLOPs per frame")
    positive = checks.flag(checks.Limit(float, 0, low_open=True))
    parser.add_argument("--frames", type=positive, default=570.0, help="mel frames per utterance")
    parser.add_argument("--text_tokens", type=positive, default=100.0,
                        help="ByT5 tokens per utterance")
    parser.add_argument("--json_out", help="also write the numbers here as JSON")
    args, rest = parser.parse_known_args(argv)
    try:
        cfg = config_lib.load_config(args.config, config_lib.parse_overrides(rest))
        result = model_size(cfg, args.flops, args.frames, args.text_tokens)
    except config_lib.ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(table(result))
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"config": args.config, "overrides": rest, **result}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
