import os
import subprocess
import sys
import types

import numpy as np
import pytest
import torch
import yaml

import checkpoint
import optim
import train
from conftest import BYT5_NAME, REPO, TINY_TEXTS, as_argv
from metric import read_metrics


SEED_OVERFIT64 = os.path.join(REPO, "tests", "fixtures", "seed_ljspeech_overfit64.yaml")


def losses(run_dir: str) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in read_metrics(run_dir) if "train/loss" in r}


def test_a_run_names_its_commit_and_says_when_the_code_was_edited(tmp_path):
    git = lambda *args: subprocess.run(["git", "-C", str(tmp_path), *args], check=True,
                                       capture_output=True, text=True).stdout.strip()
    assert train.code_revision(str(tmp_path)) == "unknown"  # not a checkout
    git("init", "-q")
    (tmp_path / "model.py").write_text("d = 512\n")
    git("add", "model.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    commit = git("rev-parse", "--short=7", "HEAD")
    (tmp_path / "run.log").write_text("untracked files are not edits\n")
    assert train.code_revision(str(tmp_path)) == commit
    (tmp_path / "model.py").write_text("d = 1024\n")
    assert train.code_revision(str(tmp_path)) == commit + "-dirty"


def test_overfitting_four_utterances_halves_the_loss(tiny_overrides):
    overrides = {**tiny_overrides, "overfit_first_n_samples": 4, "max_steps": 150,
                 "text_condition_dropout": 0.0, "warmup_steps": 10, "lr": 3e-3,
                 "decoder_d_model": 96, "decoder_n_head": 4}
    train.main(as_argv(overrides))
    curve = losses(overrides["out_dir"])
    start = sum(curve[s] for s in range(1, 6)) / 5
    end = sum(curve[s] for s in range(146, 151)) / 5
    assert end < 0.5 * start, (start, end)


def test_the_seeds_overfit_config_runs_its_1000_steps_on_its_schedule(tiny_overrides):
    """The seed's configs/ljspeech_overfit64.yaml as it is (max_epochs 1000, no max_steps),
    shrunk to a tiny model. Its 64 utterances in 4 micro-batches of 16 were one step per epoch,
    so the seed ran 1000 steps with the cosine ending at min_lr; here 8 utterances in one batch
    of 8 are one step per epoch (one micro-batch, not 4: a quarter of the time)."""
    run_dir = tiny_overrides["out_dir"]
    shrink = {key: tiny_overrides[key] for key in ("data_dir", "text_encoder_name", "out_dir")}
    shrink.update(decoder_d_model=32, decoder_n_layer=1, decoder_n_head=2, batch_size=8,
                  effective_batch_size=8, eval_steps=2, eval_vocoder="none")
    train.main(["--config", SEED_OVERFIT64, *as_argv(shrink)])
    lr = {r["step"]: r["optim/lr"] for r in read_metrics(run_dir) if "optim/lr" in r}
    assert sorted(lr) == list(range(10, 1001, 10))  # log_interval 10; not one step more
    assert checkpoint.load(os.path.join(run_dir, "latest.pt"))["step"] == 1000
    assert lr[10] == pytest.approx(1e-4) and lr[100] == pytest.approx(1e-3)  # warmup 100
    assert lr[550] == pytest.approx((1e-3 + 6e-5) / 2)  # the cosine's middle
    assert lr[1000] == pytest.approx(6e-5)  # min_lr at the last step
    loss = losses(run_dir)
    assert loss[1000] < 0.5 * loss[10], (loss[10], loss[1000])  # and it learned
    with open(os.path.join(run_dir, "config.yaml")) as f:
        resolved = yaml.safe_load(f)
    assert (resolved["max_steps"], resolved["lr_schedule_steps"]) == (1000, 1000)
    assert os.path.exists(os.path.join(run_dir, "eval", "step_1000", "mels.npz"))  # eval_interval


@pytest.mark.parametrize("max_steps,max_epochs,batches,accum,schedule,expected", [
    (200000, 1000, 4, 4, 0, (1000, 1000)),  # the seed's overfit-64: one step per epoch
    (200000, 40, 1, 1, 0, (40, 40)),  # 40 epochs of one step: 40 steps, not 41
    (500, 1000, 4, 4, 0, (500, 500)),  # max_steps comes first
    (200000, 3, 5, 2, 0, (8, 8)),  # 15 micro-batches, 2 per step: the last step ends epoch 3
    (200000, 0, 5, 2, 7000, (200000, 7000)),  # no epoch bound; lr_schedule_steps as set
])
def test_run_length_is_the_first_bound_reached(tiny_overrides, max_steps, max_epochs, batches,
                                               accum, schedule, expected):
    import config
    cfg = config.load_config(None, {"max_steps": max_steps, "max_epochs": max_epochs,
                                    "lr_schedule_steps": schedule, "warmup_steps": 2})
    cfg = train.resolve_run_length(cfg, batches, accum)
    assert (cfg.max_steps, cfg.lr_schedule_steps) == expected
    last = optim.lr_at(cfg.lr_schedule_steps - 1, cfg)
    assert last == pytest.approx(cfg.min_lr) and optim.lr_at(cfg.warmup_steps, cfg) < cfg.lr


class SteadyClock:
    """time.time for train.py, which reads it at each step's start and end: every step takes
    exactly `step_seconds` of training time."""

    def __init__(self, step_seconds: float):
        self.now, self.step_seconds = 0.0, step_seconds

    def time(self) -> float:
        self.now += self.step_seconds
        return self.now


def test_seconds_schedule_runs_on_the_training_clock_across_a_resume(tiny_overrides,
                                                                    monkeypatch):
    import config
    monkeypatch.setattr(train, "time", SteadyClock(1.0))
    run = {**tiny_overrides, "lr_schedule_seconds": 10, "max_train_seconds": 10,
           "warmup_steps": 0, "max_steps": 100, "log_interval": 1}
    train.main(as_argv({**run, "max_train_seconds": 4}))
    state = checkpoint.load(os.path.join(run["out_dir"], "latest.pt"))
    assert (state["step"], state["train_seconds"]) == (4, 4.0)
    train.main(as_argv(run))  # resumes at 4 s of the 10-s budget and schedule
    assert checkpoint.load(os.path.join(run["out_dir"], "latest.pt"))["step"] == 10
    cfg = config.load_config(None, {k: v for k, v in run.items() if k != "out_dir"})
    lr = {r["step"]: r["optim/lr"] for r in read_metrics(run["out_dir"]) if "optim/lr" in r}
    # step n starts at n - 1 seconds: the cosine over 10 s, not over steps, and not restarted
    assert lr == {n: pytest.approx(optim.cosine(cfg, (n - 1) / 10)) for n in range(1, 11)}
    step_sec = [r["time/step_sec"] for r in read_metrics(run["out_dir"]) if "time/step_sec" in r]
    assert step_sec == [1.0] * 10  # the resumed window starts at the saved clock


def test_resume_continues_with_the_same_losses(tiny_overrides, tmp_path):
    common = {**tiny_overrides, "lr_schedule_steps": 12, "max_steps": 12, "ema_decay": 0.9}
    straight = {**common, "out_dir": str(tmp_path / "straight")}
    train.main(as_argv(straight))
    split = {**common, "out_dir": str(tmp_path / "split")}
    train.main(as_argv({**split, "max_steps": 5}))
    train.main(as_argv(split))  # picks up latest.pt at step 5
    a, b = losses(straight["out_dir"]), losses(split["out_dir"])
    assert sorted(b) == list(range(1, 13))
    for step in range(6, 13):
        assert abs(a[step] - b[step]) < 1e-6, (step, a[step], b[step])


def test_trains_on_google_byt5_small_from_the_hub_cache(tiny_overrides, offline_hub):
    overrides = {k: v for k, v in tiny_overrides.items() if k != "text_encoder_name"}
    train.main(as_argv({**overrides, "max_steps": 3, "decoder_d_model": 32}))
    state = checkpoint.load(os.path.join(overrides["out_dir"], "latest.pt"))
    assert state["step"] == 3 and state["config"]["text_encoder_name"] == BYT5_NAME
    assert state["model"]["text_proj.weight"].shape == (32, 64)  # from the tiny stand-in's 64
    assert not any(k.startswith("text_encoder.t5.") for k in state["model"])  # frozen: not saved


def test_resume_takes_any_checkpoint(tiny_overrides, tmp_path):
    common = {**tiny_overrides, "lr_schedule_steps": 6, "max_steps": 6, "save_interval": 3}
    first = {**common, "out_dir": str(tmp_path / "first")}
    train.main(as_argv(first))
    step_3 = os.path.join(first["out_dir"], "step_00000003.pt")
    second = {**common, "out_dir": str(tmp_path / "second")}
    train.main(as_argv({**second, "resume": step_3}))  # an empty out_dir: from step 3 of first
    a, b = losses(first["out_dir"]), losses(second["out_dir"])
    assert sorted(b) == [4, 5, 6]
    for step in b:
        assert abs(a[step] - b[step]) < 1e-6, (step, a[step], b[step])
    assert checkpoint.load(os.path.join(second["out_dir"], "latest.pt"))["step"] == 6
    missing = str(tmp_path / "nope.pt")
    with pytest.raises(checkpoint.CheckpointError, match=f"{missing}: not a loadable"):
        train.main(as_argv({**second, "resume": missing}))


class FakeWandb:
    """What MetricLogger calls of the wandb package, recorded."""

    def __init__(self):
        self.runs = []

    def init(self, **settings):
        self.runs.append(settings)
        return self

    def log(self, values, step):
        pass

    def finish(self):
        pass


def test_run_name_names_the_run_and_no_wandb_turns_wandb_off(tiny_overrides, tmp_path,
                                                              monkeypatch):
    wandb = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    run = {**tiny_overrides, "max_steps": 2, "wandb_project": "nanoaudio", "run_name": "habits"}
    train.main(as_argv(run))
    assert [(r["project"], r["name"]) for r in wandb.runs] == [("nanoaudio", "habits")]
    assert read_metrics(run["out_dir"])[0]["run"]["run_name"] == "habits"
    other = str(tmp_path / "other")
    train.main([*as_argv({**run, "out_dir": other, "run_name": ""}), "--no_wandb"])
    assert len(wandb.runs) == 1  # no W&B run the second time
    assert read_metrics(other)[0]["run"]["run_name"] == "other"  # out_dir's folder name


def test_stop_file_saves_and_exits_cleanly(tiny_overrides):
    run_dir = tiny_overrides["out_dir"]
    os.makedirs(run_dir)
    open(os.path.join(run_dir, "STOP"), "w").close()
    train.main(as_argv({**tiny_overrides, "max_steps": 50}))
    state = torch.load(os.path.join(run_dir, "latest.pt"), weights_only=True)
    assert state["step"] == 0 and "optimizers" in state and state["config"]["max_steps"] == 50


def test_two_gloo_ranks_match_one_process_with_the_same_global_batch(tiny_overrides, tmp_path):
    # mels only: vocoding an untrained model's 12-s clips took 3 of this test's 3.5 minutes
    common = {**tiny_overrides, "max_steps": 6, "eval_interval": 3, "eval_asr": "none",
              "eval_vocoder": "none", "eval_num_samples": 2, "eval_steps": 2}
    one = {**common, "batch_size": 4, "out_dir": str(tmp_path / "one")}
    two = {**common, "batch_size": 2, "out_dir": str(tmp_path / "two")}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}
    subprocess.run([sys.executable, "train.py", *as_argv(one)], cwd=REPO, env=env, check=True,
                   timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node", "2", "train.py", *as_argv(two)], cwd=REPO, env=env,
                   check=True, timeout=300)  # also: rank 1 waits at the eval barrier, no hang
    a, b = losses(one["out_dir"]), losses(two["out_dir"])
    assert sorted(a) == sorted(b) == list(range(1, 7))
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-4, abs=1e-5), step
    assert os.path.isfile(os.path.join(two["out_dir"], "eval", "step_3", "mels.npz"))


def test_evaluates_by_the_training_clock_and_keeps_test_mels(tiny_overrides,
                                                            tiny_dataset_with_test, monkeypatch):
    """eval_interval_seconds: an evaluation at the first step past each multiple of the training
    time (the speedrun's clock), and one at the end, each with the val mels and the test
    split's. A fake clock makes every step last 0.1 s (the clock reads twice a step)."""
    ticks = iter(range(10 ** 6))
    monkeypatch.setattr(train, "time", types.SimpleNamespace(time=lambda: 0.1 * next(ticks)))
    run = {**tiny_overrides, "data_dir": tiny_dataset_with_test, "max_steps": 12,
           "eval_interval_seconds": 0.33, "eval_prompts": "val", "eval_num_samples": 0,
           "eval_steps": 2, "eval_keep_test": True, "eval_asr": "none", "eval_vocoder": "none"}
    train.main(as_argv(run))
    evals = [r for r in read_metrics(run["out_dir"]) if "eval/train_seconds" in r]
    assert [r["step"] for r in evals] == [4, 7, 10, 12]
    assert [r["eval/train_seconds"] for r in evals] == pytest.approx([0.4, 0.7, 1.0, 1.2])
    for r in evals:
        folder = os.path.join(run["out_dir"], "eval", f"step_{r['step']}")
        val = np.load(os.path.join(folder, "mels.npz"))
        test = np.load(os.path.join(folder, "test", "mels.npz"))
        assert list(val["texts"]) == TINY_TEXTS[7:9] and list(test["texts"]) == TINY_TEXTS[9:]
        assert test["mel_0"].shape[1] == 80
