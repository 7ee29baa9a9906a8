import os

import numpy as np
import pytest
import torch

import audio
from conftest import BIGVGAN_NAME, LJ_MINI, TINY_BIGVGAN


def test_log_mel_matches_bigvgan_on_real_speech():
    meldataset = pytest.importorskip("bigvgan.meldataset")
    path = os.path.join(LJ_MINI, "wavs", "LJ001-0001.wav")
    if not os.path.exists(path):
        pytest.skip(f"real LJSpeech clip not found at {path}")
    wave = torch.from_numpy(audio.load_wav(path))[None]  # (1, s)
    reference = meldataset.mel_spectrogram(wave, 1024, 80, 22050, 256, 1024, 0, 8000)
    ours = audio.log_mel(wave)
    assert ours.shape == reference.shape == (1, 80, wave.shape[1] // 256)
    assert (ours - reference).abs().max().item() < 1e-4


def test_silence_and_frame_count():
    mel = audio.log_mel(torch.zeros(22050))
    assert mel.shape == (80, 22050 // 256)
    assert torch.allclose(mel, torch.full_like(mel, audio.SILENCE_LOGMEL))


def test_load_wav_resamples_and_downmixes(tmp_path):
    import soundfile as sf
    t = np.arange(44100) / 44100
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t)], 1) * 0.5
    sf.write(tmp_path / "s.wav", stereo, 44100)
    wave = audio.load_wav(str(tmp_path / "s.wav"))
    assert wave.ndim == 1 and abs(len(wave) - 22050) <= 1
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * 22050 / len(wave) - 440) < 2


def test_normalize_round_trip():
    x = torch.randn(2, 10, 80) * 2 - 5
    assert torch.allclose(audio.denormalize(audio.normalize(x, -5.5, 2.1), -5.5, 2.1), x, atol=1e-6)


@pytest.mark.parametrize("name", ["hifigan", "hifigan-universal", "griffinlim", "bigvgan"])
def test_vocoder_output_is_frames_times_hop(name, request):
    if name == "bigvgan":  # the real loading code, on a small random stand-in in the hub cache
        request.getfixturevalue("offline_hub")
    try:
        vocoder = audio.load_vocoder(name)
    except audio.VocoderError as exc:
        if name == "bigvgan":
            raise
        pytest.skip(f"{name} cannot be loaded here: {exc}")
    wav = audio.load_wav(os.path.join(LJ_MINI, "wavs", "LJ001-0002.wav"))
    mel = audio.log_mel(torch.from_numpy(wav))[:, :75]  # (m, n)
    out = vocoder(torch.stack([mel, mel.flip(1)]))  # (b, m, n) -> (b, s)
    assert out.shape[0] == 2 and abs(out.shape[1] - 75 * audio.HOP_LENGTH) <= audio.HOP_LENGTH
    assert out.dtype == torch.float32 and out.abs().max() <= 1.0
    assert out.abs().mean() > 1e-3  # speech, not silence
    assert audio.load_vocoder(name) is vocoder  # loaded once per process


def test_unknown_vocoder_is_a_clear_error():
    with pytest.raises(audio.VocoderError, match="unknown vocoder 'wavenet'"):
        audio.load_vocoder("wavenet")


def test_auto_vocoder_takes_bigvgan_from_the_hub_cache(offline_hub, tmp_path, monkeypatch, capsys):
    from bigvgan.bigvgan import BigVGAN
    from bigvgan.env import AttrDict
    vocoder = audio.load_vocoder("auto")
    assert vocoder.name == f"bigvgan:{BIGVGAN_NAME}"
    assert capsys.readouterr().out.splitlines()[-1] == f"vocoder: bigvgan:{BIGVGAN_NAME}"
    torch.manual_seed(0)  # the stand-in's weights, as the cache holds them
    reference = BigVGAN(AttrDict(TINY_BIGVGAN))
    reference.remove_weight_norm()
    mel = torch.randn(1, 80, 12) - 5  # (b, m, n)
    with torch.no_grad():
        assert torch.allclose(vocoder(mel), reference.eval()(mel)[:, 0].clamp(-1, 1), atol=1e-6)
    # An empty cache with the hub off: auto says why it passed BigVGAN over and falls back.
    import huggingface_hub.constants
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(audio, "_VOCODERS", {})
    assert audio.load_vocoder("auto").name != vocoder.name
    assert "not in the local cache and the hub is unreachable" in capsys.readouterr().out
