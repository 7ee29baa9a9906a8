#!/usr/bin/env bash
# Generalisation on synthetic speech: an espeak-ng corpus of N utterances (project-generated
# sentences, LJSpeech-like lengths) and one model trained on it for SECONDS on one GPU (the
# clock includes compilation). ENCODER: byt5 (a frozen random ByT5-small, made here) or bytes
# (a trained byte embedding): the text-encoder ablation is the same command with the other one.
#
#   scripts/experiments/synthetic.sh OUT_DIR [N] [SECONDS] [ENCODER] [--key value ...]
#
# Held-out sentences (the corpus's val split) are sampled every eval_interval steps, at the
# predicted and at the true lengths; the mels are kept in <run>/eval/step_<N>/mels.npz for
#   python scripts/eval_checkpoint.py --mels <run>/eval/step_<N>/mels.npz --out DIR --log_to_run
set -euo pipefail
out=$1 n=${2:-6000} seconds=${3:-400} encoder=${4:-byt5}
shift $(( $# < 4 ? $# : 4 ))
mkdir -p "$out"
[ -d "$out/corpus" ] || python scripts/make_speech_corpus.py --out "$out/corpus" --n "$n" --val_fraction 0.03
[ -d "$out/data" ] || python scripts/prepare_ljspeech.py --src "$out/corpus" --out "$out/data" \
  --split_file "$out/corpus/splits.tsv" --workers "$(nproc)"
case $encoder in
  byt5) [ -d "$out/byt5-small-random" ] ||
          python scripts/make_random_encoder.py --size small --out "$out/byt5-small-random"
        text=(--text_encoder_name "$out/byt5-small-random") ;;
  bytes) text=(--text_encoder byte_embedding) ;;
  *) echo "ENCODER must be byt5 or bytes, got $encoder" >&2; exit 2 ;;
esac
python train.py --config configs/ljspeech.yaml --data_dir "$out/data" "${text[@]}" \
  --decoder_d_model 512 --decoder_n_layer 6 --decoder_n_head 4 \
  --effective_batch_size 0 --batch_size 32 --warmup_steps 300 --max_steps 100000 \
  --lr_schedule_steps 7000 --max_train_seconds "$seconds" --save_interval 100000 --ema_decay 0 \
  --eval_interval 4000 --eval_prompts val --eval_num_samples 100 --eval_steps 32 \
  --eval_cfg_scale 3 --eval_sway -1 --eval_asr none --eval_vocoder none --eval_oracle_duration true \
  --val_interval 500 --log_interval 50 --out_dir "$out/run_$encoder" "$@" 2>&1 | tee "$out/train_$encoder.log"
