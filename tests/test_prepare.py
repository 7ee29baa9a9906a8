"""scripts/prepare_ljspeech.py on tiny generated corpora: layout, numbers, input rules,
atomic replacement, and the download/extract path against a local HTTP server."""
import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf

import audio
from conftest import LJ_MINI, REPO, load_script

prep = load_script("prepare_ljspeech")
fetch = load_script("download_ljspeech")
SCRIPT = os.path.join(REPO, "scripts", "prepare_ljspeech.py")

# (id, samples at 22,050 Hz, text, normalized_text): 0.5 to 2 s, one with no normalized text
CLIPS = [("LJ900-0001", 11025, "Dr. Smith paid $5.", "Doctor Smith paid five dollars."),
         ("LJ900-0002", 22150, "in being comparatively modern.", "in being comparatively modern."),
         ("LJ900-0003", 33075, "It cost 10 shillings.", "It cost ten shillings."),
         ("LJ900-0004", 44100, "No normalized column here.", ""),
         ("LJ900-0005", 13000, "Short one.", "Short one."),
         ("LJ900-0006", 30000, "A sixth line, for the split.", "A sixth line, for the split.")]


def write_clip(src, uid, n, rate=22050, channels=1, subtype="PCM_16", seed=0):
    """A tone plus a little noise: n samples at `rate`, so frame counts are known."""
    rng = np.random.default_rng(seed)
    wave = 0.3 * np.sin(2 * np.pi * (180 + 40 * seed) * np.arange(n) / rate)
    wave = (wave + 0.02 * rng.standard_normal(n)).astype(np.float32)
    if channels == 2:
        wave = np.stack([wave, 0.5 * wave], axis=1)  # (n, 2)
    os.makedirs(os.path.join(src, "wavs"), exist_ok=True)
    path = os.path.join(src, "wavs", f"{uid}.wav")
    sf.write(path, wave, rate, subtype=subtype)
    return path


def write_metadata(src, lines):
    os.makedirs(src, exist_ok=True)
    with open(os.path.join(src, "metadata.csv"), "wb") as f:
        f.write(b"\n".join(x if isinstance(x, bytes) else x.encode() for x in lines) + b"\n")


def make_corpus(src):
    for seed, (uid, n, _, _) in enumerate(CLIPS):
        write_clip(src, uid, n, seed=seed)
    write_metadata(src, [f"{uid}|{raw}|{norm}" for uid, _, raw, norm in CLIPS])
    return src


def load(out):
    table = pq.read_table(os.path.join(out, "index.parquet")).to_pydict()
    mels = np.memmap(os.path.join(out, "mels.f16"), dtype=np.float16, mode="r").reshape(-1, 80)
    with open(os.path.join(out, "metadata", "dataset_stats.json")) as f:
        return table, mels, json.load(f)


def expected_split(ids, val_fraction):
    sha = {i: int(hashlib.sha1(i.encode()).hexdigest(), 16) for i in ids}
    val = {i for i in ids if sha[i] % 10000 < val_fraction * 10000} or {min(ids, key=sha.get)}
    return ["val" if i in val else "train" for i in ids]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prep")
    src, out = make_corpus(str(root / "src")), str(root / "out")
    return src, out, prep.prepare(out, src=src, workers=2)


def test_layout_frames_offsets_and_values(prepared):
    src, out, stats = prepared
    table, mels, saved = load(out)
    assert saved == stats and table["id"] == [c[0] for c in CLIPS]
    assert table["n_frames"] == [n // audio.HOP_LENGTH for _, n, _, _ in CLIPS]
    assert table["frame_offset"] == [0] + list(np.cumsum(table["n_frames"])[:-1])
    total = sum(table["n_frames"])
    assert os.path.getsize(os.path.join(out, "mels.f16")) == total * 80 * 2 == mels.nbytes
    for uid, offset, n in zip(table["id"], table["frame_offset"], table["n_frames"]):
        reference = audio.wav_to_log_mel(os.path.join(src, "wavs", f"{uid}.wav"))  # (n, 80)
        np.testing.assert_allclose(mels[offset:offset + n], reference, rtol=2e-3, atol=1e-2)
    np.testing.assert_allclose(table["duration_sec"], [n / 22050 for _, n, _, _ in CLIPS],
                               rtol=1e-6)


def test_text_columns_and_stats_match_the_memmap(prepared):
    table, mels, stats = load(prepared[1])
    assert table["text"] == [norm or raw for _, _, raw, norm in CLIPS]
    assert (table["text"][0], table["raw_text"][0]) == ("Doctor Smith paid five dollars.",
                                                       "Dr. Smith paid $5.")
    assert table["n_text_bytes"] == [len(t.encode("utf-8")) for t in table["text"]]
    assert (stats["text_bytes_min"], stats["text_bytes_max"]) == (10, 31)
    values = np.asarray(mels, dtype=np.float64)
    assert stats["mel_mean"] == pytest.approx(values.mean(), rel=1e-9)
    assert stats["mel_std"] == pytest.approx(values.std(), rel=1e-9)
    assert -12 < stats["mel_mean"] < 2 and stats["mel_std"] > 0.1
    assert stats["total_frames"] == len(mels) and stats["n_utterances"] == 6
    assert (stats["n_frames_min"], stats["n_frames_max"]) == (43, 172)
    assert stats["n_train"] + stats["n_val"] == 6 and stats["n_val"] == table["split"].count("val")
    assert (stats["sample_rate"], stats["hop_length"], stats["n_mels"]) == (22050, 256, 80)
    assert stats["skipped"] == {} and stats["fixed"] == {}
    assert stats["total_duration_sec"] == pytest.approx(sum(c[1] for c in CLIPS) / 22050)


def test_split_follows_the_hash_rule_with_one_val_at_least(prepared):
    table, _, _ = load(prepared[1])
    assert table["split"] == expected_split(table["id"], 0.01)
    assert "val" in table["split"]
    ids = [f"LJ{i:03d}-{j:04d}" for i in range(1, 11) for j in range(1, 201)]  # 2000 ids
    splits = prep.assign_splits(ids, 0.05)
    assert splits == prep.assign_splits(list(ids), 0.05) == expected_split(ids, 0.05)
    assert 0.03 < splits.count("val") / len(ids) < 0.07
    assert prep.assign_splits(ids[:3], 0.0).count("val") == 1  # the smallest-hash rule
    assert prep.assign_splits(ids[:1], 0.0) == ["train"]


def test_worker_count_does_not_change_the_output(prepared, tmp_path):
    src, out, _ = prepared
    prep.prepare(str(tmp_path / "one"), src=src, workers=1)
    assert (tmp_path / "one" / "mels.f16").read_bytes() == open(f"{out}/mels.f16", "rb").read()
    assert pq.read_table(tmp_path / "one" / "index.parquet").equals(
        pq.read_table(os.path.join(out, "index.parquet")))


def test_split_file_decides(tmp_path):
    src = make_corpus(str(tmp_path / "src"))
    given = ["train"] * 3 + ["val", "test", "train"]
    rows = ["id\tsplit"] + [f"{clip[0]}\t{split}" for clip, split in zip(CLIPS, given)]
    (tmp_path / "split.tsv").write_text("\n".join(rows) + "\n")
    stats = prep.prepare(str(tmp_path / "out"), src=src, split_file=str(tmp_path / "split.tsv"))
    assert load(str(tmp_path / "out"))[0]["split"] == ["train"] * 3 + ["val", "test", "train"]
    assert (stats["n_train"], stats["n_val"], stats["n_test"]) == (4, 1, 1)
    (tmp_path / "short.tsv").write_text("\n".join(rows[:4]) + "\n")
    with pytest.raises(prep.PrepareError, match="no split for 3 id"):
        prep.prepare(str(tmp_path / "out2"), src=src, split_file=str(tmp_path / "short.tsv"))


def test_rerun_is_a_noop_and_force_rebuilds(tmp_path):
    src, out = make_corpus(str(tmp_path / "src")), str(tmp_path / "out")
    prep.prepare(out, src=src)
    mtime = os.stat(os.path.join(out, "mels.f16")).st_mtime_ns
    assert prep.prepare(out, src=src) is None
    assert os.stat(os.path.join(out, "mels.f16")).st_mtime_ns == mtime
    open(os.path.join(out, "marker"), "w").close()
    assert prep.prepare(out, src=src, force=True)["n_utterances"] == 6
    assert not os.path.exists(os.path.join(out, "marker"))  # replaced whole
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]  # no tmp or old dirs left
    os.makedirs(tmp_path / "mine")
    (tmp_path / "mine" / "notes.txt").write_text("keep")  # not a dataset: refused sans --force
    with pytest.raises(prep.PrepareError, match="not a complete dataset"):
        prep.prepare(str(tmp_path / "mine"), src=src)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_crash_mid_build_leaves_out_untouched(tmp_path, monkeypatch):
    src, out = make_corpus(str(tmp_path / "src")), str(tmp_path / "out")
    prep.prepare(out, src=src)
    before = open(os.path.join(out, "mels.f16"), "rb").read()

    def boom(*args):
        raise RuntimeError("disk full")
    monkeypatch.setattr(prep, "write_stats", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        prep.prepare(out, src=src, force=True)
    with pytest.raises(RuntimeError, match="disk full"):
        prep.prepare(str(tmp_path / "fresh"), src=src)
    assert prep.is_complete(out) and open(os.path.join(out, "mels.f16"), "rb").read() == before
    assert load(out)[2]["n_utterances"] == 6
    assert sorted(os.listdir(tmp_path)) == ["out", "src"]  # no half dataset, no tmp dir


def write_messy_corpus(src):
    """One metadata line per input rule (line numbers matter to the messages)."""
    write_clip(src, "A", 22050)
    open(os.path.join(src, "wavs", "E.wav"), "wb").close()  # empty
    full = open(write_clip(src, "F", 22050), "rb").read()
    open(os.path.join(src, "wavs", "F.wav"), "wb").write(full[:len(full) // 2])  # truncated
    open(os.path.join(src, "wavs", "G.wav"), "w").write("this is not audio\n" * 50)
    write_clip(src, "H", int(2.5 * 22050))
    write_clip(src, "K", 22050, seed=1)
    write_clip(src, "L", 44100, rate=44100, channels=2, seed=2)  # 1 s stereo at 44.1 kHz
    write_clip(src, "M", 19200, rate=16000, subtype="PCM_U8", seed=3)  # 1.2 s 8-bit at 16 kHz
    write_clip(src, "N", 500)  # shorter than one STFT window
    lines = ["A|fine|fine", "B|only two fields", "C|a|b|c", "../evil|x|x", "A|dup|dup",
             "D|no wav|no wav", "E|e|e", "F|f|f", "G|g|g", "H|too long|too long", "",
             "I| |", b"J|caf\xe9|caf\xe9", "K|Caf\xe9 na\xefve|Caf\xe9 na\xefve",
             "L|stereo|stereo", "M|eight bit|eight bit", "N|n|n"]
    write_metadata(src, lines)


def test_bad_inputs_are_skipped_or_fixed_and_counted(tmp_path, capsys):
    src = str(tmp_path / "src")
    write_messy_corpus(src)
    stats = prep.prepare(str(tmp_path / "out"), src=src, max_seconds=2.0, workers=2)
    assert stats["skipped"] == {"bad_fields": 3, "duplicate_id": 1, "wav_missing": 1,
                                "bad_wav": 4, "too_long": 1, "empty_text": 1, "not_utf8": 1}
    assert stats["fixed"] == {"stereo_downmixed": 1, "resampled": 2, "8bit": 1}
    assert stats["noted"] == {"non_ascii_kept": 1}
    table, mels, _ = load(str(tmp_path / "out"))
    assert table["id"] == ["A", "K", "L", "M"] and table["text"][1] == "Caf\xe9 na\xefve"
    assert table["n_frames"] == [86, 86, 22050 // 256, 26460 // 256]  # resampled lengths
    for uid, n in zip(table["id"][2:], table["n_frames"][2:]):
        assert n == len(audio.load_wav(os.path.join(src, "wavs", f"{uid}.wav"))) // 256
    assert table["n_text_bytes"][1] == 12 and len(mels) == sum(table["n_frames"])
    err = capsys.readouterr().err
    assert "metadata.csv:2: 2 fields" in err and "metadata.csv:13: not UTF-8" in err
    assert "truncated" in err and "metadata.csv:5: id A seen before" in err


@pytest.mark.parametrize("bad_line, message", [
    ("X|two fields", "2 fields"), ("X|no wav here|no wav here", "no such file"),
    (b"X|\xff\xfe|x", "not UTF-8"), ("LONG|long|long", "max_seconds"), ("X||", "no text")])
def test_strict_turns_a_skip_into_an_error_naming_the_line(tmp_path, bad_line, message):
    src = str(tmp_path / "src")
    for uid in ("A", "B"):
        write_clip(src, uid, 4410)
    write_clip(src, "LONG", 3 * 22050)
    write_metadata(src, ["A|a|a", bad_line, "B|b|b"])
    with pytest.raises(prep.PrepareError, match=r"metadata\.csv:2: .*" + message):
        prep.prepare(str(tmp_path / "out"), src=src, strict=True, max_seconds=2.0)
    assert sorted(os.listdir(tmp_path)) == ["src"]


def test_strict_still_accepts_fixed_clips(tmp_path):
    src = str(tmp_path / "src")
    write_clip(src, "A", 4410)
    write_clip(src, "S", 44100, rate=44100, channels=2)
    write_metadata(src, ["A|a|a", "S|s|s"])
    stats = prep.prepare(str(tmp_path / "out"), src=src, strict=True)
    assert stats["fixed"] == {"stereo_downmixed": 1, "resampled": 1} and stats["n_val"] == 1


def test_nothing_left_or_no_metadata_is_an_error(tmp_path):
    src = str(tmp_path / "src")
    write_metadata(src, ["A|no wav|no wav"])
    with pytest.raises(prep.PrepareError, match="every utterance was skipped"):
        prep.prepare(str(tmp_path / "out"), src=src)
    with pytest.raises(prep.PrepareError, match="metadata.csv: not found"):
        prep.prepare(str(tmp_path / "out"), src=str(tmp_path))
    assert not (tmp_path / "out").exists()


def test_cli_summary_and_one_line_error(tmp_path):
    src = make_corpus(str(tmp_path / "src"))
    run = subprocess.run([sys.executable, SCRIPT, "--src", src, "--out", str(tmp_path / "out"),
                          "--workers", "1"], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert "prepared 6 utterances" in run.stdout and "skipped: none" in run.stdout
    write_metadata(src, ["LJ900-0001|a|a", "LJ900-0002|bad"])
    run = subprocess.run([sys.executable, SCRIPT, "--src", src, "--out", str(tmp_path / "o2"),
                          "--strict", "--workers", "1"], capture_output=True, text=True, cwd=REPO)
    lines = [x for x in run.stderr.splitlines() if x.startswith("error")]
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert len(lines) == 1 and "metadata.csv:2: 2 fields" in lines[0]


# ---------------------------------------------------------------------------- download

def tar_bz2(fill):
    """The bytes of a .tar.bz2 that fill(tar) writes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        fill(tar)
    return buffer.getvalue()


def corpus_archive(tmp_path):
    src = str(tmp_path / "build" / "LJSpeech-1.1")
    for seed, uid in enumerate(["LJ001-0001", "LJ001-0002"]):
        write_clip(src, uid, 6000 + 1000 * seed, seed=seed)
    write_metadata(src, ["LJ001-0001|One.|One.", "LJ001-0002|Two 2.|Two two."])
    return tar_bz2(lambda tar: tar.add(src, arcname="LJSpeech-1.1"))


@pytest.fixture
def serve(monkeypatch):
    """Serve bytes over HTTP on 127.0.0.1 with Range support; optionally cut the first reply."""
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    servers = []

    def start(payload, cut_after=None):
        state = {"cut_after": cut_after, "ranges": []}

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                state["ranges"].append(self.headers.get("Range"))
                first = int(self.headers["Range"][6:-1]) if self.headers.get("Range") else 0
                body = payload[first:]
                self.send_response(206 if first else 200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if state["cut_after"] is not None:  # promise everything, send a prefix
                    body, state["cut_after"] = body[:state["cut_after"]], None
                self.wfile.write(body)

            def log_message(self, *args):
                pass
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/LJSpeech-1.1.tar.bz2", state
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_download_resumes_after_a_cut(tmp_path, serve):
    payload = corpus_archive(tmp_path)
    url, state = serve(payload, cut_after=5000)
    dest = str(tmp_path / "dl" / "LJSpeech-1.1.tar.bz2")
    sha = hashlib.sha256(payload).hexdigest()
    with pytest.raises(fetch.DownloadError, match="cut off at byte 5000.*rerun to resume"):
        fetch.download(url, dest, sha)
    assert os.path.getsize(dest + ".part") == 5000 and not os.path.exists(dest)
    assert fetch.download(url, dest, sha) == dest
    assert open(dest, "rb").read() == payload and not os.path.exists(dest + ".part")
    assert state["ranges"] == [None, "bytes=5000-"]


def test_download_checksum_mismatch_deletes_the_file(tmp_path, serve):
    payload = corpus_archive(tmp_path)
    url, state = serve(payload)
    dest = str(tmp_path / "LJSpeech-1.1.tar.bz2")
    with open(dest + ".part", "wb") as f:
        f.write(b"garbage prefix")  # a corrupt partial file, resumed then rejected
    with pytest.raises(fetch.DownloadError, match="sha256 mismatch.*deleted"):
        fetch.download(url, dest, hashlib.sha256(payload).hexdigest())
    assert state["ranges"] == ["bytes=14-"]
    assert not os.path.exists(dest) and not os.path.exists(dest + ".part")


def test_prepare_with_download_end_to_end(tmp_path, serve):
    payload = corpus_archive(tmp_path)
    url, state = serve(payload)
    cache, out = str(tmp_path / "cache"), str(tmp_path / "out")
    sha = hashlib.sha256(payload).hexdigest()
    stats = prep.prepare(out, download=True, cache_dir=cache, url=url, sha256=sha)
    assert stats["n_utterances"] == 2 and stats["source"] == url
    assert load(out)[0]["text"] == ["One.", "Two two."]
    prep.prepare(out, download=True, cache_dir=cache, url=url, sha256=sha, force=True)
    assert len(state["ranges"]) == 1  # the unpacked cache is reused


def link(name, kind, target):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


@pytest.mark.parametrize("member, problem", [
    ((tarfile.TarInfo("../evil.txt"), b"x"), "'..'"),
    ((tarfile.TarInfo("corpus/../../evil.txt"), b"x"), "'..'"),
    ((tarfile.TarInfo("/tmp/evil.txt"), b"x"), "absolute path"),
    (link("corpus/passwd", tarfile.SYMTYPE, "/etc/passwd"), "a link"),
    (link("corpus/hard", tarfile.LNKTYPE, "corpus/ok.txt"), "a link"),
    (link("corpus/tty", tarfile.CHRTYPE, ""), "device")])
def test_extract_refuses_unsafe_members(tmp_path, member, problem):
    def fill(tar):
        for info, data in [(tarfile.TarInfo("corpus/ok.txt"), b"fine"), member]:
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data) if data else None)
    archive = tmp_path / "a.tar.bz2"
    archive.write_bytes(tar_bz2(fill))
    with pytest.raises(fetch.DownloadError, match=f"refusing member '{member[0].name}'.*{problem}"):
        fetch.extract(str(archive), str(tmp_path / "unpacked"))
    assert sorted(os.listdir(tmp_path)) == ["a.tar.bz2"]  # nothing unpacked, nothing escaped


def test_first_8_real_ljspeech_clips(tmp_path):
    if not os.path.isdir(LJ_MINI):
        pytest.skip(f"real LJSpeech clips not found at {LJ_MINI}")
    src = tmp_path / "src"
    lines = open(os.path.join(LJ_MINI, "metadata.csv"), encoding="utf-8").read().splitlines()[:8]
    os.makedirs(src / "wavs")
    for line in lines:
        uid = line.split("|")[0]
        shutil.copy(os.path.join(LJ_MINI, "wavs", f"{uid}.wav"), src / "wavs")
    (src / "metadata.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    stats = prep.prepare(str(tmp_path / "out"), src=str(src), workers=2, strict=True)
    table, mels, _ = load(str(tmp_path / "out"))
    assert table["id"] == [x.split("|")[0] for x in lines] and stats["n_utterances"] == 8
    assert table["text"] == [x.split("|")[2] for x in lines]
    assert table["raw_text"] == [x.split("|")[1] for x in lines]
    assert table["n_frames"] == [sf.info(str(src / "wavs" / f"{u}.wav")).frames // 256
                                 for u in table["id"]]
    reference = audio.wav_to_log_mel(str(src / "wavs" / f"{table['id'][0]}.wav"))
    np.testing.assert_allclose(mels[:table["n_frames"][0]], reference, rtol=2e-3, atol=1e-2)
    assert -9 < stats["mel_mean"] < -3 and 1 < stats["mel_std"] < 4
