#!/usr/bin/env bash
# The speedrun: how much training time one GPU needs to read unseen LJSpeech text at the
# benchmark's target WER (benchmark.py holds the corpus and the protocol; README the records).
#
#   scripts/experiments/speedrun.sh OUT_DIR [RECIPE] [SEED] [--key value ...]
#
# RECIPE: speedrun (configs/speedrun.yaml, the record recipe) or seed (the seed project's own
# configs/ljspeech.yaml, unchanged, trained the seed's way: eager, text features computed every
# step, no length buckets; the baseline). --key value pairs go to train.py after both.
# Steps, each reused when its output exists: the benchmark's text -> the corpus spoken by the
# piper voice (PIPER_MODEL: a packed voice, scripts/pack_piper_voice.py) -> prepare -> a random
# frozen ByT5-small (the hub's weights are not reachable offline) -> train for the protocol's
# budget, evaluating every eval_interval_seconds of training, mels kept -> with FLOORS set and
# Whisper installed, the record (scripts/speedrun.py record); else the command that makes it.
set -euo pipefail
out=$1 recipe=${2:-speedrun} seed=${3:-0}
shift $(( $# < 3 ? $# : 3 ))
text_src=${LJSPEECH_TEXT:-../shared/data/ljspeech_text}
workers=$(nproc)
mkdir -p "$out"
encoder_pid=
if [ ! -d "$out/byt5-small-random" ]; then  # a few CPU seconds, made beside the corpus
  python scripts/make_random_encoder.py --size small --out "$out/byt5-small-random" &
  encoder_pid=$!
fi
[ -f "$out/text/metadata.csv" ] ||
  python scripts/speedrun.py text --ljspeech_text "$text_src" --out "$out/text"
[ -d "$out/corpus" ] ||
  python scripts/make_speech_corpus.py --voice piper ${PIPER_MODEL:+--piper_model "$PIPER_MODEL"} \
    --text "$out/text/metadata.csv" --split_file "$out/text/splits.tsv" --out "$out/corpus" \
    --workers "$workers"
[ -d "$out/data" ] ||
  python scripts/prepare_ljspeech.py --src "$out/corpus" --out "$out/data" \
    --split_file "$out/corpus/splits.tsv" --workers "$workers"
[ -z "$encoder_pid" ] || wait "$encoder_pid"
case $recipe in
  speedrun) recipe_args=(--config configs/speedrun.yaml) ;;
  seed) recipe_args=(--config configs/ljspeech.yaml --compile false --cache_text_features false
                     --bucket_batches 1 --wandb_project "") ;;
  *) echo "RECIPE must be speedrun or seed, got $recipe" >&2; exit 2 ;;
esac
run="$out/run_${recipe}_seed$seed"
read -r -a protocol <<< "$(python scripts/speedrun.py overrides)"
cmd=(python train.py "${recipe_args[@]}" --data_dir "$out/data"
     --text_encoder_name "$out/byt5-small-random" --seed "$seed" --out_dir "$run"
     "${protocol[@]}" "$@")
mkdir -p "$run"
# the clock counts compilation, so every run compiles cold: kernels an earlier run left in
# Inductor's cache gave one record 50 s (docs/SPEEDRUN.md)
cache=$(mktemp -d)
trap 'rm -rf "$cache"' EXIT
TORCHINDUCTOR_CACHE_DIR=$cache "${cmd[@]}" 2>&1 | tee "$run/train.log"
record=(python scripts/speedrun.py record "$run" --floors "${FLOORS:-FLOORS.json}"
        --recipe "$recipe" --name "$(date +%F)_${recipe}_seed$seed" --run_command "${cmd[*]}")
if [ -n "${FLOORS:-}" ] && python -c "import faster_whisper" 2>/dev/null; then
  "${record[@]}"
else  # the GPU machine has no Whisper: score the kept mels on a CPU afterwards
  echo "to make the record (FLOORS: scripts/speedrun.py floor's floors.json), run:"
  printf '  '
  printf '%q ' "${record[@]}"
  echo
fi
