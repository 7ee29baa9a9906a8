"""scripts/eval_checkpoint.py: checkpoint x prompts -> wavs, WER, floor, sweeps, mels scored
elsewhere, user errors; on CPU with a tiny random model."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import checkpoint
import config
import evaluator
from conftest import REPO, load_script
from data import PreparedDataset


@pytest.fixture(scope="module")
def tiny_ckpt(tiny_model, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    state = {"model": checkpoint.trainable_state(tiny_model),
             "config": config.as_dict(tiny_model.cfg), "step": 0}
    return checkpoint.save(str(run), state, keep=1)


def test_eval_checkpoint_cli_writes_summary(tiny_ckpt, tiny_asr, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Hello world.\nGood morning to you.\n")
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "scripts", "eval_checkpoint.py"), "--ckpt", tiny_ckpt,
         "--prompts", str(prompts), "--out", str(out), "--asr", "faster-whisper", "--whisper",
         "tiny.en", "--vocoder", "griffinlim", "--steps", "2", "--duration_scale", "0.02",
         "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("wer", "n_prompts", "whisper_model", "vocoder", "steps", "cfg"):
        assert key in summary
    assert summary["n_prompts"] == 2 and summary["steps"] == 2 and summary["cfg"] == 2.0
    assert len((out / "wer.jsonl").read_text().splitlines()) == 2
    assert (out / "report.html").exists() and (out / "0001.wav").exists()


def test_eval_checkpoint_dataset_floor_oracle_and_sweep(tiny_ckpt, tiny_asr, tiny_dataset,
                                                        tmp_path, capsys):
    script = load_script("eval_checkpoint")
    common = ["--ckpt", tiny_ckpt, "--data_dir", tiny_dataset, "--asr", "faster-whisper",
              "--whisper", "tiny.en", "--vocoder", "griffinlim", "--steps", "1", "--device", "cpu"]
    out = tmp_path / "oracle"
    assert script.main(common + ["--out", str(out), "--oracle_duration", "--resynth"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_prompts"] == 2 and summary["oracle_duration"]  # the 2 val utterances
    assert summary["duration_error"] >= 0
    floor = json.loads((out / "resynth" / "summary.json").read_text())
    assert floor["n_prompts"] == 2 and floor["kind"] == "resynthesis floor"
    assert "floor" in capsys.readouterr().out
    out = tmp_path / "sweep"
    assert script.main(common + ["--out", str(out), "--sweep", "steps=1,2 sway=-1"]) == 0
    lines = [json.loads(x) for x in (out / "sweep.jsonl").read_text().splitlines()]
    assert [(x["steps"], x["sway"]) for x in lines] == [(1, -1.0), (2, -1.0)]
    assert json.loads((out / "summary.json").read_text())["setting"] in [
        {"steps": 1, "sway": -1.0}, {"steps": 2, "sway": -1.0}]


@pytest.mark.parametrize("args", [["--sway", "2"], ["--sweep", "steps=1 sway=0,-2"],
                                  ["--cfg_scale", "nan"], ["--sweep", "cfg_scale=2,inf"]])
def test_eval_checkpoint_rejects_bad_numbers_before_loading(tmp_path, capsys, args):
    # The checkpoint does not exist: a check that ran after loading would name it instead.
    script = load_script("eval_checkpoint")
    argv = ["--ckpt", str(tmp_path / "none.pt"), "--prompts", str(tmp_path / "p.txt"),
            "--out", str(tmp_path / "out"), *args]
    try:
        code = script.main(argv)
    except SystemExit as exc:  # a flag's value, refused while parsing
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "none.pt" not in err
    key = args[0] if args[0] != "--sweep" else f"--sweep {args[1].split()[-1].split('=')[0]}"
    assert key in err and "must be a finite number in" in err


def test_eval_checkpoint_without_vocoder_keeps_mels_to_score_elsewhere(tiny_ckpt, tiny_dataset,
                                                                       tiny_asr, tmp_path):
    script = load_script("eval_checkpoint")
    out = tmp_path / "run" / "eval" / "step_7" / "oracle_duration"  # where a run keeps them
    assert script.main(["--ckpt", tiny_ckpt, "--data_dir", tiny_dataset, "--oracle_duration",
                        "--vocoder", "none", "--asr", "none", "--steps", "1", "--device", "cpu",
                        "--out", str(out)]) == 0
    dataset = PreparedDataset(tiny_dataset)
    val = [r for r in range(len(dataset)) if dataset.splits[r] == "val"]
    prompts, mels, _ = evaluator.load_mels(str(out / "mels.npz"))
    assert [p for p, _ in prompts] == [dataset.ids[r] for r in val]
    assert [len(m) for m in mels] == [dataset.n_frames[r] for r in val]
    assert not list(out.glob("*.wav"))
    scored = tmp_path / "scored"  # elsewhere: an evenly spaced subset of them, scored
    assert script.main(["--mels", str(out / "mels.npz"), "--num_samples", "1", "--out",
                        str(scored), "--vocoder", "griffinlim", "--asr", "faster-whisper",
                        "--whisper", "tiny.en", "--log_to_run"]) == 0
    summary = json.loads((scored / "summary.json").read_text())
    assert summary["n_prompts"] == 1 and summary["wer"] is not None
    assert [p.name for p in scored.glob("*.wav")] == [f"{dataset.ids[val[0]]}.wav"]
    # --log_to_run: the run's metrics get the WER at step 7, under the oracle-duration key
    logged = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["eval/wer_oracle_duration"], r["eval/scored_prompts"]) for r in logged] \
        == [(7, summary["wer"], 1)]
    elsewhere = tmp_path / "elsewhere.npz"
    elsewhere.write_bytes((out / "mels.npz").read_bytes())
    assert script.main(["--mels", str(elsewhere), "--out", str(scored), "--vocoder", "griffinlim",
                        "--log_to_run"]) == 2  # not inside a run: refused before any scoring


def test_eval_checkpoint_user_errors_exit_2(tiny_ckpt, tmp_path, capsys):
    script = load_script("eval_checkpoint")
    code = script.main(["--ckpt", tiny_ckpt, "--prompts", str(tmp_path / "nope.txt"),
                        "--out", str(tmp_path / "o"), "--vocoder", "griffinlim",
                        "--asr", "faster-whisper", "--whisper", "tiny.en", "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: cannot read prompt file") and "\n" not in err
    assert script.main(["--ckpt", str(tmp_path / "missing.pt"), "--prompts", "x",
                        "--out", str(tmp_path / "o")]) == 2
    with pytest.raises(SystemExit) as exc:  # neither --ckpt nor --data_dir --resynth
        script.parse_args(["--out", "o"])
    assert exc.value.code == 2


def test_eval_checkpoint_samples_the_raw_or_the_ema_weights(tiny_model, tiny_dataset, tmp_path):
    raw = checkpoint.trainable_state(tiny_model)
    ema = {k: v + 0.5 if k == "decoder.out_proj.bias" else v for k, v in raw.items()}
    state = {"model": raw, "ema": ema, "config": config.as_dict(tiny_model.cfg), "step": 0}
    ckpt = checkpoint.save(str(tmp_path / "run"), state, keep=1)
    script = load_script("eval_checkpoint")
    mels = {}
    for weights in ("raw", "ema"):
        out = tmp_path / weights
        assert script.main(["--ckpt", ckpt, "--data_dir", tiny_dataset, "--oracle_duration",
                            "--weights", weights, "--vocoder", "none", "--asr", "none",
                            "--steps", "1", "--cfg_scale", "1", "--device", "cpu",
                            "--out", str(out)]) == 0
        mels[weights] = evaluator.load_mels(str(out / "mels.npz"))[1]
    for raw_mel, ema_mel in zip(mels["raw"], mels["ema"]):  # one Euler step: x0 + velocity
        assert np.allclose(ema_mel - raw_mel, 0.5 * tiny_model.cfg.mel_std, atol=0.02)
