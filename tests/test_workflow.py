"""The researcher's loop (docs/RESEARCH_WORKFLOW.md): each of its commands, run on a tiny run
trained here. Config check, model size, data and prediction plots, training curves, full
evaluation with the floor, fine-tuning from another run, two "nodes" on localhost."""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import fields

import pytest
import torch
import yaml
from matplotlib.image import imread

import asr
import audio
import checkpoint
import config
import evaluator
import train
from conftest import REPO, as_argv, load_script
from data import BatchStream, Collate, PreparedDataset
from metric import read_metrics
from model import FlowTTS
from test_train import losses

# 4 steps, saved and evaluated (mels only: no vocoder or ASR to load) at steps 2 and 4.
RUN_SETTINGS = {"max_steps": 4, "save_interval": 2, "val_interval": 2, "eval_interval": 2,
                "eval_asr": "none", "eval_vocoder": "none", "eval_num_samples": 2,
                "eval_steps": 2}
TINY_RUN: dict = {}  # the run's overrides, once trained (see tiny_run)
DOCUMENTED_KEYS = ("train/loss", "train/duration_loss", "train/duration_pred_sec",
                   "train/duration_target_sec", "optim/lr", "optim/grad_norm", "time/step_sec",
                   "perf/frames_per_sec", "perf/samples_per_sec", "perf/tflops", "val/flow_loss",
                   "eval/seconds")


@pytest.fixture
def tiny_run(tiny_overrides, tmp_path_factory) -> dict:
    """The overrides of a tiny run, trained on first use and shared by this module's tests
    (tiny_overrides is made per test, so the run is kept in TINY_RUN, not a wider fixture)."""
    if not TINY_RUN:
        overrides = {**tiny_overrides, **RUN_SETTINGS,
                     "out_dir": str(tmp_path_factory.mktemp("tiny_run"))}
        train.main(as_argv(overrides))
        TINY_RUN.update(overrides)
    return dict(TINY_RUN)


# --- 1. syntax check and model size ------------------------------------------------------------

def test_config_check_prints_the_resolved_config():
    run = lambda *extra: subprocess.run(
        [sys.executable, "config.py", "--config", "configs/ljspeech_overfit64.yaml", *extra],
        cwd=REPO, capture_output=True, text=True, timeout=60)
    resolved = yaml.safe_load(run().stdout)
    assert len(resolved) == len(fields(config.TrainConfig))
    assert resolved["overfit_first_n_samples"] == 64 and resolved["lr"] == 1e-3
    typo = run("--decoder_d_modl", "512")
    assert typo.returncode == 1 and "'decoder_d_modl'" in typo.stderr


def decoder_params_by_hand(d: int, n_layer: int, n_mels: int = 80) -> int:
    """model.MelDecoder counted from its definition."""
    block = (3 * d                                # self, cross, MLP RMSNorm weights
             + 2 * (d * d + d * 2 * d + d * d)    # self and cross Attention: q, kv, proj
             + d * 8 * d + 4 * d * d              # SwiGLU fc, proj
             + 6 * d)                             # modulation_offset
    return ((n_mels * d + d) + 2 * (d * d + d) + (d * 6 * d + 6 * d)  # in_proj, t_mlp, t_modulation
            + n_layer * block + d + (d * n_mels + n_mels))            # blocks, norm, out_proj


def flops_from_weights(decoder, frames: float, tokens: float) -> float:
    """Forward matmul FLOPs per frame from the decoder's own Linear layers: 2 per weight for
    those applied to every frame, the cross-attention kv per text token instead; plus QK^T
    and AV (2 x 2 FLOPs per key and width) per block. The timestep MLPs run once per utterance."""
    total = 0.0
    for name, module in decoder.named_modules():
        if isinstance(module, torch.nn.Linear) and not name.startswith("t_"):
            scale = tokens / frames if name.endswith("cross_attn.kv") else 1.0
            total += 2 * module.weight.numel() * scale
    return total + len(decoder.blocks) * 4 * (frames + tokens) * decoder.d


def test_model_size_matches_a_hand_count(tiny_encoder_dir, tmp_path, capsys):
    out = tmp_path / "size.json"
    args = ["--text_encoder_name", tiny_encoder_dir, "--decoder_d_model", "64",
            "--decoder_n_layer", "2", "--decoder_n_head", "2", "--flops", "--frames", "200",
            "--text_tokens", "40", "--json_out", str(out)]
    assert load_script("model_size").main(args) == 0
    result = json.loads(out.read_text())
    p, width = result["parameters"], 64  # the tiny encoder's d_model
    from transformers import T5EncoderModel  # the real weights, which the script never loads
    encoder = sum(x.numel() for x in T5EncoderModel.from_pretrained(tiny_encoder_dir).parameters())
    assert p["text_encoder"] == p["frozen"] == encoder
    assert p["decoder"] == decoder_params_by_hand(64, 2) == 208_720
    assert p["text_proj"] == width * 64 and p["duration_predictor"] == width * 256 + 256 + 256 + 1
    assert p["trainable"] == p["text_proj"] + p["duration_predictor"] + p["decoder"]
    cfg = config.load_config(None, {"text_encoder_name": tiny_encoder_dir, "decoder_d_model": 64,
                                    "decoder_n_layer": 2, "decoder_n_head": 2})
    forward = flops_from_weights(FlowTTS(cfg).decoder, 200, 40)
    assert result["flops_per_frame"]["forward"] == pytest.approx(forward, rel=1e-9)
    assert result["flops_per_frame"]["train"] == pytest.approx(3 * forward, rel=1e-9)
    assert f"{p['decoder']:,}" in capsys.readouterr().out


def test_model_size_of_the_ljspeech_config_needs_no_download(tmp_path, capsys):
    out = tmp_path / "size.json"
    assert load_script("model_size").main(["--flops", "--config", "configs/ljspeech.yaml",
                                           "--json_out", str(out)]) == 0
    result, printed = json.loads(out.read_text()), capsys.readouterr().out
    d, inner, ff = 1472, 6 * 64, 3584  # ByT5-small encoder: 12 layers of q,k,v,o, gated FF, 2 norms
    encoder = 384 * d + 12 * (4 * d * inner + 3 * d * ff + 2 * d) + 32 * 6 + d  # + rel. bias, norm
    assert result["parameters"]["text_encoder"] == encoder == 217_657_472
    assert result["parameters"]["decoder"] == decoder_params_by_hand(1024, 8)
    assert f"{decoder_params_by_hand(1024, 8):,}" in printed
    train_gflop = result["flops_per_frame"]["train"] / 1e9
    assert train_gflop == pytest.approx(0.99, abs=0.005)  # as quoted in docs/BENCHMARKS.md
    assert "google/byt5-small" in result["encoder_config"]  # from the cache or the published shape


# --- 2. data, predictions, curves --------------------------------------------------------------

def test_visualize_data_draws_the_real_tail_silence(tiny_dataset, tmp_path):
    script, dataset = load_script("visualize_data"), PreparedDataset(tiny_dataset)
    rows = dataset.rows("train", 1024, 256)  # 8 utterances: evenly spaced 3 are 0, 2, 5
    cfg = config.load_config(None, {"data_dir": tiny_dataset, "silence_prob": 1.0})
    for prob in (1.0, 0.0):
        out = tmp_path / f"grid_{prob}.png"
        assert script.main(["--data_dir", tiny_dataset, "--out", str(out), "--n", "3",
                            "--silence_prob", str(prob)]) == 0
        info = json.loads(out.with_suffix(".json").read_text())
        picked = [rows[0], rows[2], rows[5]]
        assert info["ids"] == [dataset.ids[r] for r in picked]
        assert info["speech_frames"] == [int(dataset.n_frames[r]) for r in picked]
        image = imread(out)
        assert image.shape[:2] == (info["image_height"], info["image_width"]) == (456, 800)
        assert image[..., :3].std() > 0.05  # something was drawn
    extra = [f - s for f, s in zip(info["frames"], info["speech_frames"])]
    assert extra == [0, 0, 0]  # the last loop ran with silence_prob 0
    with_silence = json.loads((tmp_path / "grid_1.0.json").read_text())["frames"]
    assert with_silence == [Collate(dataset, cfg).utterance(r)[0].shape[0] for r in picked]
    assert all(0 < f - int(dataset.n_frames[r]) <= 0.5 * audio.FRAMES_PER_SECOND
               for f, r in zip(with_silence, picked))


def test_visualize_predictions_mels_and_durations(tiny_run, tiny_dataset, tmp_path):
    ckpt, out = os.path.join(tiny_run["out_dir"], "latest.pt"), tmp_path / "pred"
    assert load_script("visualize_predictions").main([
        "--ckpt", ckpt, "--data_dir", tiny_dataset, "--out", str(out), "--n", "2",
        "--steps", "2", "--device", "cpu"]) == 0
    result = json.loads((out / "predictions.json").read_text())
    dataset, model = PreparedDataset(tiny_dataset), checkpoint.model_from_checkpoint(ckpt, "cpu")
    rows = dataset.rows("val", 1024, 256)
    assert result["step"] == 4 and [u["id"] for u in result["utterances"]] == [
        dataset.ids[r] for r in rows]
    assert [u["true_seconds"] for u in result["utterances"]] == pytest.approx(
        dataset.n_frames[rows] / audio.FRAMES_PER_SECOND, abs=1e-4)
    assert result["duration_error"] == pytest.approx(evaluator.duration_error(model, dataset, rows))
    for sample, utt in zip(result["samples"], result["utterances"]):  # n=2: both val utterances
        assert sample["id"] == utt["id"]
        predicted = round(utt["predicted_seconds"] * audio.FRAMES_PER_SECOND)
        assert sample["generated_frames"] == predicted  # sampled at the predicted length
        assert imread(out / sample["image"]).shape[:2] == (128, 640)  # generated | ground truth
    assert imread(out / "durations.png").shape[:2] == (360, 360)


def test_visualize_predictions_train_split_is_what_an_overfit_run_saw(tiny_run, tiny_dataset,
                                                                     tmp_path):
    state = torch.load(os.path.join(tiny_run["out_dir"], "latest.pt"), weights_only=True)
    state["config"]["overfit_first_n_samples"] = 3
    ckpt = checkpoint.save(str(tmp_path / "overfit3"), state, keep=1)
    out = tmp_path / "pred"
    assert load_script("visualize_predictions").main([
        "--ckpt", ckpt, "--data_dir", tiny_dataset, "--out", str(out), "--n", "1", "--split",
        "train", "--steps", "1", "--device", "cpu"]) == 0
    result = json.loads((out / "predictions.json").read_text())
    dataset = PreparedDataset(tiny_dataset)
    assert [u["id"] for u in result["utterances"]] == [dataset.ids[r] for r in
                                                       dataset.rows("train", 1024, 256)[:3]]
    assert len(result["samples"]) == 1 and (out / result["samples"][0]["image"]).stat().st_size


def test_plot_run_draws_a_run_still_writing(tiny_run, tmp_path, capsys):
    records = (open(os.path.join(tiny_run["out_dir"], "metrics.jsonl")).read()
               + json.dumps({"step": 4, "eval/wer": 0.75}) + "\n" + '{"step": 5, "train/lo')
    (tmp_path / "metrics.jsonl").write_text(records)  # the last line is still being written
    assert load_script("plot_run").main([str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    for key, n in (("train/loss", 4), ("val/flow_loss", 2), ("eval/wer", 1), ("time/step_sec", 4)):
        assert re.search(rf"^{key}\s+{n} points", printed, re.M), (key, printed)
    assert "last 0.75 at step 4" in printed
    assert imread(tmp_path / "training.png").shape[:2] == (288, 1080)


def test_plot_run_overlays_two_runs(tiny_run, tmp_path, capsys):
    source = open(os.path.join(tiny_run["out_dir"], "metrics.jsonl")).read()
    for name, extra in (("eager", ""), ("compiled", json.dumps({"step": 9, "train/loss": 0.5}))):
        os.makedirs(tmp_path / name)
        (tmp_path / name / "metrics.jsonl").write_text(source + extra + "\n")
    out = tmp_path / "compare.png"
    script = load_script("plot_run")
    assert script.main([str(tmp_path / "eager"), str(tmp_path / "compiled"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"^eager train/loss\s+4 points", printed, re.M), printed
    assert re.search(r"^compiled train/loss\s+5 points, last 0.5 at step 9", printed, re.M)
    assert imread(out).shape[:2] == (288, 1080)
    with pytest.raises(SystemExit):  # two runs and no --out: where would it go?
        script.main([str(tmp_path / "eager"), str(tmp_path / "compiled")])


def test_tiny_run_logs_the_documented_metrics(tiny_run):
    logged = {key for record in read_metrics(tiny_run["out_dir"]) for key in record}
    assert set(DOCUMENTED_KEYS) <= logged, set(DOCUMENTED_KEYS) - logged
    dataset = PreparedDataset(tiny_run["data_dir"])
    seconds = dataset.n_frames / audio.FRAMES_PER_SECOND  # every utterance's length
    for record in read_metrics(tiny_run["out_dir"]):
        if "train/duration_target_sec" in record:  # a batch mean of the utterances' seconds
            assert seconds.min() <= record["train/duration_target_sec"] <= seconds.max()
            assert record["train/duration_pred_sec"] > 0
            utterances_per_step = record["perf/samples_per_sec"] * record["time/step_sec"]
            assert 1 <= utterances_per_step <= tiny_run["batch_size"] + 1e-6
    assert sorted(os.listdir(os.path.join(tiny_run["out_dir"], "eval"))) == ["step_2", "step_4"]


def test_stop_file_pauses_and_the_same_command_resumes(tiny_run, tmp_path, capsys):
    run_dir = str(tmp_path / "paused")
    shutil.copytree(tiny_run["out_dir"], run_dir)  # a run at step 4
    command = as_argv({**tiny_run, "out_dir": run_dir, "max_steps": 6})
    open(os.path.join(run_dir, "STOP"), "w").close()  # touch RUN/STOP
    train.main(command)
    assert "at step 4 (stopped" in capsys.readouterr().out
    assert sorted(losses(run_dir)) == [1, 2, 3, 4]
    os.remove(os.path.join(run_dir, "STOP"))  # rm RUN/STOP, then the same command
    train.main(command)
    assert "resumed from" in capsys.readouterr().out
    assert sorted(losses(run_dir)) == [1, 2, 3, 4, 5, 6]
    assert torch.load(os.path.join(run_dir, "latest.pt"), weights_only=True)["step"] == 6


# --- 3. full evaluation and the numbers a result reports ---------------------------------------

def test_full_evaluation_reports_wer_beside_the_floor(tiny_run, tiny_dataset, tmp_path):
    try:
        asr.load_asr("faster-whisper", "tiny.en")
    except asr.ASRError as exc:
        pytest.skip(f"no offline Whisper tiny.en: {exc}")
    out = tmp_path / "eval_val"  # the documented command + a tiny ASR, Griffin-Lim, short clips
    assert load_script("eval_checkpoint").main([
        "--ckpt", os.path.join(tiny_run["out_dir"], "latest.pt"), "--data_dir", tiny_dataset,
        "--split", "val", "--resynth", "--out", str(out), "--asr", "faster-whisper",
        "--whisper", "tiny.en", "--vocoder", "griffinlim", "--steps", "2",
        "--duration_scale", "0.15", "--device", "cpu"]) == 0
    model = json.loads((out / "summary.json").read_text())
    floor = json.loads((out / "resynth" / "summary.json").read_text())
    for summary in (model, floor):
        assert summary["n_prompts"] == 2 and 0 <= summary["wer"]
        assert summary["whisper_model"] == "faster-whisper:tiny.en"
        assert summary["vocoder"] == "griffinlim"
    assert (model["steps"], model["cfg"]) == (2, 2.0) and model["duration_error"] >= 0
    run_info = read_metrics(tiny_run["out_dir"])[0]["run"]  # device and code version of the run
    assert run_info["device"] == "cpu" and run_info["git_revision"]


# --- 4. fine-tuning ----------------------------------------------------------------------------

def test_fine_tune_starts_from_the_source_weights_with_a_fresh_optimizer(tiny_run, tmp_path,
                                                                         capsys):
    source = os.path.join(tiny_run["out_dir"], "latest.pt")  # 4 steps of training
    tune = {**tiny_run, "init_from": source, "out_dir": str(tmp_path / "tune"), "max_steps": 2,
            "eval_interval": 0}
    train.main(as_argv(tune))
    assert f"initialised weights from {source} (step 4)" in capsys.readouterr().out
    # Its first logged loss is the flow loss, before any update, of its first batch (epoch 0,
    # position 0: a different batch from the one the source would train on next), so it must
    # be the source weights' loss on that batch, computed here without train.py.
    dataset = PreparedDataset(tiny_run["data_dir"])
    model = checkpoint.model_from_checkpoint(source, "cpu")
    cfg = model.cfg
    rows = BatchStream(dataset, dataset.rows("train", cfg.block_size, cfg.max_text_length),
                       cfg).epoch_batches(0)[0]
    batch = Collate(dataset, cfg, epoch=0)(rows)
    with torch.no_grad():
        expected = model(batch).flow_loss.item()
        torch.manual_seed(cfg.seed)  # the weights train.py would start from without init_from
        untrained = FlowTTS(cfg).eval()(batch).flow_loss.item()
    logged = read_metrics(tune["out_dir"])
    first = losses(tune["out_dir"])[1]
    assert first == pytest.approx(expected, rel=1e-6)
    assert abs(untrained - expected) > 1e-3  # so the check above can tell them apart
    # A fresh optimizer and schedule: warmup from step 0, AdamW has seen 2 updates, not 4 + 2.
    assert [r["optim/lr"] for r in logged if "optim/lr" in r] == pytest.approx(
        [tune["lr"] * 1 / tune["warmup_steps"], tune["lr"] * 2 / tune["warmup_steps"]])
    state = torch.load(os.path.join(tune["out_dir"], "latest.pt"), weights_only=True)
    adamw_steps = {float(s["step"]) for s in state["optimizers"][-1]["state"].values()}
    assert state["step"] == 2 and adamw_steps == {2.0}
    source_steps = torch.load(source, weights_only=True)["optimizers"][-1]["state"]
    assert {float(s["step"]) for s in source_steps.values()} == {4.0}


def test_fine_tune_refuses_another_model_shape(tiny_run, tmp_path):
    source = os.path.join(tiny_run["out_dir"], "latest.pt")
    other = {**tiny_run, "init_from": source, "out_dir": str(tmp_path / "wide"),
             "decoder_d_model": 96}
    with pytest.raises(checkpoint.CheckpointError, match="decoder_d_model 64 -> 96"):
        train.main(as_argv(other))
    assert not os.path.exists(os.path.join(other["out_dir"], "latest.pt"))


# --- 5. two nodes ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_on_localhost_match_one_process(tiny_run, tmp_path):
    """What run.sh --nnodes 2 does on two machines, with one CPU process per "node" (gloo):
    the global batch of 2 x 2 must give the one-process run's (batch 4) losses."""
    two = {**tiny_run, "batch_size": tiny_run["batch_size"] // 2, "out_dir": str(tmp_path / "two")}
    port, env = free_port(), {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    logs = [tmp_path / f"node{rank}.log" for rank in (0, 1)]  # files: a full pipe would block
    with open(logs[0], "w") as out0, open(logs[1], "w") as out1:
        nodes = [subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank",
             str(rank), "--nproc_per_node", "1", "--master_addr", "127.0.0.1", "--master_port",
             str(port), "train.py", *as_argv(two)], cwd=REPO, env=env, stdout=out,
            stderr=subprocess.STDOUT) for rank, out in enumerate((out0, out1))]
        try:
            codes = [node.wait(timeout=240) for node in nodes]
        finally:
            for node in nodes:
                node.kill()  # only still running if the wait timed out
    assert codes == [0, 0], "\n".join(log.read_text()[-3000:] for log in logs)
    assert read_metrics(two["out_dir"])[0]["run"]["world_size"] == 2
    one, both = losses(tiny_run["out_dir"]), losses(two["out_dir"])
    assert sorted(one) == sorted(both) == [1, 2, 3, 4]
    for step in one:
        assert both[step] == pytest.approx(one[step], rel=1e-4, abs=1e-5), step
    assert sorted(os.listdir(os.path.join(two["out_dir"], "eval"))) == ["step_2", "step_4"]
