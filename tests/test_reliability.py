"""Faults a long run meets, each provoked for real: stop signals, kill -9 mid-write, damaged
and malicious checkpoints, non-finite losses, a changed config, bad command lines.
docs/RELIABILITY.md maps each fault to its test."""
import errno
import glob
import io
import os
import pickle
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

import checkpoint
import train
from conftest import REPO, TINY_TEXTS, as_argv, load_script, write_tone_corpus
from data import PreparedDataset
from metric import read_metrics

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}


def train_cli(argv: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "train.py", *argv], cwd=REPO, env=ENV, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def loss_steps(run_dir: str) -> list[int]:
    return [r["step"] for r in read_metrics(run_dir) if "train/loss" in r]


def all_finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


def optimizer_tensors(state: dict) -> list[torch.Tensor]:
    return [v for opt in state["optimizers"] for per_param in opt["state"].values()
            for v in per_param.values() if torch.is_tensor(v)]


def poisoned_copy(dataset: str, dest: str, rows) -> str:
    """A copy of the prepared dataset whose mels hold NaN and inf in the given utterances."""
    shutil.copytree(dataset, dest)
    index = pq.read_table(os.path.join(dest, "index.parquet"))
    offsets, lengths = index["frame_offset"].to_pylist(), index["n_frames"].to_pylist()
    mels = np.memmap(os.path.join(dest, "mels.f16"), dtype=np.float16, mode="r+").reshape(-1, 80)
    for row in rows:
        mels[offsets[row]:offsets[row] + lengths[row]:2] = np.nan
        mels[offsets[row] + 1] = np.inf
    mels.flush()
    return dest


# ----------------------------------------------------------------------------- stop signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_to_the_process_group_saves_exits_0_and_resumes(tiny_overrides, sig):
    # Sent to the whole group, as a scheduler, torchrun or Ctrl-C does: the DataLoader worker
    # gets it too and must not die mid-step.
    overrides = {**tiny_overrides, "max_steps": 10000, "num_workers": 2}
    run_dir = overrides["out_dir"]
    child = train_cli(as_argv(overrides), start_new_session=True)
    deadline = time.time() + 120
    while not (os.path.exists(run_dir + "/metrics.jsonl") and len(loss_steps(run_dir)) >= 3):
        assert child.poll() is None and time.time() < deadline, child.communicate()
        time.sleep(0.05)
    os.killpg(child.pid, sig)
    stdout, stderr = child.communicate(timeout=120)
    assert child.returncode == 0, stderr
    assert f"(stopped by {sig.name})" in stdout and "Traceback" not in stderr
    stopped_at = torch.load(run_dir + "/latest.pt", weights_only=True)["step"]
    assert stopped_at >= 3 and loss_steps(run_dir) == list(range(1, stopped_at + 1))

    train.main(as_argv({**overrides, "max_steps": stopped_at + 2}))  # the restart
    assert loss_steps(run_dir) == list(range(1, stopped_at + 3))  # continues, nothing repeated
    assert torch.load(run_dir + "/latest.pt", weights_only=True)["step"] == stopped_at + 2


# ----------------------------------------------------------------------------- a full disk


class FullDisk(io.FileIO):
    """A file on a disk with `room` bytes left: past them write() fails as a full disk does."""
    room = 0

    def write(self, data):
        if len(data) > FullDisk.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        FullDisk.room -= len(data)
        return super().write(data)


def open_on_a_full_disk(room: int, name_part: str):
    """A stand-in for `open` in one module: files whose name holds name_part are written on a
    disk with `room` bytes left; everything else opens as usual."""
    def fake_open(path, mode="r", *args, **kwargs):
        if name_part not in os.path.basename(str(path)) or "w" not in mode:
            return open(path, mode, *args, **kwargs)
        FullDisk.room = room
        raw = FullDisk(path, "w")
        return raw if "b" in mode else io.TextIOWrapper(io.BufferedWriter(raw), encoding="utf-8")
    return fake_open


@pytest.mark.parametrize("room", [0, 50_000])  # full at once, or partway through the file
def test_a_full_disk_during_a_checkpoint_save_keeps_the_previous_one(tmp_path, monkeypatch, room):
    run_dir = str(tmp_path / "run")
    state = lambda step: {"model": {"w": torch.full((100_000,), float(step))}, "config": {},
                          "step": step}
    checkpoint.save(run_dir, state(1), keep=3)
    monkeypatch.setattr(checkpoint, "open", open_on_a_full_disk(room, ".tmp"), raising=False)
    with pytest.raises(checkpoint.CheckpointError) as exc:
        checkpoint.save(run_dir, state(2), keep=3)
    message = str(exc.value)
    assert os.path.join(run_dir, "latest.pt") in message and "No space left on device" in message
    assert os.listdir(run_dir) == ["latest.pt"]  # no temp file left, nothing renamed
    kept = checkpoint.load_latest(run_dir)
    assert kept["step"] == 1 and bool((kept["model"]["w"] == 1.0).all())


@pytest.mark.parametrize("where", ["mels.f16", "index.parquet", "dataset_stats.json"])
def test_a_full_disk_during_prepare_keeps_the_previous_dataset(tmp_path, monkeypatch, capsys,
                                                               where):
    prep = load_script("prepare_ljspeech")
    src = write_tone_corpus(str(tmp_path / "src"), TINY_TEXTS[:4])
    out = str(tmp_path / "out")
    prep.prepare(out, src=src)
    mels = open(os.path.join(out, "mels.f16"), "rb").read()
    if where == "index.parquet":  # pyarrow writes it through its own file, not `open`
        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        monkeypatch.setattr(prep.pq, "write_table", full)
    else:
        monkeypatch.setattr(prep, "open", open_on_a_full_disk(100, where), raising=False)
    assert prep.main(["--out", out, "--src", src, "--force", "--workers", "1"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and errors[0].endswith("the previous dataset is unchanged")
    assert errors[0].startswith(f"error: {out}: cannot write the dataset (No space left on device")
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]  # no temp directory left
    assert open(os.path.join(out, "mels.f16"), "rb").read() == mels
    assert len(PreparedDataset(out)) == 4


# ----------------------------------------------------------------------------- checkpoint files

WRITERS = """
import os, sys, torch
import checkpoint
run_dir, size = sys.argv[1], int(sys.argv[2])
say = lambda *words: os.write(1, (" ".join(map(str, words)) + "\\n").encode())  # one atomic line
for _ in sys.stdin:  # one writer per line; forked, so torch is imported once, not per kill
    pid = os.fork()
    if pid == 0:
        try:
            state = checkpoint.load_latest(run_dir)
            step = state["step"] if state else 0
            while True:
                step += 1
                say("begin", step)
                checkpoint.save(run_dir, {"model": {"w": torch.full((size,), float(step))},
                                          "config": {}, "step": step}, keep=3)
                say("end", step)
        finally:
            os._exit(1)  # never go on as a second forking loop
    say("pid", pid)
    os.waitpid(pid, 0)
    say("dead")
"""
SIZE = 2_000_000  # float32: an 8 MB checkpoint, ~0.1 s to write and fsync here


def test_kill_9_while_writing_never_leaves_a_broken_checkpoint(tmp_path):
    run_dir, rng = str(tmp_path / "run"), random.Random(0)
    kills, mid_write, verified = 20, 0, 0
    writers = subprocess.Popen([sys.executable, "-c", WRITERS, run_dir, str(SIZE)], cwd=REPO,
                               env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    for _ in range(kills):
        writers.stdin.write("go\n")
        writers.stdin.flush()
        lines = []  # its pid and its first begin, in any order
        while not {"pid", "begin"} <= {line.split(" ")[0] for line in lines}:
            lines.append(writers.stdout.readline())
            assert lines[-1] and not lines[-1].startswith("dead"), lines  # died by itself
        pid = int(next(line for line in lines if line.startswith("pid ")).split()[1])
        time.sleep(rng.uniform(0.0, 0.3))
        os.kill(pid, signal.SIGKILL)
        while not lines[-1].startswith("dead"):
            lines.append(writers.stdout.readline())
        events = [line for line in lines if line.startswith(("begin ", "end "))]
        mid_write += events[-1].startswith("begin ")
        begun = [int(line.split()[1]) for line in events if line.startswith("begin ")]
        # latest.pt is the last complete save, or the one in flight if its rename happened.
        state = checkpoint.load(os.path.join(run_dir, "latest.pt"))
        assert verified <= state["step"] <= max(begun)
        verified = state["step"]
        for path in checkpoint.candidates(run_dir):  # every kept one is whole, too
            kept = checkpoint.load(path)
            assert torch.equal(kept["model"]["w"], torch.full((SIZE,), float(kept["step"]))), path
    writers.stdin.close()
    writers.wait(timeout=60)
    assert mid_write >= kills // 2 and verified >= kills // 2
    checkpoint.save(run_dir, {"model": {}, "config": {}, "step": verified + 1}, keep=3)
    assert not glob.glob(os.path.join(run_dir, ".latest.pt.tmp*"))  # killed writers' leftovers
    assert len(checkpoint.candidates(run_dir)) == 3


def test_damaged_latest_falls_back_with_a_warning_naming_it(tmp_path, capsys):
    run_dir = str(tmp_path / "run")
    for step in (1, 2, 3):
        checkpoint.save(run_dir, {"model": {"w": torch.full((1000,), float(step))},
                                  "config": {}, "step": step}, keep=3)
    latest = os.path.join(run_dir, "latest.pt")
    with open(latest, "r+b") as f:
        f.truncate(os.path.getsize(latest) // 2)
    assert checkpoint.load_latest(run_dir)["step"] == 2
    assert f"warning: {latest}: not a loadable checkpoint" in capsys.readouterr().err
    with open(os.path.join(run_dir, "step_00000002.pt"), "wb") as f:
        f.write(b"\x00garbage" * 100)
    assert checkpoint.load_latest(run_dir)["step"] == 1
    checkpoint.save(run_dir, {"model": {}, "config": {}, "step": 4}, keep=3)  # over the damage
    assert checkpoint.load_latest(run_dir)["step"] == 4
    for path in checkpoint.candidates(run_dir):
        open(path, "wb").close()
    with pytest.raises(checkpoint.CheckpointError, match=f"{run_dir}: no checkpoint"):
        checkpoint.load_latest(run_dir)


@pytest.mark.parametrize("keep,kept", [(3, [5, 4, 3]), (1, [5]), (0, [5, 4, 3, 2, 1])])
def test_keep_checkpoints_counts_latest_and_0_keeps_all(tmp_path, keep, kept):
    run_dir = str(tmp_path / "run")
    for step in range(1, 6):
        checkpoint.save(run_dir, {"model": {"w": torch.full((10,), float(step))}, "config": {},
                                  "step": step}, keep=keep)
    paths = checkpoint.candidates(run_dir)
    assert [checkpoint.load(p)["step"] for p in paths] == kept  # latest.pt first
    assert [os.path.basename(p) for p in paths[1:]] == [f"step_{s:08d}.pt" for s in kept[1:]]


class RunsCode:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (self.marker,)


@pytest.mark.parametrize("how", ["torch.save", "plain pickle"])
def test_a_pickle_that_runs_code_is_refused(tmp_path, how):
    marker, path = str(tmp_path / "pwned"), str(tmp_path / "evil.pt")
    payload = {"model": RunsCode(marker), "config": {}, "step": 1}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f, protocol=2)  # what torch.load expects of a legacy file
    with pytest.raises(checkpoint.CheckpointError, match=f"{path}: not a loadable checkpoint"):
        checkpoint.load(path)
    result = subprocess.run([sys.executable, "sample.py", "--ckpt", path, "--text", "hi", "--out",
                             str(tmp_path / "x.wav")], cwd=REPO, env=ENV, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert f"error: {path}: not a loadable checkpoint" in result.stderr
    assert not os.path.exists(marker) and not os.path.exists(tmp_path / "x.wav")
    with open(path, "rb") as f:  # the file really is an exploit: unpickled, it runs os.mkdir
        torch.load(f, weights_only=False) if how == "torch.save" else pickle.load(f)
    assert os.path.isdir(marker)


# ----------------------------------------------------------------------------- non-finite steps


def test_nonfinite_batches_are_skipped_and_logged(tiny_overrides, tiny_dataset, tmp_path):
    # Row 0 is one of the 8 training utterances: one batch of two per epoch is poisoned.
    data = poisoned_copy(tiny_dataset, str(tmp_path / "poisoned"), rows=[0])
    overrides = {**tiny_overrides, "data_dir": data, "max_steps": 8, "max_bad_steps": 3}
    train.main(as_argv(overrides))
    records = read_metrics(overrides["out_dir"])
    skipped = [r["step"] for r in records if r.get("train/skipped_nonfinite")]
    losses = {r["step"]: r["train/loss"] for r in records if "train/loss" in r}
    assert len(skipped) == 4 and sorted(losses) == list(range(1, 9))  # one step per epoch
    assert [s for s, x in losses.items() if x == "nan"] == skipped  # no update, no mean
    assert all(x > 0 for s, x in losses.items() if s not in skipped)
    state = torch.load(overrides["out_dir"] + "/latest.pt", weights_only=True)
    assert state["step"] == 8
    assert all_finite(state["model"].values()) and all_finite(optimizer_tensors(state))


def test_all_batches_nonfinite_stop_with_one_line_and_keep_the_good_checkpoint(
        tiny_overrides, tiny_dataset, tmp_path):
    train.main(as_argv({**tiny_overrides, "max_steps": 3}))
    data = poisoned_copy(tiny_dataset, str(tmp_path / "poisoned"), rows=range(10))
    child = train_cli(as_argv({**tiny_overrides, "data_dir": data, "max_steps": 20,
                               "max_bad_steps": 4}))
    _, stderr = child.communicate(timeout=300)
    assert child.returncode != 0 and "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: non-finite loss") and "(max_bad_steps 4)" in last
    skipped = [r["step"] for r in read_metrics(tiny_overrides["out_dir"])
               if r.get("train/skipped_nonfinite")]
    assert skipped == [4, 5, 6, 7]
    state = torch.load(tiny_overrides["out_dir"] + "/latest.pt", weights_only=True)
    assert state["step"] == 3 and all_finite(state["model"].values())


def test_nonfinite_weights_are_never_saved(tmp_path):
    run_dir = str(tmp_path / "run")
    checkpoint.save(run_dir, {"model": {"w": torch.ones(4)}, "config": {}, "step": 1}, keep=2)
    bad = {"model": {"w": torch.tensor([1.0, float("nan"), 0.0, 0.0])}, "config": {}, "step": 2}
    with pytest.raises(checkpoint.CheckpointError, match="model weight w is not finite"):
        checkpoint.save(run_dir, bad, keep=2)
    assert checkpoint.load_latest(run_dir)["step"] == 1 and os.listdir(run_dir) == ["latest.pt"]


# ----------------------------------------------------------------------------- config vs checkpoint


def test_resume_refuses_another_shape_and_logs_other_changes(tiny_overrides, capsys):
    run_dir = tiny_overrides["out_dir"]
    train.main(as_argv({**tiny_overrides, "max_steps": 3}))
    with pytest.raises(checkpoint.CheckpointError,
                       match=r"model shape: decoder_d_model 64 -> 96, decoder_n_layer 2 -> 3"):
        train.main(as_argv({**tiny_overrides, "decoder_d_model": 96, "decoder_n_layer": 3}))
    assert torch.load(run_dir + "/latest.pt", weights_only=True)["config"]["decoder_d_model"] == 64
    capsys.readouterr()
    train.main(as_argv({**tiny_overrides, "max_steps": 5, "lr": 1e-3}))
    out = capsys.readouterr().out
    assert "resuming with a changed setting: lr: 0.002 -> 0.001" in out
    assert "resuming with a changed setting: max_steps: 3 -> 5" in out
    assert loss_steps(run_dir) == [1, 2, 3, 4, 5]


# ----------------------------------------------------------------------------- bad command lines


def test_train_user_errors_are_one_line_and_write_nothing(tiny_overrides, tiny_dataset, tmp_path):
    no_stats = str(tmp_path / "no_stats")
    shutil.copytree(tiny_dataset, no_stats)
    os.remove(os.path.join(no_stats, "metadata", "dataset_stats.json"))
    (tmp_path / "bad.yaml").write_text("lr: [0.1, 0.2\n")
    out = str(tmp_path / "run")
    base = as_argv({**tiny_overrides, "out_dir": out})
    cases = {  # extra argv -> the message's telling part
        ("--data_dir", str(tmp_path / "none")): "none/metadata/dataset_stats.json not found",
        ("--data_dir", no_stats): "no_stats/metadata/dataset_stats.json not found",
        ("--no_such_key", "1"): "unknown config key(s) 'no_such_key'; valid keys: data_dir",
        ("--batch_size", "many"): "config key 'batch_size': must be an integer >= 1, got 'many'",
        ("--config", str(tmp_path / "bad.yaml")): "bad.yaml is not valid YAML",
        ("--config", str(tmp_path / "absent.yaml")): "cannot read config file",
        ("--max_steps", "0"): "config key 'max_steps': must be an integer >= 1, got '0'",
        ("--eval_cfg_scale", "nan"): "config key 'eval_cfg_scale': must be a finite number in",
        ("--out_dir", "/proc/nope/run"): "cannot create run directory /proc/nope/run",
    }
    children = {extra: train_cli([*base, *extra])  # all at once: mostly interpreter start-up
                for extra in cases}
    for extra, child in children.items():
        _, stderr = child.communicate(timeout=300)
        assert child.returncode != 0, extra
        assert "Traceback" not in stderr, (extra, stderr)
        assert stderr.strip().splitlines()[-1].startswith("error: "), (extra, stderr)
        assert cases[extra] in stderr, (extra, stderr)
    assert not os.path.exists(out)
