"""Write a single-speaker LJSpeech-format corpus spoken by espeak-ng or by a neural piper voice.

The demo, the tests and the benchmark need speech with exactly known text and no download.
Sentences come from a seeded generator (scripts/sentences.py) or from the normalized text
(third column) of an LJSpeech metadata.csv (--text, ids kept), and one voice speaks them all
(scripts/voices.py), like LJSpeech's one reader. Output, as scripts/prepare_ljspeech.py reads it:

    OUT/metadata.csv       id|text|normalized_text, UTF-8, no header
    OUT/wavs/<id>.wav      22,050 Hz mono 16-bit
    OUT/splits.tsv         header "id<TAB>split", split is train, val (or test, from --split_file)
    OUT/corpus_stats.json  counts, durations and the voice's settings

The same inputs give the same audio. Clips are spoken by --workers processes, one voice each;
the corpus is built in OUT.tmp-<pid> and renamed into place, so OUT is whole or absent.

    python scripts/make_speech_corpus.py --out data/espeak --n 200
    python scripts/make_speech_corpus.py --voice piper --text METADATA.csv --out DIR [--n N]
"""
from __future__ import annotations

import concurrent.futures
import csv
import hashlib
import itertools
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import checks  # noqa: E402
from audio import SAMPLE_RATE, write_wav  # noqa: E402
from scripts.sentences import MAX_WORDS, MIN_WORDS, generate_sentences  # noqa: E402
from scripts.voices import DEFAULT_RATE, VoiceError, load_voice  # noqa: E402


def _hash_unit(key: str) -> float:  # in [0, 1), so a split depends on the key alone
    return int(hashlib.sha1(key.encode("utf-8")).hexdigest()[:12], 16) / 16 ** 12


def assign_splits(rows: list[tuple[str, str, str]], val_fraction: float) -> dict[str, str]:
    """id -> "train" | "val" by sha1 of the id; at least one val, and no text in both."""
    split = {i: "val" if _hash_unit(i) < val_fraction else "train" for i, _, _ in rows}
    if "val" not in split.values():
        split[min(split, key=_hash_unit)] = "val"
    # a metadata.csv may repeat a text under two ids: hold every copy out, not just one
    val_texts = {norm for i, _, norm in rows if split[i] == "val"}
    return {i: "val" if norm in val_texts else split[i] for i, _, norm in rows}


def read_split_file(path: str, rows: list[tuple[str, str, str]]) -> dict[str, str]:
    """id -> train | val | test from a TSV with a header line; it must name every row's id."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()[1:]
    table = {}
    for number, line in enumerate(lines, start=2):
        fields = line.split("\t")
        if len(fields) != 2 or fields[1] not in ("train", "val", "test"):
            raise ValueError(f"{path}:{number}: expected id<TAB>train|val|test")
        table[fields[0]] = fields[1]
    missing = [i for i, _, _ in rows if i not in table]
    if missing:
        raise ValueError(f"{path}: no split for {len(missing)} id(s), e.g. {missing[0]}")
    return {i: table[i] for i, _, _ in rows}


def read_metadata(path: str, n: int | None) -> list[tuple[str, str, str]]:
    """(id, text, normalized_text) of the first `n` lines of an LJSpeech metadata.csv."""
    with open(path, encoding="utf-8", newline="") as f:  # QUOTE_NONE: LJSpeech quotes are text
        lines = list(itertools.islice(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE), n))
    for number, fields in enumerate(lines, start=1):
        if len(fields) < 2:
            raise ValueError(f"{path}:{number}: expected id|text|normalized_text")
    return [(f[0], f[1], f[2] if len(f) > 2 and f[2].strip() else f[1]) for f in lines]


# Worker processes: each loads its own voice once (an onnxruntime session must not cross a fork).
_voice = None


def _start_worker(voice_args: dict) -> None:
    global _voice
    _voice = load_voice(**voice_args)


def _speak(job: tuple[str, str]) -> float:
    """Speak one text into one wav; returns its seconds."""
    text, path = job
    samples = _voice(text)
    write_wav(path, samples, SAMPLE_RATE)
    return len(samples) / SAMPLE_RATE


def speak_all(rows, wav_dir: str, voice_args: dict, workers: int) -> list[float]:
    from tqdm import tqdm
    jobs = [(norm, os.path.join(wav_dir, f"{i}.wav")) for i, _, norm in rows]
    with concurrent.futures.ProcessPoolExecutor(workers, initializer=_start_worker,
                                                initargs=(voice_args,)) as pool:
        results = pool.map(_speak, jobs, chunksize=4)
        return list(tqdm(results, total=len(jobs), desc=voice_args["name"], unit="utt"))


def _write_tables(out: str, rows, split: dict[str, str]) -> None:
    with open(os.path.join(out, "metadata.csv"), "w", encoding="utf-8", newline="") as f:
        f.writelines(f"{i}|{text}|{norm}\n" for i, text, norm in rows)
    with open(os.path.join(out, "splits.tsv"), "w", encoding="utf-8", newline="") as f:
        f.writelines(["id\tsplit\n"] + [f"{i}\t{split[i]}\n" for i, _, _ in rows])


def _stats(rows, split, durations, **settings) -> dict:
    counts = {name: sum(split[i] == name for i, _, _ in rows) for name in ("train", "val", "test")}
    total = sum(durations)
    return dict(n_utterances=len(rows), n_train=counts["train"], n_val=counts["val"],
                n_test=counts["test"], total_minutes=round(total / 60, 3),
                duration_min_s=round(min(durations), 3),
                duration_mean_s=round(total / len(rows), 3),
                duration_max_s=round(max(durations), 3), sample_rate=SAMPLE_RATE, **settings)


def _existing(out_dir: str, force: bool) -> dict | None:
    """The stats of a finished corpus at out_dir that is to be kept, else None."""
    if os.path.exists(os.path.join(out_dir, "metadata.csv")) and not force:
        print(f"{out_dir} already holds a corpus; pass --force to rebuild it")
        stats_path = os.path.join(out_dir, "corpus_stats.json")
        return json.load(open(stats_path)) if os.path.exists(stats_path) else {}
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not force:
        raise FileExistsError(f"{out_dir} exists, is not empty and holds no metadata.csv; "
                              "pass --force to replace it")
    return None


def _publish(tmp: str, out_dir: str) -> None:
    if os.path.exists(out_dir):
        shutil.rmtree(out_dir)
    os.rename(tmp, out_dir)


def make_corpus(out_dir: str, n: int | None, seed: int = 0, workers: int | None = None,
                val_fraction: float = 0.05, text_file: str | None = None, force: bool = False,
                rate: int = DEFAULT_RATE, max_words: int = MAX_WORDS, voice: str = "espeak",
                piper_model: str | None = None, noise: bool = False,
                split_file: str | None = None) -> dict:
    """Build the corpus at `out_dir` and return its stats (see module docstring)."""
    out_dir = os.path.abspath(out_dir)
    kept = _existing(out_dir, force)
    if kept is not None:
        return kept
    voice_args = dict(name=voice, rate_wpm=rate, piper_model=piper_model, noise=noise)
    settings = load_voice(**voice_args).settings()  # a missing voice fails here, not in a worker
    rows = (read_metadata(text_file, n) if text_file else
            [(f"SYN-{k:05d}", t, t) for k, t in enumerate(generate_sentences(n, seed, max_words), 1)])
    split = read_split_file(split_file, rows) if split_file else assign_splits(rows, val_fraction)
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    try:
        os.makedirs(os.path.join(tmp, "wavs"))
        durations = speak_all(rows, os.path.join(tmp, "wavs"), voice_args, workers or os.cpu_count())
        _write_tables(tmp, rows, split)
        stats = _stats(rows, split, durations, **settings, seed=None if text_file else seed,
                       source=os.path.abspath(text_file) if text_file else "generated")
        with open(os.path.join(tmp, "corpus_stats.json"), "w") as f:
            json.dump(stats, f, indent=2)
        _publish(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left when something failed
    print(f"{len(rows)} utterances ({stats['n_train']} train, {stats['n_val']} val, "
          f"{stats['n_test']} test), {stats['total_minutes']:.1f} min, duration min/mean/max "
          f"{min(durations):.1f}/{stats['duration_mean_s']:.1f}/{max(durations):.1f} s")
    return stats


def main() -> None:
    p = checks.ArgumentParser(description=__doc__.split("\n\n")[0])
    count = checks.flag(checks.POSITIVE_COUNT)
    p.add_argument("--out", required=True, help="corpus directory to write")
    p.add_argument("--voice", default="espeak", choices=("espeak", "piper"))
    p.add_argument("--n", type=count, default=None, help="default 1000, or all lines of --text")
    p.add_argument("--text", default=None, help="speak this LJSpeech metadata.csv instead")
    p.add_argument("--split_file", default=None,
                   help="TSV id<TAB>train|val|test for every id (default: a hash split)")
    p.add_argument("--seed", type=checks.flag(checks.SEED), default=0,
                   help="of the sentence generator")
    p.add_argument("--workers", type=count, default=os.cpu_count())
    p.add_argument("--val_fraction", type=checks.flag(checks.VAL_FRACTION), default=0.05)
    p.add_argument("--rate", type=checks.flag(checks.Limit(int, 80, 450)), default=DEFAULT_RATE,
                   help="espeak-ng words per minute, in its range (espeakRATE_MINIMUM/MAXIMUM)")
    p.add_argument("--max_words", type=checks.flag(checks.Limit(int, MIN_WORDS)),
                   default=MAX_WORDS, help="cap sentence length (the generator's shortest: 10)")
    p.add_argument("--piper_model", default=None,
                   help="a piper voice .onnx (its config beside it as .onnx.json); default joe")
    p.add_argument("--noise", action="store_true",
                   help="piper: keep the voice's noise scales (not repeatable)")
    p.add_argument("--force", action="store_true", help="rebuild OUT if it exists")
    args = p.parse_args()
    n = args.n if args.n is not None or args.text else 1000
    try:
        make_corpus(args.out, n, args.seed, args.workers, args.val_fraction, args.text,
                    args.force, args.rate, args.max_words, args.voice, args.piper_model,
                    args.noise, args.split_file)
    except (FileNotFoundError, FileExistsError, ValueError, VoiceError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
