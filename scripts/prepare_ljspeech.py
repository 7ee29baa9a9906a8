"""LJSpeech-format corpus -> the prepared dataset that training reads.

    python scripts/prepare_ljspeech.py --out data/ljspeech --src /path/to/LJSpeech-1.1
    python scripts/prepare_ljspeech.py --out data/ljspeech --download   # via download_ljspeech.py

Input: SRC/metadata.csv (UTF-8 lines id|text|normalized_text, no header, no quoting) and
SRC/wavs/<id>.wav. Output OUT/, rows in metadata order:
  mels.f16       float16 (total_frames, 80): each kept clip's audio.wav_to_log_mel, NOT
                 normalized, end to end. np.memmap(path, np.float16, "r").reshape(-1, 80)
  index.parquet  id, text (normalized_text, else text: what the model reads), raw_text,
                 frame_offset (int64), n_frames (int32), n_text_bytes (int32: UTF-8 bytes,
                 ByT5 adds one EOS), duration_sec (float32), split ('train' | 'val' | 'test')
  metadata/dataset_stats.json  mel_mean/mel_std over all stored values (float64), counts,
                 ranges, what was skipped/fixed. Written last: it marks OUT complete.
OUT is built in OUT.tmp-<pid> and renamed into place, so it is the old dataset or the new
one, never part of one. A complete OUT is kept unless --force. (Only a SIGKILL can leave
an OUT.tmp-<pid> behind; delete it.)

Split: a --split_file (TSV, header line, then id<TAB>train|val|test; training never reads test)
decides and must list every id. Otherwise an id is val when int(sha1(id), 16) % 10000 <
val_fraction * 10000, so its split never depends on the rest of the corpus. Either way,
if >= 2 clips are kept and none is val, the one with the smallest sha1 becomes val.

Input rules, counted in the summary and the stats; --strict makes any skip an error
(`error: .../metadata.csv:LINE: ...`, exit 2). No metadata.csv, or no clip left, is an
error; blank lines, a BOM and spaces around fields are dropped.
  skipped  bad_fields (not 3 fields, or the id is not a plain file name), not_utf8,
           duplicate_id (later copies), empty_text, wav_missing, too_long (> --max_seconds),
           bad_wav (empty, truncated, not audio, or shorter than one 1024-sample window)
  fixed    stereo_downmixed, resampled (rate != 22050), 8bit (read as float)
  noted    non_ascii_kept (ByT5 reads UTF-8 bytes, so the text stays as is)
"""
import collections
import concurrent.futures as cf
import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import soundfile as sf
from tqdm import tqdm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # so `python scripts/prepare_ljspeech.py` finds audio.py
import audio  # noqa: E402
import checks  # noqa: E402
from scripts.download_ljspeech import (LJSPEECH_SHA256, LJSPEECH_URL,  # noqa: E402
                                       DownloadError, fetch_ljspeech)

ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # ids name files: no '/', no '..'


class PrepareError(Exception):
    """A problem with the input or the environment: printed as one line, exit code 2."""


# ---------------------------------------------------------------------------- metadata
# text is what the model reads (normalized_text, else text); line is 1-based, for messages
Entry = collections.namedtuple("Entry", "id text raw_text line")


class Tally:
    """What was skipped, fixed or noted, by reason; under `strict` a skip raises instead."""
    def __init__(self, strict: bool = False):
        self.strict = strict
        self.skipped, self.fixed, self.noted = (collections.Counter() for _ in range(3))

    def skip(self, reason: str, where: str, message: str) -> None:
        if self.strict:
            raise PrepareError(f"{where}: {message}")
        print(f"skip: {where}: {message}", file=sys.stderr)
        self.skipped[reason] += 1


def _fields(raw: bytes, where: str, tally: Tally) -> list[str] | None:
    """One metadata line -> [id, text, normalized_text], or None when blank or skipped."""
    try:
        line = raw.decode("utf-8").removeprefix("\ufeff").rstrip("\r")
    except UnicodeDecodeError as exc:
        return tally.skip("not_utf8", where, f"not UTF-8 ({exc.reason} at byte {exc.start})")
    fields = [f.strip() for f in line.split("|")]
    if not line.strip():
        return None
    if len(fields) != 3 or not ID_PATTERN.fullmatch(fields[0]):
        why = f"{len(fields)} fields" if len(fields) != 3 else f"id {fields[0]!r} is no file name"
        return tally.skip("bad_fields", where, f"{why}; want id|text|normalized_text")
    return fields


def read_metadata(src: str, tally: Tally) -> tuple[str, list[Entry]]:
    path = os.path.join(src, "metadata.csv")
    if not os.path.isfile(path):
        raise PrepareError(f"{path}: not found (LJSpeech format is metadata.csv + wavs/)")
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    entries, seen = [], set()
    for number, raw in enumerate(lines, start=1):
        where = f"{path}:{number}"
        if (fields := _fields(raw, where, tally)) is None:
            continue
        uid, raw_text, normalized = fields
        if uid in seen:
            tally.skip("duplicate_id", where, f"id {uid} seen before; keeping the first")
            continue
        seen.add(uid)
        if not (text := normalized or raw_text):
            tally.skip("empty_text", where, f"id {uid} has no text")
            continue
        if not (text + raw_text).isascii():
            tally.noted["non_ascii_kept"] += 1
        entries.append(Entry(uid, text, raw_text, number))
    return path, entries


def read_split_file(path: str) -> dict[str, str]:
    """TSV: a header line, then id<TAB>train|val|test."""
    with open(path, encoding="utf-8") as f:
        rows = [(n, line.split("\t")) for n, line in enumerate(f.read().splitlines(), start=1)
                if n > 1 and line.strip()]
    for number, fields in rows:
        if len(fields) != 2 or fields[1] not in ("train", "val", "test"):
            raise PrepareError(f"{path}:{number}: expected id<TAB>train|val|test")
    return {fields[0]: fields[1] for _, fields in rows}


def _sha1(uid: str) -> int:
    return int(hashlib.sha1(uid.encode("utf-8")).hexdigest(), 16)


def assign_splits(ids: list[str], val_fraction: float, table: dict | None = None) -> list[str]:
    if table is not None:
        splits = [table[uid] for uid in ids]
    else:
        splits = ["val" if _sha1(uid) % 10000 < val_fraction * 10000 else "train" for uid in ids]
    if len(ids) >= 2 and "val" not in splits:
        splits[min(range(len(ids)), key=lambda k: _sha1(ids[k]))] = "val"
    return splits


# ---------------------------------------------------------------------------- audio
# What a worker learned about one wav: mel (n, 80) float16 as stored, duration in seconds,
# fixes applied; or skip = (reason, message) when the clip cannot be used.
Clip = collections.namedtuple("Clip", "mel duration fixes skip", defaults=(None, 0.0, (), None))


def _wav_shortfall(path: str) -> int:
    """Bytes missing from a wav's data chunk: libsndfile reads a cut-off file silently."""
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return 0  # not a plain wav; soundfile judges it
        while len(chunk := f.read(8)) == 8:
            tag, size = chunk[:4], int.from_bytes(chunk[4:], "little")
            if tag == b"data":  # size 0 or 0xFFFFFFFF: streamed, the length never filled in
                return 0 if size in (0, 2**32 - 1) else size - (os.path.getsize(path) - f.tell())
            f.seek(size + (size & 1), os.SEEK_CUR)  # chunks are padded to even sizes
    return 0


def process_clip(path: str, max_seconds: float) -> Clip:
    if not os.path.isfile(path):
        return Clip(skip=("wav_missing", f"{path}: no such file"))
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        return Clip(skip=("bad_wav", f"{path}: not readable audio ({exc})"))
    if info.frames == 0 or (missing := _wav_shortfall(path)) > 0:
        why = f"truncated, {missing} bytes missing" if info.frames else "no samples"
        return Clip(skip=("bad_wav", f"{path}: {why}"))
    duration = info.frames / info.samplerate
    if duration > max_seconds:
        return Clip(skip=("too_long", f"{path}: {duration:.2f} s > --max_seconds {max_seconds}"))
    try:
        mel = audio.wav_to_log_mel(path)  # (n, 80) float32
    except audio.AudioError as exc:
        return Clip(skip=("bad_wav", str(exc)))
    fixes = [name for name, applies in [("stereo_downmixed", info.channels > 1),
                                        ("resampled", info.samplerate != audio.SAMPLE_RATE),
                                        ("8bit", info.subtype in ("PCM_U8", "PCM_S8"))] if applies]
    return Clip(mel.astype(np.float16), duration, fixes)


def _init_worker() -> None:
    import torch
    torch.set_num_threads(1)  # one process per core already; more threads only contend


def extract_mels(paths: list[str], max_seconds: float, workers: int):
    """Yield one Clip per path, in path order whatever the number of workers."""
    if workers <= 1:
        yield from (process_clip(p, max_seconds) for p in paths)
        return
    # not fork: a child forked from a threaded process (torch, CTranslate2) can hang on a lock
    pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("forkserver"),
                                  initializer=_init_worker)
    try:
        yield from pool.map(process_clip, paths, [max_seconds] * len(paths), chunksize=4)
    finally:
        pool.shutdown(cancel_futures=True)  # after a --strict error, don't finish every clip


# ---------------------------------------------------------------------------- output
def write_mels(entries: list[Entry], src: str, where: str, tmp: str, max_seconds: float,
               workers: int, tally: Tally) -> tuple[dict, np.ndarray]:
    """Stream mels into tmp/mels.f16; return index columns and float64 [count, sum, sumsq]."""
    rows, moments, offset = [], np.zeros(3), 0
    clips = extract_mels([os.path.join(src, "wavs", f"{e.id}.wav") for e in entries],
                         max_seconds, workers)
    with open(os.path.join(tmp, "mels.f16"), "wb") as out, contextlib.closing(clips):
        for entry, clip in zip(entries, tqdm(clips, total=len(entries), desc="mels", unit="clip")):
            if clip.skip:
                tally.skip(clip.skip[0], f"{where}:{entry.line}", clip.skip[1])
                continue
            tally.fixed.update(clip.fixes)
            values = clip.mel.astype(np.float64)  # stats of the values as stored
            # log-mels lie in about [-12, 3], so a float64 sum of squares loses nothing
            moments += [values.size, values.sum(), np.square(values).sum()]
            out.write(clip.mel.tobytes())
            rows.append(dict(id=entry.id, text=entry.text, raw_text=entry.raw_text,
                             frame_offset=offset, n_frames=len(clip.mel),
                             n_text_bytes=len(entry.text.encode("utf-8")),
                             duration_sec=clip.duration))
            offset += len(clip.mel)
    return {k: [r[k] for r in rows] for k in (rows[0] if rows else {})}, moments


def write_index(path: str, columns: dict) -> None:
    types = {"id": pa.string(), "text": pa.string(), "raw_text": pa.string(),
             "frame_offset": pa.int64(), "n_frames": pa.int32(), "n_text_bytes": pa.int32(),
             "duration_sec": pa.float32(), "split": pa.string()}
    pq.write_table(pa.table({k: pa.array(columns[k], t) for k, t in types.items()}), path)


def dataset_stats(columns: dict, moments: np.ndarray, tally: Tally, source: str) -> dict:
    count, total, total_sq = moments
    mean, n, n_val = total / count, len(columns["id"]), columns["split"].count("val")
    n_test = columns["split"].count("test")
    stats = dict(mel_mean=mean, mel_std=np.sqrt(max(total_sq / count - mean**2, 0.0)),
                 n_utterances=n, n_train=n - n_val - n_test, n_val=n_val, n_test=n_test,
                 total_frames=sum(columns["n_frames"]),
                 total_duration_sec=sum(columns["duration_sec"]), sample_rate=audio.SAMPLE_RATE,
                 hop_length=audio.HOP_LENGTH, n_mels=audio.N_MELS)
    for name, column in [("text_bytes", "n_text_bytes"), ("n_frames", "n_frames")]:
        values = columns[column]
        stats.update({f"{name}_min": min(values), f"{name}_mean": sum(values) / n,
                      f"{name}_max": max(values)})
    return stats | dict(  # np.float64 is a float subclass: json writes it as is
        source=source, skipped=dict(tally.skipped), fixed=dict(tally.fixed),
        noted=dict(tally.noted), created_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))


def write_stats(tmp: str, stats: dict) -> None:
    os.makedirs(os.path.join(tmp, "metadata"), exist_ok=True)
    with open(os.path.join(tmp, "metadata", "dataset_stats.json"), "w") as f:
        json.dump(stats, f, indent=2)


def is_complete(out: str) -> bool:
    return os.path.isfile(os.path.join(out, "metadata", "dataset_stats.json"))


def publish(tmp: str, out: str) -> None:
    """Swap tmp in as out; the old dataset stays whole until the new one is in place."""
    old = f"{out}.old-{os.getpid()}"
    if os.path.lexists(out):
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        if os.path.lexists(old):
            os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------------------- main
def prepare(out, src=None, download=False, workers=1, force=False, strict=False,
            val_fraction=0.01, split_file=None, max_seconds=11.8, cache_dir=None,
            url=LJSPEECH_URL, sha256=LJSPEECH_SHA256) -> dict | None:
    """Build the dataset at out; return its stats, or None when out was already complete."""
    out = os.path.abspath(out)
    if is_complete(out) and not force:
        print(f"{out} is up to date (pass --force to rebuild it)")
        return None
    if os.path.lexists(out) and not force and not (os.path.isdir(out) and not os.listdir(out)):
        raise PrepareError(f"{out}: exists, not a complete dataset; --force replaces it")
    if not 0.0 <= val_fraction < 1.0:
        raise PrepareError(f"--val_fraction {val_fraction}: must be in [0, 1)")
    if download:
        src = fetch_ljspeech(cache_dir or os.path.join(REPO, "data", "downloads"), url, sha256)
    tally = Tally(strict)
    where, entries = read_metadata(src, tally)
    table = read_split_file(split_file) if split_file else None
    if table is not None and (missing := [e.id for e in entries if e.id not in table]):
        raise PrepareError(f"{split_file}: no split for {len(missing)} id(s), e.g. {missing[0]}")
    tmp = f"{out}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        os.makedirs(tmp)
        columns, moments = write_mels(entries, src, where, tmp, max_seconds, workers, tally)
        if not columns:
            raise PrepareError(f"{where}: every utterance was skipped; nothing to write")
        columns["split"] = assign_splits(columns["id"], val_fraction, table)
        write_index(os.path.join(tmp, "index.parquet"), columns)
        stats = dataset_stats(columns, moments, tally, url if download else os.path.abspath(src))
        write_stats(tmp, stats)
        publish(tmp, out)
    except BaseException as exc:  # Ctrl-C too: never leave a half-built tmp behind
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError):  # a full disk, a quota: write() does not say which file
            kept = "the previous dataset is unchanged" if is_complete(out) else "nothing written"
            raise PrepareError(f"{out}: cannot write the dataset ({exc.strerror or exc}, "
                               f"{exc.filename or tmp}); {kept}") from None
        raise
    return stats


def print_summary(stats: dict, out: str, seconds: float) -> None:
    print("prepared {n_utterances} utterances ({n_train} train / {n_val} val / {n_test} test), "
          "{total_frames} frames ({total_duration_sec:.0f} s), "
          "mel mean {mel_mean:.4f} std {mel_std:.4f}".format(**stats)
          + f" -> {out} in {seconds:.1f} s")
    print(" | ".join(f"{k}: " + (", ".join(f"{r} {n}" for r, n in sorted(stats[k].items()))
                                 or "none") for k in ("skipped", "fixed", "noted")))


def main(argv: list[str] | None = None) -> int:
    parser = checks.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="prepared dataset directory")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--src", help="LJSpeech-format corpus: metadata.csv + wavs/")
    source.add_argument("--download", action="store_true", help="fetch LJSpeech-1.1 first")
    parser.add_argument("--workers", type=checks.flag(checks.POSITIVE_COUNT),
                        default=min(4, os.cpu_count() or 1))
    parser.add_argument("--force", action="store_true", help="rebuild a complete --out")
    parser.add_argument("--strict", action="store_true", help="make any skip an error")
    parser.add_argument("--val_fraction", type=checks.flag(checks.VAL_FRACTION), default=0.01)
    parser.add_argument("--split_file", help="TSV with a header: id<TAB>train|val|test")
    parser.add_argument("--max_seconds", type=checks.flag(checks.Limit(float, 0, low_open=True)),
                        default=11.8)
    parser.add_argument("--cache_dir", help="--download keeps files here (data/downloads)")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        stats = prepare(**vars(args))
    except (PrepareError, DownloadError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if stats is not None:
        print_summary(stats, os.path.abspath(args.out), time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
