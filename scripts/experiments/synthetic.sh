#!/usr/bin/env bash
# Generalisation on synthetic speech: an espeak-ng corpus of N utterances (project-generated
# sentences, LJSpeech-like lengths), one model per text encoder trained side by side on one
# GPU for the same wall-clock budget: a frozen random ByT5-small vs a trained byte embedding.
#
#   scripts/experiments/synthetic.sh OUT_DIR [N] [SECONDS] [--key value ...]
#
# Held-out sentences (the corpus's val split) are sampled every eval_interval steps; their
# generated mels are kept in <run>/eval/step_<N>/mels.npz for scoring with
#   python scripts/eval_checkpoint.py --mels <run>/eval/step_<N>/mels.npz --out DIR --log_to_run
set -euo pipefail
out=$1 n=${2:-6000} seconds=${3:-330}
shift $(( $# < 3 ? $# : 3 ))
mkdir -p "$out"
python scripts/make_speech_corpus.py --out "$out/corpus" --n "$n" --val_fraction 0.03
python scripts/prepare_ljspeech.py --src "$out/corpus" --out "$out/data" \
  --split_file "$out/corpus/splits.tsv" --workers "$(nproc)"
python scripts/make_random_encoder.py --size small --out "$out/byt5-small-random"
common=(--config configs/ljspeech.yaml --data_dir "$out/data"
        --decoder_d_model 512 --decoder_n_layer 6 --decoder_n_head 4
        --effective_batch_size 0 --batch_size 32 --warmup_steps 300 --max_steps 100000
        --lr_schedule_steps 4000 --max_train_seconds "$seconds" --save_interval 100000
        --eval_interval 1500 --eval_prompts val --eval_num_samples 100
        --eval_steps 32 --eval_asr none --eval_vocoder none --eval_oracle_duration true
        --val_interval 500)
python train.py "${common[@]}" --text_encoder_name "$out/byt5-small-random" \
  --out_dir "$out/run_byt5" "$@" > "$out/train_byt5.log" 2>&1 &
python train.py "${common[@]}" --text_encoder byte_embedding \
  --out_dir "$out/run_bytes" "$@" > "$out/train_bytes.log" 2>&1 &
wait
