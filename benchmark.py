"""The benchmark: LJSpeech's sentences spoken by one neural voice, and the one way it is scored.

What it is: a fixed, offline test of whether a recipe learns to read unseen text. Real LJSpeech
sentences (names, numbers written out, 19th-century prose) in the piper `en_US-joe-medium`
voice (scripts/voices.py), which Whisper hears at about 5% WER, so a model's WER above that
floor is what the model costs. What it is not: LJSpeech. One synthetic voice is a proxy with
one pronunciation per word and no recording noise; a recipe that wins here still has to win
on the real recordings.

Corpus (`select_rows`), from LJSpeech 1.1's normalized text and the standard Tacotron2/VITS
split (train 12,500 / val 100 / test 500):
  train  4,000 train ids, evenly spaced in metadata order (about 6 h of speech)
  val    all 100 val ids; the evaluation reads `Protocol.n_val_scored` of them, evenly spaced
  test   100 test ids, evenly spaced
Val drives every choice (recipe, sampling, the stopping point); test is scored once per
record, at the checkpoint val chose, and never tuned on.

The protocol (`PROTOCOL`): every `eval_interval_seconds` of training time (the clock stops
while it samples), sample val and test with the model's predicted durations, NFE Euler steps
with classifier-free guidance and sway (noise seeded by the run's seed); vocode with HiFi-GAN
V1; transcribe with Whisper through faster-whisper on the CPU (int8, one thread: evaluator.py
says why); normalize both sides with evaluator.normalize_text; corpus WER = errors / reference
words. The floor is the same pipeline on the voice's own mels (ground truth -> vocoder -> ASR),
and the record's target is floor + `target_points`.
"""
from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass

from evaluator import evenly_spaced


@dataclass(frozen=True)
class Protocol:
    n_train: int = 4000
    n_val: int = 100
    n_test: int = 100
    n_val_scored: int = 50  # evenly spaced: half the CPU time of all 100, for a curve of points
    nfe: int = 32
    cfg_scale: float = 3.0
    sway: float = -1.0
    # every run trains this long, compilation included (speedrun.sh's --max_train_seconds)
    budget_seconds: float = 600.0
    eval_interval_seconds: float = 100.0  # the record's resolution in training time
    # of the two HiFi-GAN weights, the lower val floor with whisper_model (tiny.en breaks a tie)
    vocoder: str = "hifigan-universal"
    asr: str = "faster-whisper"
    whisper_model: str = "base"  # multilingual base: the offline weights; decoded as English
    target_points: float = 10.0  # record when val WER <= floor + this many points

    def config_overrides(self) -> dict:
        """What speedrun.sh passes to train.py: the budget, then evaluation_overrides."""
        return {"max_train_seconds": self.budget_seconds, **self.evaluation_overrides()}

    def evaluation_overrides(self) -> dict:
        """What a run's config must say for a record: an in-loop evaluation that follows the
        protocol (mels kept, scored afterwards on a CPU: scripts/speedrun.py record)."""
        return {"eval_interval": 0, "eval_interval_seconds": self.eval_interval_seconds,
                "eval_prompts": "val", "eval_num_samples": self.n_val_scored,
                "eval_keep_test": True, "eval_oracle_duration": False, "eval_steps": self.nfe,
                "eval_cfg_scale": self.cfg_scale, "eval_sway": self.sway,
                "eval_asr": "none", "eval_vocoder": "none"}

    def as_dict(self) -> dict:
        return asdict(self)


PROTOCOL = Protocol()


class BenchmarkError(ValueError):
    """A benchmark input that does not fit the protocol: one line, naming the file."""


def read_ljspeech_text(folder: str) -> tuple[list[list[str]], dict[str, str]]:
    """FOLDER/metadata.csv (id|text|normalized_text) and FOLDER/splits.tsv (id<TAB>split)."""
    metadata, splits = os.path.join(folder, "metadata.csv"), os.path.join(folder, "splits.tsv")
    try:
        with open(metadata, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE))
        with open(splits, encoding="utf-8") as f:
            split_of = dict(line.split("\t") for line in f.read().splitlines()[1:] if line)
    except (OSError, ValueError) as exc:
        raise BenchmarkError(f"{folder}: not LJSpeech text with its split ({exc})") from None
    bad = [n for n, row in enumerate(rows, start=1) if len(row) != 3]
    if bad:
        raise BenchmarkError(f"{metadata}:{bad[0]}: expected id|text|normalized_text")
    return rows, split_of


def select_rows(rows: list[list[str]], split_of: dict[str, str],
                protocol: Protocol = PROTOCOL) -> list[tuple[list[str], str]]:
    """The benchmark's (metadata row, split) pairs, in metadata order."""
    chosen = {}
    for split, n in (("train", protocol.n_train), ("val", protocol.n_val),
                     ("test", protocol.n_test)):
        ids = [row[0] for row in rows if split_of.get(row[0]) == split]
        if len(ids) < n:
            raise BenchmarkError(f"the split names {len(ids)} {split} ids; the benchmark needs {n}")
        chosen.update({uid: split for uid in evenly_spaced(ids, n)})
    return [(row, chosen[row[0]]) for row in rows if row[0] in chosen]


def write_benchmark_text(ljspeech_text: str, out_dir: str) -> dict[str, int]:
    """OUT/metadata.csv and OUT/splits.tsv of the benchmark's utterances (the voice's input)."""
    rows, split_of = read_ljspeech_text(ljspeech_text)
    selected = select_rows(rows, split_of)
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "metadata.csv"), "w", encoding="utf-8", newline="") as f:
        f.writelines("|".join(row) + "\n" for row, _ in selected)
    with open(os.path.join(out_dir, "splits.tsv"), "w", encoding="utf-8", newline="") as f:
        f.writelines(["id\tsplit\n"] + [f"{row[0]}\t{split}\n" for row, split in selected])
    return {split: sum(s == split for _, s in selected) for split in ("train", "val", "test")}


def target_wer(floor: float, protocol: Protocol = PROTOCOL) -> float:
    return floor + protocol.target_points / 100


def first_at_target(points: list[dict], target: float) -> dict | None:
    """The earliest evaluation (by training seconds) whose val WER is at or under the target."""
    for point in sorted(points, key=lambda p: p["train_seconds"]):
        if point["wer_val"] is not None and point["wer_val"] <= target:
            return point
    return None
