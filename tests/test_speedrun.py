"""scripts/speedrun.py: the protocol's overrides load as a config; a tiny run trained with them
is scored point by point and becomes a record row, a folder and curves; a run whose evaluation
strays from the protocol is refused."""
import html
import json
import os
import shutil
import types

import pytest
import yaml

import benchmark
import config
import train
from conftest import as_argv, load_script

speedrun = load_script("speedrun")
TINY = benchmark.Protocol(n_val_scored=2, n_test=1, nfe=2, cfg_scale=1.0, budget_seconds=1.2,
                          eval_interval_seconds=0.33, vocoder="griffinlim", whisper_model="tiny.en")
FIELDS = ("date", "device", "commit", "name", "recipe", "seed", "train_seconds",
          "compile_seconds", "steps", "wer_heldout", "wer_val", "wer_floor", "target", "command")


def test_protocol_overrides_load_as_the_protocol_says():
    cfg = config.config_from_argv(speedrun.protocol_argv())
    for key, value in benchmark.PROTOCOL.config_overrides().items():
        assert getattr(cfg, key) == value, key


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_encoder_dir, tiny_dataset_with_test):
    """A run trained under the tiny protocol (a fake clock: 0.1 s a step) on chirps with a test
    split, and floors.json naming that dataset."""
    root = tmp_path_factory.mktemp("speedrun")
    data = tiny_dataset_with_test
    overrides = {"data_dir": data, "text_encoder_name": tiny_encoder_dir, "decoder_d_model": 64,
                 "decoder_n_layer": 2, "decoder_n_head": 2, "batch_size": 4, "num_workers": 0,
                 "log_interval": 2, "dtype": "fp32", "out_dir": str(root / "run")}
    ticks = iter(range(10 ** 6))
    patch = pytest.MonkeyPatch()
    patch.setattr(train, "time", types.SimpleNamespace(time=lambda: 0.1 * next(ticks)))
    try:
        train.main(as_argv(overrides) + speedrun.protocol_argv(TINY))
    finally:
        patch.undo()
    floors = {"data_dir": data, "floors": {"val": {"griffinlim": {"tiny.en": 0.5}},
                                           "test": {"griffinlim": {"tiny.en": 0.6}}}}
    (root / "floors.json").write_text(json.dumps(floors))
    return str(root / "run"), str(root / "floors.json"), root


def test_a_run_becomes_a_record_at_its_first_point_under_the_target(tiny_run, tiny_asr):
    run, floors, root = tiny_run
    easy = benchmark.Protocol(**{**TINY.as_dict(), "target_points": 1000.0})
    record = speedrun.make_record(run, floors, "tiny_easy", "speedrun", "train.py ...", easy)
    assert [p["step"] for p in record["points"]] == [4, 7, 10, 12]
    assert [p["train_seconds"] for p in record["points"]] == pytest.approx([0.4, 0.7, 1.0, 1.2])
    assert record["reached"] and record["train_seconds"] == pytest.approx(0.4)
    assert record["steps"] == 4 and record["target"] == pytest.approx(0.5 + 10)
    assert (record["wer_floor"], record["wer_floor_val"]) == (0.6, 0.5)
    test_summary = os.path.join(run, "eval", "step_4", "test", "scored", "summary.json")
    with open(test_summary) as f:
        assert json.load(f)["wer"] == record["wer_heldout"]  # the chosen point's test, scored
    assert not os.path.exists(os.path.join(run, "eval", "step_7", "test", "scored"))
    assert all(0 <= p["duration_error"] for p in record["points"])

    records = root / "records"
    folder = speedrun.publish(record, run, str(records))
    hard = benchmark.Protocol(**{**TINY.as_dict(), "target_points": -100.0})
    missed = speedrun.make_record(run, floors, "tiny_missed", "seed", "train.py ...", hard)
    assert not missed["reached"] and missed["train_seconds"] is None and missed["steps"] == 12
    speedrun.publish(missed, run, str(records))
    rows = [json.loads(line) for line in (records / "speedrun.jsonl").read_text().splitlines()]
    assert [r["name"] for r in rows] == ["tiny_easy", "tiny_missed"]
    assert all(set(FIELDS) <= set(r) and "points" not in r for r in rows)
    assert sorted(os.listdir(folder)) == ["config.yaml", "curve.png", "metrics.jsonl",
                                          "points.jsonl"]
    assert (records / "speedrun.png").stat().st_size > 1000

    # --scored_only: a point nobody scored yet is left out and named, not heard
    shutil.rmtree(os.path.join(run, "eval", "step_7", "scored"))
    partial = speedrun.make_record(run, floors, "tiny_partial", "seed", "train.py ...", hard,
                                   scored_only=True)
    assert [p["step"] for p in partial["points"]] == [4, 10, 12]
    assert partial["points_unscored"] == [7] and missed["points_unscored"] == []
    assert not os.path.exists(os.path.join(run, "eval", "step_7", "scored"))


def test_samples_are_the_scored_test_wavs_with_their_prompts(tiny_run, tiny_asr, tmp_path):
    run, floors, _ = tiny_run
    easy = benchmark.Protocol(**{**TINY.as_dict(), "target_points": 1000.0})
    record = speedrun.make_record(run, floors, "tiny_easy", "speedrun", "train.py ...", easy)
    with pytest.raises(benchmark.BenchmarkError, match="step_7/test/scored/.*missing"):
        speedrun.publish_samples(run, 7, "tiny", str(tmp_path), n=1, protocol=TINY)
    wer = speedrun.publish_samples(run, 4, "tiny", str(tmp_path), n=1, protocol=TINY)
    scored = os.path.join(run, "eval", "step_4", "test", "scored")
    row = json.loads(open(os.path.join(scored, "wer.jsonl")).readline())
    stem = tmp_path / f"tiny_step4_{row['id']}"
    assert (stem.with_suffix(".txt")).read_text() == row["text"] + "\n"
    assert stem.with_suffix(".wav").read_bytes() == open(os.path.join(scored, f"{row['id']}.wav"),
                                                          "rb").read()
    assert sorted(os.listdir(tmp_path)) == ["report.html", f"{stem.name}.png",
                                            f"{stem.name}.txt", f"{stem.name}.wav"]
    assert wer == pytest.approx(record["wer_heldout"])  # the same wav, the same tiny.en
    page = (tmp_path / "report.html").read_text()
    assert f'src="{stem.name}.wav"' in page and f'src="{stem.name}.png"' in page
    assert html.escape(row["hypothesis"]) in page  # what tiny.en heard when the run was scored


def test_a_run_off_the_protocol_is_refused(tiny_run, tmp_path):
    run, _, _ = tiny_run
    with open(os.path.join(run, "config.yaml")) as f:
        settings = yaml.safe_load(f)
    os.makedirs(tmp_path / "run")
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({**settings, "eval_cfg_scale": 2.0}))
    with pytest.raises(benchmark.BenchmarkError, match="eval_cfg_scale is 2.0; the protocol says 1.0"):
        speedrun.check_protocol(str(tmp_path / "run"), TINY)


def test_samples_of_a_step_without_kept_mels_is_one_line_naming_the_file(tiny_run, tmp_path,
                                                                          capsys):
    run, _, _ = tiny_run
    rc = speedrun.main(["samples", run, "--step", "999999", "--name", "x",
                        "--out", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and "step_999999" in err
    assert len(err.strip().splitlines()) == 1 and os.listdir(tmp_path) == []


def test_floors_score_transcripts_already_written_without_hearing_them_again(
        tmp_path, monkeypatch, tiny_dataset_with_test):
    """A floor run cut short keeps its transcripts; the next run scores them from their text
    (no vocoder, no Whisper) and writes floors.json with their corpus WER."""
    from data import PreparedDataset
    dataset = PreparedDataset(tiny_dataset_with_test)
    for split in ("val", "test"):
        ids = [dataset.ids[r] for r in dataset.rows(split, 10 ** 9, 10 ** 9)]
        texts = [dataset.texts[r] for r in dataset.rows(split, 10 ** 9, 10 ** 9)]
        for vocoder in speedrun.FLOOR_VOCODERS:
            folder = tmp_path / split / vocoder
            folder.mkdir(parents=True)
            for model in speedrun.FLOOR_ASRS:
                # every transcript drops the first word of its text: one deletion each
                rows = [{"id": pid, "hypothesis": text.split(" ", 1)[1]}
                        for pid, text in zip(ids, texts)]
                (folder / f"{model}.jsonl").write_text(
                    "".join(json.dumps(row) + "\n" for row in rows))

    def refuse(*args, **kwargs):
        raise AssertionError("a cached floor was heard again")
    monkeypatch.setattr("audio.load_vocoder", refuse)
    monkeypatch.setattr("asr.load_asr", refuse)
    result = speedrun.floors(tiny_dataset_with_test, str(tmp_path), TINY)
    rescored = [json.loads(line) for line in
                (tmp_path / "val" / "hifigan-universal" / "base.jsonl").read_text().splitlines()]
    assert [row["deletions"] for row in rescored] == [1, 1]
    val_words = sum(row["ref_words"] for row in rescored)
    assert result["val"]["hifigan-universal"]["base"] == pytest.approx(2 / val_words)
    written = json.loads((tmp_path / "floors.json").read_text())
    assert written["floors"] == result


def test_a_record_is_dated_by_the_day_its_run_started():
    started = [{"step": 0, "time": 1796169000.0}, {"step": 50, "time": 1796175000.0}]
    assert speedrun.run_date(started) == "2026-12-01"  # 23:50 UTC; the last log is 01:30 the next day
