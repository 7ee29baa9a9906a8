#!/usr/bin/env bash
# ./run.sh --test | --demo [--fresh] | [--gpus N] [--batch_size B] [--wandb-url URL] [train.py args]
# (the seed's spellings work too: --gpus=N, --num_gpus N, --num-gpus N, --wandb_url URL)
# Sets up .venv (and the Debian packages the tests and demo use) on first use, then runs.
set -euo pipefail
cd "$(dirname "$0")"
VENV=.venv
PY=$VENV/bin/python

apt_install() {  # apt_install COMMAND PACKAGE: install PACKAGE when COMMAND is missing
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "[setup] installing $2 (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2") >/dev/null \
      || echo "[setup] warning: could not install $2; tests that need it will be skipped"
  else
    echo "[setup] note: $1 not found and apt-get unavailable; tests that need it will be skipped"
  fi
}

setup() {
  apt_install espeak-ng espeak-ng
  [ "${1:-}" = test ] && apt_install chromium chromium
  local stamp="$VENV/.installed-$(sha1sum requirements.txt | cut -c1-12)"
  [ -f "$stamp" ] && return 0
  echo "[setup] creating $VENV (once)"
  python3 -m venv "$VENV"
  "$PY" -m pip install -q --upgrade pip
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    "$PY" -m pip install -q torch
  else
    "$PY" -m pip install -q torch==2.13.0  # the CPU build; other versions pull GBs of CUDA
  fi
  "$PY" -m pip install -q -r requirements.txt
  rm -f "$VENV"/.installed-* && touch "$stamp"
}

case "${1:-}" in
  --test)
    setup test
    exec "$PY" -m pytest -q tests
    ;;
  --demo)
    shift
    setup demo
    exec "$PY" scripts/demo.py "$@"
    ;;
esac

# Full LJSpeech training under torchrun. The batch size is configs/ljspeech.yaml's unless
# BATCH_SIZE or --batch_size asks for another (a flag after it wins: overrides apply in order).
NUM_GPUS=${NUM_GPUS:-2}
TORCHRUN_ARGS=()
TRAIN_ARGS=()
[ -n "${BATCH_SIZE:-}" ] && TRAIN_ARGS=(--batch_size "$BATCH_SIZE")
export WANDB_MODE=offline
while [ $# -gt 0 ]; do
  case "$1" in
    --gpus|--num_gpus|--num-gpus) NUM_GPUS=$2; shift 2 ;;
    --gpus=*|--num_gpus=*|--num-gpus=*) NUM_GPUS=${1#*=}; shift ;;
    --wandb-url|--wandb_url) export WANDB_BASE_URL=$2 WANDB_MODE=online; shift 2 ;;
    --wandb-url=*|--wandb_url=*) export WANDB_BASE_URL=${1#*=} WANDB_MODE=online; shift ;;
    --nnodes|--node_rank|--rdzv_endpoint|--master_addr|--master_port)
      TORCHRUN_ARGS+=("$1" "$2"); shift 2 ;;
    *) TRAIN_ARGS+=("$1"); shift ;;
  esac
done
if [ ${#TORCHRUN_ARGS[@]} -eq 0 ]; then
  TORCHRUN_ARGS=(--standalone)
elif printf '%s\n' "${TORCHRUN_ARGS[@]}" | grep -q -- --rdzv_endpoint; then
  TORCHRUN_ARGS+=(--rdzv_backend c10d)
fi
setup train
[ -f data/ljspeech/metadata/dataset_stats.json ] || \
  "$PY" scripts/prepare_ljspeech.py --out data/ljspeech --download
exec "$VENV/bin/torchrun" "${TORCHRUN_ARGS[@]}" --nproc_per_node "$NUM_GPUS" train.py \
  --config configs/ljspeech.yaml "${TRAIN_ARGS[@]}"
