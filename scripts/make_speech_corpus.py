"""Write a small single-speaker LJSpeech-format corpus spoken by espeak-ng.

The demo and the tests need speech with exactly known text and no download. Sentences come
from a seeded generator (or an existing metadata.csv, --text) and are spoken by one espeak-ng
voice at one rate, like LJSpeech's one reader. Output, as scripts/prepare_ljspeech.py reads it:

    OUT/metadata.csv       id|text|normalized_text, UTF-8, no header
    OUT/wavs/<id>.wav      22,050 Hz mono 16-bit
    OUT/splits.tsv         header "id<TAB>split", split is train or val (for --split_file)
    OUT/corpus_stats.json  counts and durations

The corpus is built in OUT.tmp-<pid> and renamed into place, so OUT is whole or absent.

    python scripts/make_speech_corpus.py --out data/espeak --n 200 [--text metadata.csv]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import csv
import hashlib
import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from audio import SAMPLE_RATE, load_wav, write_wav  # noqa: E402

VOICE = "en-us"
DEFAULT_RATE = 160  # words per minute; gives about 2.6 words/s, near LJSpeech's reader
# espeak-ng at 160 wpm takes about 0.35 s a word plus 0.2 s, so 10..38 words is about
# 3..14 s; a mean of 17 words gives about LJSpeech's mean of 6.5 s
MIN_WORDS, MEAN_WORDS, SD_WORDS, MAX_WORDS = 10, 17, 6, 38

# Sentence generator. Transitive verbs are base/past pairs: questions take the base form.

NAMES = ("Margaret Thomas Eleanor Walter Alice Henry Clara Samuel Jack Arthur Lucy George Oliver "
         "Martha Frederick Agnes Benjamin Dorothy Edward Florence Charles William Louisa Robert "
         "Catherine James Emily Joseph Helen Daniel Rose Francis Grace Peter Ruth Susan").split()
PEOPLE = ("farmer teacher doctor sailor clerk judge soldier merchant baker captain officer lawyer "
          "student nurse poet painter driver guard prisoner witness carpenter banker messenger "
          "neighbor stranger visitor traveler priest servant mayor engineer detective musician "
          "gardener shepherd widow boy girl manager porter printer reporter hunter pilot").split()
THINGS = ("letter window table lamp basket ladder wagon horse dog clock book key coat hat boat "
          "bottle candle carpet chair door engine fence hammer jacket kettle map newspaper "
          "notebook pencil picture rope shovel spoon stone suitcase ticket umbrella wheel wallet "
          "blanket box bucket cabinet camera bowl coin cup desk drawer envelope flag glove guitar "
          "jar lantern mirror needle painting parcel pillow plate radio ring saddle scarf shirt "
          "shoe sign sofa stamp statue sword telescope tent towel tray trumpet trunk violin watch "
          "whistle bicycle anchor bench bridle cake cloak compass crate curtain drum feather gate "
          "helmet kite trophy oar piano pipe ribbon sack shield sled").split()
PERSON_ADJ = ("old young tired clever nervous proud curious gentle angry patient famous strange "
              "quiet careful cheerful anxious busy lonely wealthy poor silent eager stubborn "
              "generous cautious brave clumsy polite sleepy worried friendly serious").split()
THING_ADJ = ("small large heavy bright dark broken empty golden wooden silver narrow ancient "
             "modern dusty polished faded shiny cheap expensive tiny enormous crooked clean dirty "
             "rusty fragile sturdy warm cold valuable mysterious ordinary peculiar striped red "
             "blue green yellow purple white black brown little new precious familiar").split()
ADVERBS = ("quickly slowly quietly carefully suddenly gently eagerly calmly nervously patiently "
           "proudly happily sadly loudly softly politely secretly openly boldly bravely gladly "
           "anxiously silently easily finally briefly warmly firmly neatly hastily cheerfully "
           "reluctantly curiously wisely foolishly roughly").split()
TRANSITIVE = [v.split("/") for v in (
    "carry/carried open/opened close/closed repair/repaired paint/painted sell/sold buy/bought "
    "find/found lose/lost borrow/borrowed return/returned clean/cleaned deliver/delivered "
    "hide/hid polish/polished examine/examined wrap/wrapped lift/lifted drop/dropped fold/folded "
    "measure/measured weigh/weighed pack/packed move/moved push/pushed pull/pulled steal/stole "
    "mend/mended notice/noticed inspect/inspected collect/collected bring/brought send/sent "
    "keep/kept leave/left hold/held drag/dragged build/built break/broke fill/filled "
    "count/counted sketch/sketched admire/admired unlock/unlocked bury/buried share/shared "
    "throw/threw catch/caught replace/replaced study/studied order/ordered trade/traded "
    "guard/guarded test/tested seal/sealed load/loaded choose/chose forget/forgot").split()]
WENT = ("walked waited slept traveled arrived worked sat stood spoke sang smiled rested rushed "
        "wandered listened stayed shouted danced swam rode knelt whispered paused").split()
CITIES = ("London Paris Boston Chicago Dublin Glasgow Denver Madrid Vienna Berlin Geneva Oxford "
          "Bristol Toronto Sydney Lisbon Cairo Naples Venice Seattle Portland Houston Atlanta "
          "Memphis Richmond Edinburgh Liverpool Manchester Philadelphia Baltimore").split()
SITES = ("station market library harbor courthouse village garden bridge valley school hospital "
         "factory church prison river forest kitchen barn cottage hotel museum theater bakery "
         "castle island orchard meadow tavern warehouse lighthouse").split()
PREPS = "near behind beside inside outside across toward beyond along past".split()
TIMES = ("yesterday|last winter|on Monday|every morning|that evening|at dawn|before noon|"
         "in the spring|after dinner|on Sunday|during the storm|late at night|"
         "early in the morning|last summer|on Friday afternoon|the next day|a week later|"
         "in October|at midnight|after the war").split("|")
MOVED = "walked traveled rushed wandered swam rode ran drove marched sailed".split()
SUBORDINATORS = "when|because|although|while|after|before|since|as soon as|even though".split("|")
JOINERS = ["and", "but", "so", "and then", "yet"]
ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen "
        "fourteen fifteen sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def num_to_words(n: int) -> str:
    """0..9999 in American words without "and": 2048 -> "two thousand forty-eight"."""
    assert 0 <= n <= 9999, n
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + ("-" + ONES[n % 10] if n % 10 else "")
    big, rest = (n // 1000, "thousand") if n >= 1000 else (n // 100, "hundred")
    tail = n % 1000 if n >= 1000 else n % 100
    return f"{ONES[big]} {rest}" + (f" {num_to_words(tail)}" if tail else "")


def _count(r: random.Random) -> int:
    # mostly small counts, as in prose; now and then hundreds or thousands
    return r.randint(2, r.choice([12, 12, 20, 99, 999, 9999]))


def _plural(noun: str) -> str:  # enough for THINGS, which holds no "-y" or irregular nouns
    return noun + ("es" if noun.endswith(("s", "x", "ch", "sh")) else "s")


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _person(r: random.Random) -> str:
    if r.random() < 0.4:
        return r.choice(NAMES)
    noun = f"{r.choice(PERSON_ADJ)} {r.choice(PEOPLE)}" if r.random() < 0.5 else r.choice(PEOPLE)
    return r.choice(["the " + noun, _a(noun)])


def _thing(r: random.Random) -> str:
    roll = r.random()
    if roll < 0.2:
        return f"{num_to_words(_count(r))} {_plural(r.choice(THINGS))}"
    noun = r.choice(THINGS) if roll < 0.55 else f"{r.choice(THING_ADJ)} {r.choice(THINGS)}"
    return r.choice(["the " + noun, _a(noun), "the " + noun])


def _place(r: random.Random) -> str:
    if r.random() < 0.35:
        return "in " + r.choice(CITIES)
    return f"{r.choice(PREPS)} the {r.choice(SITES)}"


def _maybe(r: random.Random, p: float, make) -> str:
    return " " + make(r) if r.random() < p else ""


def _clause(r: random.Random, depth: int = 0) -> str:
    """One statement without final punctuation; `depth` stops reported speech nesting."""
    form = r.randrange(9 if depth == 0 else 8)
    who, (_, past), went = _person(r), r.choice(TRANSITIVE), r.choice(WENT)
    if form in (0, 1):
        adv = _maybe(r, 0.3, lambda r: r.choice(ADVERBS))
        return f"{who}{adv} {past} {_thing(r)}" + _maybe(r, 0.5, _place)
    if form == 2:
        return f"{who} {went} {r.choice(ADVERBS)} {_place(r)}"
    if form == 3:
        return f"{who} was {r.choice(PERSON_ADJ)}" + _maybe(r, 0.6, lambda r: r.choice(TIMES))
    if form == 4:
        return f"the {r.choice(THINGS)} {r.choice(['was', 'seemed'])} {r.choice(THING_ADJ)}"
    if form == 5:
        return f"the {r.choice(PEOPLE)} who {past} {_thing(r)} {went} {_place(r)}"
    if form == 6:
        return f"{who} {past} {_thing(r)}, {_thing(r)}, and {_thing(r)}"
    if form == 7:
        count, how = num_to_words(_count(r)), r.randrange(3)
        if how == 0:
            return f"{who} {r.choice(MOVED)} {count} {r.choice(['miles', 'feet'])} {_place(r)}"
        if how == 1:
            return f"{who} paid {count} dollars for {_thing(r)}"
        return f"{who} waited {count} {r.choice(['minutes', 'hours', 'days'])} {_place(r)}"
    verb = r.choice(["said", f"told the {r.choice(PEOPLE)}", "wrote", "heard"]) + " that"
    return f"{who} {verb} {_clause(r, depth + 1)}"


def _question(r: random.Random) -> str:
    who, (base, _) = _person(r), r.choice(TRANSITIVE)
    form = r.randrange(5)
    if form == 0:
        return f"did {who} {base} {_thing(r)}" + _maybe(r, 0.6, _place)
    if form == 1:
        return f"{r.choice(['why', 'where', 'when'])} did {who} {base} {_thing(r)}"
    if form == 2:
        return f"how many {_plural(r.choice(THINGS))} did {who} {base} {r.choice(TIMES)}"
    if form == 3:
        return f"was {who} {r.choice(PERSON_ADJ)} when {_clause(r, 1)}"
    return f"who {r.choice(TRANSITIVE)[1]} {_thing(r)} {_place(r)}"


def _sentence(r: random.Random) -> str:
    form = r.random()
    if form < 0.15:
        text = _question(r) + "?"
    elif form < 0.25:
        text = f"{r.choice(SUBORDINATORS)} {_clause(r, 1)}, {_question(r)}?"
    elif form < 0.45:
        text = _clause(r) + "."
    elif form < 0.65:
        text = f"{_clause(r)}, {r.choice(JOINERS)} {_clause(r)}."
    elif form < 0.8:
        text = f"{r.choice(SUBORDINATORS)} {_clause(r, 1)}, {_clause(r)}."
    elif form < 0.9:
        text = f"{r.choice(TIMES)}, {_clause(r)} {r.choice(SUBORDINATORS)} {_clause(r, 1)}."
    else:  # three clauses, for the long tail of lengths
        text = (f"{r.choice(SUBORDINATORS)} {_clause(r, 1)}, {_clause(r, 1)}, "
                f"{r.choice(JOINERS)} {_clause(r, 1)}.")
    return text[0].upper() + text[1:]


def generate_sentences(n: int, seed: int = 0, max_words: int = MAX_WORDS) -> list[str]:
    """`n` distinct sentences whose word counts follow a clipped normal, same for a seed;
    `max_words` caps the length (the CPU demo uses short sentences to train in minutes)."""
    r, seen = random.Random(seed), {}
    for _ in range(100 * n + 1000):
        if len(seen) == n:
            return list(seen)
        # the templates alone give too many short sentences: draw a length, then a sentence
        # near it, so durations spread like LJSpeech's instead of like the templates'
        target = min(max(round(r.gauss(MEAN_WORDS, SD_WORDS)), MIN_WORDS), max_words)
        for _ in range(100):
            text = _sentence(r)
            words = len(text.split())
            if abs(words - target) <= 1 and MIN_WORDS <= words <= max_words:
                seen.setdefault(text, None)  # a dict keeps draw order, so the list is seeded
                break
    raise RuntimeError(f"generated only {len(seen)} distinct sentences of {n}")


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


def read_metadata(path: str, n: int | None) -> list[tuple[str, str, str]]:
    """(id, text, normalized_text) of the first `n` lines of an LJSpeech metadata.csv."""
    with open(path, encoding="utf-8", newline="") as f:  # QUOTE_NONE: LJSpeech quotes are text
        lines = list(itertools.islice(csv.reader(f, delimiter="|", quoting=csv.QUOTE_NONE), n))
    if any(len(fields) < 2 for fields in lines):
        raise ValueError(f"{path}: every line must be id|text|normalized_text")
    return [(f[0], f[1], f[2] if len(f) > 2 and f[2].strip() else f[1]) for f in lines]


def speak(text: str, path: str, rate: int = DEFAULT_RATE) -> float:
    """Speak `text` into a 22,050 Hz mono 16-bit wav at `path`; returns seconds of audio."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "espeak.wav")
        # an argument list, not a shell (texts hold quotes); "--" so "-..." is not an option
        cmd = ["espeak-ng", "-v", VOICE, "-s", str(rate), "-w", raw, "--", text]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"espeak-ng failed on {text!r}: {done.stderr.strip()}")
        audio = load_wav(raw)  # espeak's own rate is 22,050 Hz, but resample if a build differs
    write_wav(path, audio, SAMPLE_RATE)
    return len(audio) / SAMPLE_RATE


def _speak_all(rows, wav_dir: str, rate: int, workers: int) -> list[float]:
    from tqdm import tqdm
    jobs = [(norm, os.path.join(wav_dir, f"{i}.wav")) for i, _, norm in rows]
    # threads suffice: the work happens in espeak-ng subprocesses
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(lambda job: speak(job[0], job[1], rate), jobs)
        return list(tqdm(results, total=len(jobs), desc="espeak-ng", unit="utt"))


def _write_tables(out: str, rows, split: dict[str, str]) -> None:
    with open(os.path.join(out, "metadata.csv"), "w", encoding="utf-8", newline="") as f:
        f.writelines(f"{i}|{text}|{norm}\n" for i, text, norm in rows)
    with open(os.path.join(out, "splits.tsv"), "w", encoding="utf-8", newline="") as f:
        f.writelines(["id\tsplit\n"] + [f"{i}\t{split[i]}\n" for i, _, _ in rows])


def _stats(rows, split, durations, **settings) -> dict:
    n_val, total = sum(split[i] == "val" for i, _, _ in rows), sum(durations)
    return dict(n_utterances=len(rows), n_train=len(rows) - n_val, n_val=n_val,
                total_minutes=round(total / 60, 3), duration_min_s=round(min(durations), 3),
                duration_mean_s=round(total / len(rows), 3),
                duration_max_s=round(max(durations), 3), sample_rate=SAMPLE_RATE, voice=VOICE,
                **settings)


def make_corpus(out_dir: str, n: int | None, seed: int = 0, workers: int | None = None,
                val_fraction: float = 0.05, text_file: str | None = None, force: bool = False,
                rate: int = DEFAULT_RATE, max_words: int = MAX_WORDS) -> dict:
    """Build the corpus at `out_dir` and return its stats (see module docstring)."""
    out_dir = os.path.abspath(out_dir)
    if os.path.exists(os.path.join(out_dir, "metadata.csv")) and not force:
        print(f"{out_dir} already holds a corpus; pass --force to rebuild it")
        stats_path = os.path.join(out_dir, "corpus_stats.json")
        return json.load(open(stats_path)) if os.path.exists(stats_path) else {}
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not force:
        raise FileExistsError(f"{out_dir} exists, is not empty and holds no metadata.csv; "
                              "pass --force to replace it")
    if shutil.which("espeak-ng") is None:
        raise FileNotFoundError("espeak-ng not found; install with apt-get install espeak-ng")
    rows = (read_metadata(text_file, n) if text_file else
            [(f"SYN-{k:05d}", t, t) for k, t in enumerate(generate_sentences(n, seed, max_words), 1)])
    split = assign_splits(rows, val_fraction)
    tmp = f"{out_dir}.tmp-{os.getpid()}"
    try:
        os.makedirs(os.path.join(tmp, "wavs"))
        durations = _speak_all(rows, os.path.join(tmp, "wavs"), rate, workers or os.cpu_count())
        _write_tables(tmp, rows, split)
        stats = _stats(rows, split, durations, rate_wpm=rate, seed=None if text_file else seed,
                       source=os.path.abspath(text_file) if text_file else "generated")
        with open(os.path.join(tmp, "corpus_stats.json"), "w") as f:
            json.dump(stats, f, indent=2)
        if os.path.exists(out_dir):
            shutil.rmtree(out_dir)
        os.rename(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only left when something failed
    print(f"{len(rows)} utterances ({stats['n_train']} train, {stats['n_val']} val), "
          f"{stats['total_minutes']:.1f} min, duration min/mean/max {min(durations):.1f}/"
          f"{stats['duration_mean_s']:.1f}/{max(durations):.1f} s")
    return stats


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="corpus directory to write")
    p.add_argument("--n", type=int, default=None, help="default 1000, or all lines of --text")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--val_fraction", type=float, default=0.05)
    p.add_argument("--rate", type=int, default=DEFAULT_RATE, help="espeak-ng words per minute")
    p.add_argument("--max_words", type=int, default=MAX_WORDS, help="cap sentence length")
    p.add_argument("--text", default=None, help="speak this LJSpeech metadata.csv instead")
    p.add_argument("--force", action="store_true", help="rebuild OUT if it exists")
    args = p.parse_args()
    n = args.n if args.n is not None or args.text else 1000
    try:
        make_corpus(args.out, n, args.seed, args.workers, args.val_fraction, args.text,
                    args.force, args.rate, args.max_words)
    except (FileNotFoundError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
