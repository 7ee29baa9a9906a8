"""run.sh's training command line: which flags reach torchrun and train.py, in the project's
spellings and the seed's. run.sh itself runs, in a copy of the repository whose .venv is
already "installed" and whose torchrun only records what it was given."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess

import pytest

import config
from conftest import REPO

FAKE_TORCHRUN = """#!/bin/sh
printf '%s\\n' "$@" > "$(dirname "$0")/args.txt"
env | grep '^WANDB_' | sort > "$(dirname "$0")/wandb_env.txt"
"""


def executable(path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def run_sh(tmp_path):
    """Call run.sh with args (and env); returns (torchrun's args, train.py's args, W&B env)."""
    root = tmp_path / "repo"
    (root / "data" / "ljspeech" / "metadata").mkdir(parents=True)
    (root / "data" / "ljspeech" / "metadata" / "dataset_stats.json").write_text("{}")
    shutil.copy(os.path.join(REPO, "run.sh"), root)
    shutil.copy(os.path.join(REPO, "requirements.txt"), root)
    with open(root / "requirements.txt", "rb") as f:
        stamp = hashlib.sha1(f.read()).hexdigest()[:12]
    venv_bin = root / ".venv" / "bin"
    venv_bin.mkdir(parents=True)
    (root / ".venv" / f".installed-{stamp}").touch()  # setup has nothing to do
    executable(venv_bin / "torchrun", FAKE_TORCHRUN)
    tools = tmp_path / "tools"  # so setup finds espeak-ng and never calls apt-get
    tools.mkdir()
    executable(tools / "espeak-ng", "#!/bin/sh\n")

    def call(*args, **env):
        base = {k: v for k, v in os.environ.items()
                if k not in ("NUM_GPUS", "BATCH_SIZE") and not k.startswith("WANDB_")}
        base["PATH"] = f"{tools}{os.pathsep}{base['PATH']}"
        subprocess.run(["bash", str(root / "run.sh"), *args], env={**base, **env}, check=True,
                       capture_output=True, timeout=60)
        argv = (venv_bin / "args.txt").read_text().splitlines()
        split = argv.index("train.py")
        wandb = dict(line.split("=", 1) for line in
                     (venv_bin / "wandb_env.txt").read_text().splitlines())
        return argv[:split], argv[split + 1:], wandb
    return call


def nproc(torchrun_args: list[str]) -> int:
    return int(torchrun_args[torchrun_args.index("--nproc_per_node") + 1])


def resolved(train_args: list[str]) -> config.TrainConfig:
    """The config train.py would run with (its --config path is relative to the repo)."""
    i = train_args.index("--config")
    path = os.path.join(REPO, train_args[i + 1])
    return config.config_from_argv(train_args[:i + 1] + [path] + train_args[i + 2:])


def test_the_configs_batch_size_is_kept_unless_asked(run_sh):
    torchrun, train, wandb = run_sh()
    assert nproc(torchrun) == 2 and "--standalone" in torchrun
    assert "--batch_size" not in train
    assert resolved(train).batch_size == 32  # configs/ljspeech.yaml's, not a run.sh default
    assert wandb == {"WANDB_MODE": "offline"}
    assert resolved(run_sh(BATCH_SIZE="24")[1]).batch_size == 24
    assert resolved(run_sh("--batch_size", "8")[1]).batch_size == 8
    assert resolved(run_sh("--batch_size", "8", BATCH_SIZE="24")[1]).batch_size == 8  # flag wins


@pytest.mark.parametrize("args,gpus", [
    (["--gpus", "4"], 4), (["--gpus=3"], 3), (["--num_gpus", "5"], 5), (["--num-gpus", "6"], 6),
    (["--num_gpus=7"], 7), (["--num-gpus=1"], 1), ([], 2),
])
def test_gpu_count_in_every_spelling(run_sh, args, gpus):
    torchrun, train, _ = run_sh(*args, "--max_steps", "10")
    assert nproc(torchrun) == gpus
    assert resolved(train).max_steps == 10  # other flags still reach train.py
    assert not any("gpus" in arg for arg in train)
    assert nproc(run_sh(NUM_GPUS="3")[0]) == 3


@pytest.mark.parametrize("args", [["--wandb-url", "http://wb:8080"], ["--wandb_url", "http://wb:8080"],
                                  ["--wandb-url=http://wb:8080"], ["--wandb_url=http://wb:8080"]])
def test_wandb_url_in_every_spelling_turns_wandb_online(run_sh, args):
    _, train, wandb = run_sh(*args)
    assert wandb == {"WANDB_BASE_URL": "http://wb:8080", "WANDB_MODE": "online"}
    assert not any("wandb" in arg for arg in train)
