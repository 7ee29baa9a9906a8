"""Pack the piper voice for a machine without piper-tts: the voice and an English-only runtime.

The installed runtime takes about 46 MB (piper-tts ships a Hebrew diacritics model and some 100
languages' espeak-ng dictionaries); a machine with onnxruntime and numpy needs only what English
synthesis reads, beside the voice's own files:

    OUT/<voice>.onnx            the voice, byte for byte (float32 weights: the benchmark's voice;
                                float16 weights moved its floor by 1.3 points, docs/SPEEDRUN.md)
    OUT/<voice>.onnx.json       the voice's config, unchanged
    OUT/site/piper/             the piper package, without hebrew/, train/, the tashkeel model
                                (Arabic only; voice.py imports the package) and every espeak-ng
                                dictionary but English's

    python scripts/pack_piper_voice.py --out .voice
    PYTHONPATH=.voice/site python scripts/make_speech_corpus.py --voice piper \
        --piper_model .voice/en_US-joe-medium.onnx ...
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from scripts.voices import default_piper_model  # noqa: E402

KEEP_DICTS = ("en_dict",)


def _runtime_ignore(directory: str, names: list[str]) -> set[str]:
    """shutil.copytree filter: what English synthesis never reads."""
    dropped = {"__pycache__", "hebrew", "train"}
    if os.path.basename(directory) == "tashkeel":
        dropped.add("model.onnx")
    if os.path.basename(directory) == "espeak-ng-data":
        dropped |= {n for n in names if n.endswith("_dict") and n not in KEEP_DICTS}
    return dropped & set(names)


def pack(out_dir: str, model_path: str | None = None) -> dict:
    import piper
    model_path = model_path or default_piper_model()
    os.makedirs(out_dir, exist_ok=True)
    target = os.path.join(out_dir, os.path.basename(model_path))
    for suffix in ("", ".json"):
        shutil.copyfile(model_path + suffix, target + suffix)
    runtime = os.path.join(out_dir, "site", "piper")
    shutil.rmtree(runtime, ignore_errors=True)
    shutil.copytree(os.path.dirname(piper.__file__), runtime, ignore=_runtime_ignore)
    sizes = {"voice_mb": os.path.getsize(target) / 1e6, "runtime_mb": _size(runtime) / 1e6}
    print(f"{target}: {sizes['voice_mb']:.1f} MB; runtime {runtime}: {sizes['runtime_mb']:.1f} MB")
    return {"model": target, **sizes}


def _size(directory: str) -> int:
    return sum(os.path.getsize(os.path.join(root, name))
               for root, _, names in os.walk(directory) for name in names)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder to write the packed voice to")
    p.add_argument("--piper_model", default=None, help="voice .onnx (default: the joe voice)")
    args = p.parse_args()
    pack(args.out, args.piper_model)


if __name__ == "__main__":
    main()
