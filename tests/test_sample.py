import os
import subprocess
import sys

import pytest
import soundfile as sf
import torch

import audio
import checkpoint
import config
import sample
from conftest import BIGVGAN_NAME, REPO, write_tiny_bigvgan
from model import FlowTTS


@pytest.fixture
def tiny_ckpt(tiny_overrides, tmp_path):
    cfg = config.load_config(None, {**tiny_overrides, "mel_mean": -5.0, "mel_std": 2.0})
    torch.manual_seed(0)
    model = FlowTTS(cfg)
    with torch.no_grad():  # a duration head that predicts ~0.1 s per byte: short test wavs
        model.duration_predictor.mlp[2].bias.fill_(-2.3)
        model.duration_predictor.mlp[2].weight.zero_()
    state = {"model": checkpoint.trainable_state(model), "config": config.as_dict(cfg), "step": 0}
    checkpoint.save(str(tmp_path / "ckpt"), state, keep=1)
    return str(tmp_path / "ckpt" / "latest.pt"), model


def run_sample(*args):
    return subprocess.run([sys.executable, "sample.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300)


def test_wav_length_matches_predicted_duration(tiny_ckpt, tmp_path):
    path, model = tiny_ckpt
    text = "Hello from a tiny model."
    out = tmp_path / "hello.wav"
    result = run_sample("--ckpt", path, "--text", text, "--out", str(out), "--steps", "2",
                        "--vocoder", "griffinlim")
    assert result.returncode == 0, result.stderr
    frames = int(model.predict_frames(*model.encode_texts([text]))[0])
    wave, rate = sf.read(out)
    assert rate == 22050 and wave.ndim == 1
    assert len(wave) == frames * 256 and 5 < frames < 1024


def test_text_file_writes_numbered_outputs(tiny_ckpt, tmp_path):
    path, _ = tiny_ckpt
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("First prompt.\n\nA second, longer prompt here.\n")
    result = run_sample("--ckpt", path, "--text-file", str(prompts), "--out",
                        str(tmp_path / "out" / "p.wav"), "--steps", "1", "--vocoder", "griffinlim")
    assert result.returncode == 0, result.stderr
    lengths = [sf.info(tmp_path / "out" / f"p_{i:03d}.wav").frames for i in range(2)]
    assert lengths[1] > lengths[0] > 0


def test_seconds_fixes_the_duration(tiny_ckpt, tmp_path):
    path, model = tiny_ckpt
    text = "Hello from a tiny model."
    out = tmp_path / "fixed.wav"
    sample.main(["--ckpt", path, "--text", text, "--out", str(out), "--steps", "2",
                 "--vocoder", "griffinlim", "--seconds", "0.5"])
    predicted = int(model.predict_frames(*model.encode_texts([text]))[0])
    assert sf.info(out).frames == 43 * 256 != predicted * 256  # 0.5 s = 43.07 frames of 256


def test_vocoder_model_names_the_bigvgan_weights(tiny_ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(audio, "_VOCODERS", {})  # loaded here only
    path, _ = tiny_ckpt
    weights = write_tiny_bigvgan(str(tmp_path / "my_bigvgan"))
    out = tmp_path / "bigvgan.wav"
    sample.main(["--ckpt", path, "--text", "Hello.", "--out", str(out), "--steps", "1",
                 "--seconds", "0.3", "--vocoder_model", weights])
    assert f"vocoder: bigvgan:{weights}\n" in capsys.readouterr().out  # not a fallback
    assert sf.info(out).frames == 26 * 256


def test_vocoder_auto_takes_bigvgan_from_the_hub_cache(tiny_ckpt, tmp_path, offline_hub, capsys):
    path, _ = tiny_ckpt
    out = tmp_path / "auto.wav"
    sample.main(["--ckpt", path, "--text", "Hello.", "--out", str(out), "--steps", "1",
                 "--seconds", "0.3", "--vocoder", "auto"])
    assert f"vocoder: bigvgan:{BIGVGAN_NAME}\n" in capsys.readouterr().out
    assert BIGVGAN_NAME == audio.BIGVGAN_MODEL and sf.info(out).frames == 26 * 256


@pytest.mark.parametrize("args,message", [
    (["--text", ""], "prompt is empty"),
    (["--text", "   \t "], "prompt is empty"),
    (["--text", "x" * 10000], "at most 256"),
    (["--text", "bell\x07here"], "control character"),
    (["--text", "ok", "--steps", "0"], "argument --steps: must be an integer in [1, 1000]"),
    (["--text", "ok", "--cfg_scale", "-1"], "argument --cfg_scale: must be a finite number in"),
    (["--text", "ok", "--cfg_scale", "nan"], "argument --cfg_scale: must be a finite number in"),
    (["--text", "ok", "--sway", "2"], "argument --sway: must be a finite number in [-1, 1]"),
    (["--text", "ok", "--out", "/proc/nope/x.wav"], "cannot create"),
])
def test_user_errors_are_one_clear_line(tiny_ckpt, tmp_path, args, message):
    path, _ = tiny_ckpt
    out = ["--out", str(tmp_path / "x.wav")] if "--out" not in args else []
    result = run_sample("--ckpt", path, *out, "--vocoder", "griffinlim", *args)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "x.wav")


def test_seconds_is_a_checked_number(capsys):
    with pytest.raises(SystemExit):
        sample.parse_args(["--ckpt", "c", "--text", "t", "--out", "o", "--seconds", "-1"])
    assert "argument --seconds: must be a finite number >= 0, got '-1'" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--seconds", "12"], r"at most 1024 \(block_size, 11.9 s\)"),
    (["--seconds", "1", "--duration_scale", "2"], "give one of them"),
    (["--vocoder_model", "x"], "--vocoder griffinlim does not use them"),
])
def test_seed_flags_refuse_what_cannot_be_done(tiny_ckpt, tmp_path, args, message):
    out = tmp_path / "x.wav"
    with pytest.raises(sample.PromptError, match=message):
        sample.main(["--ckpt", tiny_ckpt[0], "--text", "ok", "--out", str(out),
                     "--vocoder", "griffinlim", *args])
    assert not out.exists()


def test_missing_checkpoint_is_named(tmp_path):
    result = run_sample("--ckpt", str(tmp_path / "none.pt"), "--text", "hi", "--out",
                        str(tmp_path / "x.wav"))
    assert result.returncode != 0 and "none.pt" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_sampler_entry_point_uses_the_config_defaults():
    """sample.py, eval_checkpoint.py, model.sample and the evaluator sample with the in-loop
    evaluation's settings unless told otherwise (sway -1: docs/RESULTS.md's sampling sweep)."""
    import inspect
    from conftest import load_script
    import evaluator
    defaults = config.TrainConfig()
    wanted = {"steps": defaults.eval_steps, "cfg_scale": defaults.eval_cfg_scale,
              "sway": defaults.eval_sway}
    assert defaults.eval_sway == -1.0
    eval_checkpoint = load_script("eval_checkpoint")
    for args in (sample.parse_args(["--ckpt", "c", "--text", "t", "--out", "o"]),
                 eval_checkpoint.parse_args(["--ckpt", "c", "--prompts", "p", "--out", "o"])):
        assert {key: getattr(args, key) for key in wanted} == wanted
    model_defaults = {key: inspect.signature(FlowTTS.sample).parameters[key].default
                      for key in wanted}
    assert model_defaults == wanted
    sampling = evaluator.Sampling()  # what sample_mels, evaluate_texts and synthesize default to
    assert {key: getattr(sampling, key) for key in wanted} == wanted
    for function in (evaluator.sample_mels, evaluator.evaluate_texts, sample.synthesize):
        assert inspect.signature(function).parameters["sampling"].default == sampling
