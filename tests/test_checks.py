"""checks.py: every number a user types is checked in one place. Property-based (hypothesis,
fixed seed, bounded examples): for any string or number, the config parser and the CLIs give a
valid config / value or a one-line error naming the key or flag, never another exception; a
sampling setting that passes never yields non-finite mels or audio. Plus what gets cut (a
duration at block_size, a prompt over max_text_length) and a non-finite wav."""
import contextlib
import io
import json
import math
import os
from dataclasses import fields

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import audio
import checkpoint
import checks
import config
import sample
from conftest import load_script
from evaluator import Sampling
from model import FlowTTS

# Fixed seed (derandomize), no example database in the repo, no per-example deadline: the
# suite gives the same verdict on every run and machine.
FAST = settings(max_examples=150, derandomize=True, database=None, deadline=None)
SLOW = settings(max_examples=12, derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

KEYS = [f.name for f in fields(config.TrainConfig)]
# What a user might type or a YAML file might hold: any text, numbers of every size and
# kind (NaN, inf, huge, negative), booleans, nulls and containers.
TYPED = st.one_of(st.text(), st.floats(), st.integers(), st.integers(-10 ** 400, 10 ** 400),
                  st.sampled_from(["nan", "inf", "-inf", "1e400", "1e3", "0", "-1", "1.5", "true",
                                   "none", "", " 7 ", "0x10", "1_000", "\x00", "a\nb"]))
YAML_VALUES = st.one_of(TYPED, st.booleans(), st.none(), st.lists(st.integers(), max_size=2),
                        st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))


def one_line_naming(message: str, name: str) -> bool:
    return "\n" not in message.strip() and name in message


def a_number_of_its_kind(number, kind: type) -> bool:
    """Finite; an int that fits in 64 bits (what numpy and torch take)."""
    return type(number) is kind and math.isfinite(number) and (kind is float or abs(number) < 2**63)


# ----------------------------------------------------------------------------- the config


@FAST
@given(key=st.sampled_from(KEYS), value=TYPED)
def test_any_override_is_a_valid_config_or_one_line_naming_the_key(key, value):
    try:
        cfg = config.config_from_argv([f"--{key}", str(value)])
    except config.ConfigError as exc:
        assert one_line_naming(str(exc), repr(key)), str(exc)
        return
    config.validate(cfg)  # what passed is valid, and its numbers are finite
    for name in config.LIMITS:
        number = getattr(cfg, name)
        assert number is None or a_number_of_its_kind(number, config.LIMITS[name].kind)


@FAST
@given(key=st.sampled_from(KEYS), value=YAML_VALUES)
def test_any_yaml_value_is_a_valid_config_or_one_line_naming_the_key(key, value):
    try:
        config.load_config(None, {key: value})
    except config.ConfigError as exc:
        assert one_line_naming(str(exc), repr(key)), str(exc)


@FAST
@given(argv=st.lists(st.one_of(st.text(max_size=12), st.sampled_from(
    [f"--{k}" for k in KEYS[:20]] + ["--config", "--", "--lr=nan", "--seed=-1"])), max_size=6))
def test_any_command_line_is_a_config_or_one_config_error(argv):
    try:
        config.config_from_argv(argv)
    except config.ConfigError as exc:
        assert "\n" not in str(exc)


def test_the_checks_name_the_key_and_the_rule():
    with pytest.raises(config.ConfigError, match="'lr': must be a finite number >= 0, got 'nan'"):
        config.load_config(None, {"lr": "nan"})
    with pytest.raises(config.ConfigError, match="'max_steps': must be an integer >= 1"):
        config.load_config(None, {"max_steps": "2.5"})
    assert config.load_config(None, {"max_steps": "1e3"}).max_steps == 1000
    with pytest.raises(config.ConfigError, match="'compile': cannot read"):
        config.load_config(None, {"compile": [1]})
    with pytest.raises(config.ConfigError, match="'init_from': expected a string, got None"):
        config.load_config(None, {"init_from": None})  # `init_from:` in YAML is null, not ""
    with pytest.raises(config.ConfigError, match="'max_steps': must be an integer >= 1, got True"):
        config.load_config(None, {"max_steps": True})  # YAML `yes`
    for key in ("data_dir", "compile", "mel_mean"):  # str() refuses ints of 4,300+ digits
        with pytest.raises(config.ConfigError, match="an integer of thousands of digits"):
            config.load_config(None, {key: 10 ** 5000})
    assert str(checks.Limit(float, 0, 1, high_open=True)) == "a finite number in [0, 1)"


# ----------------------------------------------------------------------------- the CLIs


NUMBER_FLAGS = {"sample": ["--steps", "--cfg_scale", "--sway", "--seed", "--duration_scale",
                           "--seconds"],
                "eval_checkpoint": ["--steps", "--cfg_scale", "--sway", "--seed",
                                    "--duration_scale", "--batch_size", "--num_samples"]}
BASE_ARGV = {"sample": ["--ckpt", "c.pt", "--text", "hi", "--out", "o.wav"],
             "eval_checkpoint": ["--ckpt", "c.pt", "--prompts", "p.txt", "--out", "o"]}


def parse(cli: str, argv: list[str]):
    """(args, None) or (None, stderr) of the CLI's own argument parsing."""
    parse_args = sample.parse_args if cli == "sample" else load_script(cli).parse_args
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        try:
            return parse_args(BASE_ARGV[cli] + argv), None
        except SystemExit as exc:
            assert exc.code == 2
    return None, stderr.getvalue()


@FAST
@given(cli_flag=st.sampled_from([(cli, f) for cli, flags in NUMBER_FLAGS.items() for f in flags]),
       value=TYPED)
def test_any_number_flag_value_is_in_range_or_one_line_naming_the_flag(cli_flag, value):
    cli, name = cli_flag
    args, error = parse(cli, [f"{name}={value}"])  # "=": a value may start with "-"
    if args is None:
        assert one_line_naming(error, f"argument {name}:"), error
        return
    number = getattr(args, name[2:])
    assert isinstance(number, (int, float)) and math.isfinite(number)


@FAST
@given(text=TYPED.map(str))
def test_prepare_refuses_its_numbers_in_one_line_or_goes_on_to_the_corpus(text):
    prep = load_script("prepare_ljspeech")
    for name in ("--workers", "--val_fraction", "--max_seconds"):
        stderr = io.StringIO()
        with contextlib.redirect_stderr(stderr):
            try:  # a value that passes reaches the corpus, which is not there
                code = prep.main(["--out", "/nonexistent/out", "--src", "/nonexistent/src",
                                  f"{name}={text}"])
            except SystemExit as exc:
                code = exc.code
        assert code == 2
        error = stderr.getvalue()
        assert one_line_naming(error, f"argument {name}:") or "metadata.csv: not found" in error


@FAST
@given(text=TYPED.map(str), limit=st.sampled_from([checks.STEPS, checks.CFG_SCALE, checks.SWAY,
                                                   checks.SEED, checks.DURATION_SCALE,
                                                   checks.VAL_FRACTION, checks.COUNT]))
def test_every_flag_type_returns_a_value_within_its_limit(text, limit):
    """The type= of every number flag (bench.py, make_speech_corpus.py, ... use these)."""
    try:
        number = checks.flag(limit)(text)
    except Exception as exc:
        assert type(exc).__name__ == "ArgumentTypeError" and str(limit) in str(exc)
        return
    assert a_number_of_its_kind(number, limit.kind)
    assert limit.low is None or number >= limit.low
    assert limit.high is None or number <= limit.high


def test_bench_refuses_a_variant_and_a_bad_override_in_one_line(monkeypatch, capsys):
    bench = load_script("bench")
    for argv in (["--variants", "eager,nope"], ["--lr", "nan"], ["--sample_steps", "16,0"]):
        monkeypatch.setattr("sys.argv", ["bench.py", "--out", "x.jsonl", *argv])
        with pytest.raises(SystemExit) as exc:
            bench.main()
        error = capsys.readouterr().err
        assert exc.value.code == 2 and one_line_naming(error, "error:")
        assert argv[0].lstrip("-") in error or "'lr'" in error


# ----------------------------------------------------------------------------- sampling


@pytest.fixture(scope="module")
def short_model(tiny_encoder_dir):
    """A random model whose block_size is 48 frames (0.56 s): sampling at the limit is quick."""
    cfg = config.load_config(None, {"text_encoder_name": tiny_encoder_dir, "decoder_d_model": 32,
                                     "decoder_n_layer": 1, "decoder_n_head": 2, "mel_mean": -5.5,
                                     "mel_std": 2.0, "block_size": 48, "max_text_length": 64})
    torch.manual_seed(0)
    return FlowTTS(cfg).eval()


@SLOW
@given(steps=st.one_of(st.integers(-2, 6), st.sampled_from(["nan", "1e400", "2.5"])).map(str),
       cfg_scale=st.floats(-1, 25).map(str) | st.sampled_from(["nan", "inf", "1e30"]),
       sway=st.floats(-1.2, 1.2).map(str) | st.sampled_from(["nan", "-inf"]),
       duration_scale=st.floats(0, 1e300).map(str) | st.floats(0, 3).map(str)
       | st.sampled_from(["nan", "inf", "-1"]))
def test_sampling_settings_that_pass_give_finite_mels_and_audio(short_model, steps, cfg_scale,
                                                                 sway, duration_scale):
    """Few Euler steps (each costs time here); many only make the integration smoother."""
    args, _ = parse("sample", [f"--steps={steps}", f"--cfg_scale={cfg_scale}", f"--sway={sway}",
                               f"--duration_scale={duration_scale}"])
    if args is None:
        return
    vocoder = audio.load_vocoder("hifigan")
    sampling = Sampling(args.steps, args.cfg_scale, args.sway, args.seed, args.duration_scale)
    mels = sample.sample_mels(short_model, ["Hello there."], sampling)
    assert 1 <= len(mels[0]) <= short_model.cfg.block_size and bool(torch.isfinite(mels[0]).all())
    wave = vocoder(mels[0].T[None])[0].numpy()
    assert np.isfinite(wave).all()


def test_extreme_legal_settings_give_finite_audio(short_model):
    """The corners the bounds allow: the strongest guidance, both ends of sway, the longest
    duration (HiFi-GAN here; Griffin-Lim's own corner is below)."""
    vocoder = audio.load_vocoder("hifigan")
    for steps, cfg_scale, sway in [(32, 20.0, -1.0), (1, 20.0, 1.0)]:
        sampling = Sampling(steps, cfg_scale, sway, seed=0, duration_scale=1e30)
        mel = sample.sample_mels(short_model, ["A corner case."], sampling)[0]
        assert len(mel) == short_model.cfg.block_size and bool(torch.isfinite(mel).all())
        assert np.isfinite(vocoder(mel.T[None])[0].numpy()).all()


@pytest.fixture(scope="module")
def short_ckpt(short_model, tmp_path_factory):
    state = {"model": checkpoint.trainable_state(short_model),
             "config": config.as_dict(short_model.cfg), "step": 0}
    return checkpoint.save(str(tmp_path_factory.mktemp("short")), state, keep=1)


def test_a_duration_cut_to_block_size_is_said_and_the_wav_has_that_length(short_ckpt, tmp_path,
                                                                            capsys):
    out = tmp_path / "long.wav"
    sample.main(["--ckpt", short_ckpt, "--text", "Hello there.", "--out", str(out), "--steps",
                 "1", "--vocoder", "griffinlim", "--duration_scale", "1000", "--device", "cpu"])
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == ["note: prompt 1: the duration reached block_size, the longest this model "
                     "makes (48 frames, 0.56 s)"]
    assert audio.load_wav(str(out)).shape[0] == 48 * audio.HOP_LENGTH


def test_eval_checkpoint_records_what_it_cut_in_the_summary(short_ckpt, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Short one.\n" + "A prompt far longer than the model reads. " * 3 + "\n")
    out = tmp_path / "eval"
    assert load_script("eval_checkpoint").main([
        "--ckpt", short_ckpt, "--prompts", str(prompts), "--out", str(out), "--asr", "none",
        "--vocoder", "griffinlim", "--steps", "1", "--duration_scale", "1000",
        "--device", "cpu"]) == 0
    cuts = json.loads((out / "summary.json").read_text())["cut_to_limits"]
    assert [(c["id"], c["cut"], c["limit"], c["value"]) for c in cuts] == [
        ("0000", "duration", "block_size", 48), ("0001", "text", "max_text_length", 126),
        ("0001", "duration", "block_size", 48)]
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note:")]
    assert notes == [f"note: {c['note']}" for c in cuts]


@pytest.fixture(scope="module")
def broken_model(short_model):
    """Finite weights (a checkpoint may hold them) whose generated mel is not finite."""
    broken = FlowTTS(short_model.cfg).eval()
    broken.load_state_dict(short_model.state_dict())
    with torch.no_grad():
        broken.decoder.out_proj.bias.fill_(3e38)
    return broken


def test_a_non_finite_wav_is_an_error_naming_the_prompt_and_no_file(broken_model, tmp_path):
    broken = broken_model
    state = {"model": checkpoint.trainable_state(broken), "config": config.as_dict(broken.cfg),
             "step": 0}
    ckpt = checkpoint.save(str(tmp_path / "run"), state, keep=1)
    out = tmp_path / "x.wav"
    with pytest.raises(audio.AudioError) as exc:
        sample.main(["--ckpt", ckpt, "--text", "Broken model here.", "--out", str(out),
                     "--steps", "2", "--vocoder", "griffinlim", "--device", "cpu"])
    assert "prompt 'Broken model here.'" in str(exc.value) and "not finite" in str(exc.value)
    assert os.listdir(tmp_path) == ["run"]  # no wav, no temp file


def test_write_wav_refuses_non_finite_samples_and_leaves_nothing(tmp_path):
    wave = np.zeros(2048, dtype=np.float32)
    wave[100] = np.nan
    with pytest.raises(audio.AudioError, match=r"^prompt 7: 1 of 2048 generated samples are not"):
        audio.write_wav(str(tmp_path / "x.wav"), wave, what="prompt 7")
    assert os.listdir(tmp_path) == []
    griffin_lim = audio.load_vocoder("griffinlim")
    with pytest.raises(audio.AudioError, match="prompt 8: the generated log-mel is not finite"):
        griffin_lim(torch.full((80, 4), float("inf")), "prompt 8")
    # Finite but far past any wav's log-mel (exp(1e30) overflows): cut to LOGMEL_MAX first.
    loud = griffin_lim(torch.full((80, 4), 1e30))
    assert bool(torch.isfinite(loud).all()) and loud.abs().max() <= 1


def test_the_in_loop_evaluation_survives_a_non_finite_mel(broken_model, tmp_path, capsys):
    import dataclasses
    import evaluator
    cfg = dataclasses.replace(broken_model.cfg, eval_prompts="overfit", eval_vocoder="griffinlim",
                              eval_asr="none", eval_steps=1)
    evaluate = evaluator.InLoopEvaluator(cfg, str(tmp_path), train_texts=["Broken model here."])
    assert evaluate(broken_model, 7) == {"eval/nonfinite_audio": 1}
    assert "warning: evaluation at step 7: prompt train_0000" in capsys.readouterr().err
    assert not list(tmp_path.rglob("*.wav"))
