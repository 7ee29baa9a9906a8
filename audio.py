"""Everything between a waveform and a log-mel, both ways.

The mel is BigVGAN's (bigvgan_v2_22khz_80band_fmax8k_256x, the same setup as HiFi-GAN V1
LJSpeech): 22,050 Hz, n_fft 1024, hop 256, Hann window 1024, 80 slaney mel bands 0-8 kHz,
reflect padding of (n_fft - hop) / 2 on both sides and no centering, so a clip of S samples
gives S // 256 frames; log(clamp(mel_magnitude, 1e-5)).

Shape letters: b batch, s samples, n mel frames, m mel bands (80).
"""
from __future__ import annotations

import functools
import math
import os
import tempfile

import librosa
import numpy as np
import soundfile as sf
import torch

SAMPLE_RATE = 22050
N_FFT = 1024
HOP_LENGTH = 256
WIN_LENGTH = 1024
N_MELS = 80
MEL_FMIN = 0.0
MEL_FMAX = 8000.0
LOG_CLAMP = 1e-5
SILENCE_LOGMEL = math.log(LOG_CLAMP)  # log-mel of digital silence, about -11.51
FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH  # about 86.13


class AudioError(ValueError):
    """A wav that cannot be used: names the file and what is wrong with it."""


def load_wav(path: str, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read any soundfile-readable file as float32 mono at `sample_rate`. Returns (s,)."""
    try:
        audio, file_rate = sf.read(path, dtype="float32", always_2d=True)  # (s, channels)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise AudioError(f"{path}: not a readable audio file ({exc})") from None
    if audio.shape[0] == 0:
        raise AudioError(f"{path}: no samples")
    audio = audio.mean(axis=1)
    if file_rate != sample_rate:
        audio = librosa.resample(audio, orig_sr=file_rate, target_sr=sample_rate, res_type="soxr_hq")
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def write_wav(path: str, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Write 16-bit PCM; written to a temp file and renamed so a reader never sees half a wav."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".wav", dir=directory)
    os.close(fd)
    try:
        sf.write(tmp, np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0), sample_rate,
                 subtype="PCM_16")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@functools.lru_cache(maxsize=8)
def _mel_basis(device: str) -> torch.Tensor:
    basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=MEL_FMIN,
                                fmax=MEL_FMAX)  # slaney scale and norm: librosa's defaults
    return torch.from_numpy(basis).float().to(device)  # (m, n_fft // 2 + 1)


@functools.lru_cache(maxsize=8)
def _window(device: str) -> torch.Tensor:
    return torch.hann_window(WIN_LENGTH, device=device)


def log_mel(audio: torch.Tensor) -> torch.Tensor:
    """BigVGAN log-mel of float audio in [-1, 1]. (s,) -> (m, n) or (b, s) -> (b, m, n)."""
    squeeze = audio.dim() == 1
    audio = audio.float().reshape(-1, audio.shape[-1])  # (b, s)
    pad = (N_FFT - HOP_LENGTH) // 2
    audio = torch.nn.functional.pad(audio.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
    device = str(audio.device)
    spec = torch.stft(audio, N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH,
                      window=_window(device), center=False, return_complex=True)
    magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)  # (b, n_fft//2+1, n)
    mel = torch.log(torch.clamp(_mel_basis(device) @ magnitude, min=LOG_CLAMP))  # (b, m, n)
    return mel[0] if squeeze else mel


def wav_to_log_mel(path: str) -> np.ndarray:
    """Load a wav and return its log-mel as float32 (n, m): frames first, as stored on disk."""
    audio = load_wav(path)
    if audio.shape[0] < N_FFT:
        raise AudioError(f"{path}: {audio.shape[0]} samples is shorter than one frame ({N_FFT})")
    return log_mel(torch.from_numpy(audio)).T.contiguous().numpy()


def normalize(mel: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return (mel - mean) / std


def denormalize(mel: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    return mel * std + mean
