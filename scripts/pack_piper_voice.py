"""Pack the piper voice small enough to travel: half-precision weights and an English-only runtime.

The installed voice and runtime take about 110 MB (a 63 MB .onnx of float32 weights; piper-tts
ships a Hebrew diacritics model and some 100 languages' espeak-ng dictionaries). A machine with
onnxruntime and numpy but neither package needs only what English synthesis reads:

    OUT/<voice>.fp16.onnx       the same graph, every float32 weight stored as float16 and cast
                                back to float32 by a Cast node at load: arithmetic stays float32,
                                the weights round once (docs/BENCHMARKS.md: what it costs)
    OUT/<voice>.fp16.onnx.json  the voice's config, unchanged
    OUT/site/piper/             the piper package, without hebrew/, train/, the tashkeel model
                                (Arabic only; voice.py imports the package) and every espeak-ng
                                dictionary but English's

    python scripts/pack_piper_voice.py --out .voice
    PYTHONPATH=.voice/site python scripts/make_speech_corpus.py --voice piper \
        --piper_model .voice/en_US-joe-medium.fp16.onnx ...
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from scripts.voices import default_piper_model  # noqa: E402

KEEP_DICTS = ("en_dict",)


def weights_to_fp16(source: str, target: str) -> int:
    """Store each float32 initializer of an onnx model as float16 plus a Cast back to float32,
    under the original name, so no node changes. Returns how many were converted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(source)
    graph = model.graph
    kept, casts = [], []
    for tensor in graph.initializer:
        if tensor.data_type != TensorProto.FLOAT:
            kept.append(tensor)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16),
                                       f"{tensor.name}__fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [tensor.name], to=TensorProto.FLOAT,
                                      name=f"{tensor.name}__cast"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)  # casts first: the graph stays topologically sorted
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, target)
    return len(casts)


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
    stem = os.path.basename(model_path).removesuffix(".onnx")
    target = os.path.join(out_dir, f"{stem}.fp16.onnx")
    converted = weights_to_fp16(model_path, target)
    shutil.copyfile(f"{model_path}.json", f"{target}.json")
    runtime = os.path.join(out_dir, "site", "piper")
    shutil.rmtree(runtime, ignore_errors=True)
    shutil.copytree(os.path.dirname(piper.__file__), runtime, ignore=_runtime_ignore)
    sizes = {"voice_mb": os.path.getsize(target) / 1e6, "runtime_mb": _size(runtime) / 1e6}
    print(f"{target}: {converted} weights in float16, {sizes['voice_mb']:.1f} MB; "
          f"runtime {runtime}: {sizes['runtime_mb']:.1f} MB")
    return {"model": target, "converted": converted, **sizes}


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
