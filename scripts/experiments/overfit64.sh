#!/usr/bin/env bash
# Overfit the first 64 real LJSpeech utterances with configs/ljspeech_overfit64.yaml on one GPU.
# The only change to the config: the text encoder is a randomly initialised ByT5-small (same
# architecture, no pretrained weights) when google/byt5-small cannot be downloaded.
#
#   scripts/experiments/overfit64.sh PREPARED_DATA OUT_DIR [--key value ...]
#
# PREPARED_DATA: scripts/prepare_ljspeech.py output whose train split is LJ001-0001..0064.
# In-loop evaluation samples all 64 training texts every eval_interval steps, with the
# predicted durations and again at the true ones (eval/step_<N>/oracle_duration/), and keeps
# the generated mels (eval/step_<N>/mels.npz); score them anywhere with
#   python scripts/eval_checkpoint.py --mels OUT_DIR/run/eval/step_<N>/mels.npz --out DIR --log_to_run
set -euo pipefail
data=$1 out=$2
shift 2
mkdir -p "$out"
python scripts/make_random_encoder.py --size small --out "$out/byt5-small-random"
python train.py --config configs/ljspeech_overfit64.yaml --data_dir "$data" \
  --text_encoder_name "$out/byt5-small-random" --out_dir "$out/run" \
  --eval_asr none --eval_vocoder none --eval_oracle_duration true "$@" 2>&1 | tee "$out/train.log"
