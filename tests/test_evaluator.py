"""Prompts, WER, the evaluation pipeline and the in-loop evaluation, end to end on CPU with a
tiny random model."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import soundfile as sf

import audio
import config
import evaluator
from data import PreparedDataset

PROMPTS = [("p0", "Hello there."), ("p1", "A second prompt, a little longer than the first."),
           ("p2", "Three words here.")]


def wav_frames(path: str) -> int:
    return sf.info(path).frames


@pytest.fixture(scope="module")
def eval_run(tiny_model, tiny_asr, tmp_path_factory):
    """One evaluate_texts run (predicted durations, scaled down to about a second)."""
    out = str(tmp_path_factory.mktemp("eval"))
    sampling = evaluator.Sampling(steps=2, cfg_scale=2.0, batch_size=2, duration_scale=0.03)
    summary = evaluator.evaluate_texts(tiny_model, PROMPTS, out, audio.load_vocoder("griffinlim"),
                                       tiny_asr, sampling)
    return out, summary


# --- text normalization and WER ----------------------------------------------------------------

@pytest.mark.parametrize("ref, hyp, sub, dele, ins, n_ref", [
    ("the cat sat", "the cat sat down", 0, 0, 1, 3),  # insertion
    ("the cat sat down", "the cat down", 0, 1, 0, 4),  # deletion
    ("the cat sat", "the dog sat", 1, 0, 0, 3),  # substitution
    ("the cat sat", "", 0, 3, 0, 3),  # nothing heard: all deletions
    ("Hello, World! How are you?", "hello world how are you", 0, 0, 0, 5),  # case, punctuation
    ("He paid twenty five dollars.", "He paid $25.", 0, 0, 0, 3),  # numbers: "he paid $25"
    ("The man (who was tall) left.", "the man who was tall left", 0, 0, 0, 6),  # spoken parens
    ("Call me at [nine] o'clock", "call me at nine o'clock", 0, 0, 0, 5),
    ("and it was natural therefore", "And it was natural therefore...", 0, 0, 0, 5),  # no "."
])
def test_word_errors_hand_computed(ref, hyp, sub, dele, ins, n_ref):
    counts = evaluator.word_errors(ref, hyp)
    assert (counts["substitutions"], counts["deletions"], counts["insertions"]) == (sub, dele, ins)
    assert counts["ref_words"] == n_ref
    assert counts["wer"] == pytest.approx((sub + dele + ins) / n_ref)


def test_corpus_wer_pools_errors_and_skips_empty_references():
    prompts = [("a", "alpha beta gamma delta"), ("b", "(  )"), ("c", "red green")]
    rows, corpus = evaluator.score(prompts, ["alpha beta gamma delta", "anything", "blue"])
    # 0 errors / 4 words, skipped, 2 errors (1 sub + 1 del) / 2 words: pooled 2/6, not mean(0, 1)
    assert corpus["wer"] == pytest.approx(2 / 6) and corpus["n_scored"] == 2
    assert rows[1]["wer"] is None and "skipped" in rows[1]["note"]
    assert [r["id"] for r in rows] == ["a", "b", "c"] and rows[2]["errors"] == 2


def test_load_prompts_file_comments_and_even_subset(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("# a comment\n\n" + "".join(f"prompt {i}\n" for i in range(10)) + "   \n")
    prompts = evaluator.load_prompts(str(path))
    assert [t for _, t in prompts] == [f"prompt {i}" for i in range(10)]
    assert [t for _, t in evaluator.load_prompts(str(path), None, 4)] == \
        ["prompt 0", "prompt 2", "prompt 5", "prompt 7"]
    overfit = evaluator.load_prompts("overfit", ["x", "y", "z"], 2)
    assert [t for _, t in overfit] == ["x", "y"] and len({i for i, _ in overfit}) == 2
    assert len(evaluator.load_prompts("eval/libritts_samples.txt")) == 64
    with pytest.raises(evaluator.EvalError, match="cannot read prompt file"):
        evaluator.load_prompts(str(tmp_path / "missing.txt"))


# --- evaluation pipeline -----------------------------------------------------------------------

def test_evaluate_texts_writes_one_wav_per_prompt_at_its_length(eval_run, tiny_model):
    out, summary = eval_run
    frames = tiny_model.predict_frames(*tiny_model.encode_texts([t for _, t in PROMPTS]),
                                       0.03).tolist()
    assert len(set(frames)) > 1  # lengths differ, so trimming is tested
    for (pid, _), n in zip(PROMPTS, frames):
        assert wav_frames(os.path.join(out, f"{pid}.wav")) == n * audio.HOP_LENGTH
        assert os.path.getsize(os.path.join(out, f"{pid}.png")) > 0
    with open(os.path.join(out, "wer.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["id"] for r in rows] == [pid for pid, _ in PROMPTS]
    assert all(r["pred_seconds"] > 0 and "hypothesis" in r for r in rows)
    assert summary["n_prompts"] == 3 and 0 <= summary["wer"] and summary["steps"] == 2
    assert summary["whisper_model"] == "faster-whisper:tiny.en"
    assert summary["vocoder"] == "griffinlim"


def test_oracle_durations_are_used_exactly(tiny_model, tmp_path):
    summary = evaluator.evaluate_texts(tiny_model, PROMPTS, str(tmp_path),
                                       audio.load_vocoder("griffinlim"), None,
                                       evaluator.Sampling(steps=1, cfg_scale=1.0),
                                       n_frames=[40, 17, 63], report=False)
    assert [wav_frames(str(tmp_path / f"p{i}.wav")) for i in range(3)] == [
        40 * 256, 17 * 256, 63 * 256]
    assert summary["wer"] is None and summary["oracle_duration"]


def test_in_loop_evaluator_restores_train_mode(tiny_model, tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("First prompt.\nSecond prompt.\nThird prompt.\n")
    cfg = config.load_config(None, {**config.as_dict(tiny_model.cfg), "eval_prompts": str(prompts),
                                    "eval_num_samples": 2, "eval_steps": 1, "eval_asr": "none",
                                    "eval_vocoder": "griffinlim"})
    tiny_model.train()
    metrics = evaluator.InLoopEvaluator(cfg, str(tmp_path / "run"))(tiny_model, 7)
    assert tiny_model.training
    tiny_model.eval()
    assert sorted(os.listdir(tmp_path / "run" / "eval" / "step_7")) == [
        "0000.png", "0000.wav", "0001.png", "0001.wav", "mels.npz", "report.html", "wer.jsonl"]
    assert metrics["eval/n_prompts"] == 2 and metrics["eval/seconds"] > 0
    assert "eval/wer" not in metrics
    prompts, mels, settings = evaluator.load_mels(str(tmp_path / "run" / "eval" / "step_7" / "mels.npz"))
    assert [p for p, _ in prompts] == ["0000", "0001"] and settings["steps"] == 1
    assert all(m.shape[1] == 80 and m.dtype == np.float32 for m in mels)


def test_in_loop_oracle_duration_samples_the_true_lengths(tiny_model, tmp_path):
    texts, frames = ["First prompt.", "Second prompt."], [37, 52]
    cfg = config.load_config(None, {**config.as_dict(tiny_model.cfg), "eval_prompts": "overfit",
                                    "eval_oracle_duration": True, "eval_steps": 1,
                                    "eval_asr": "none", "eval_vocoder": "none"})
    evaluator.InLoopEvaluator(cfg, str(tmp_path), texts, None, dict(zip(texts, frames)))(
        tiny_model, 3)
    _, oracle, settings = evaluator.load_mels(str(tmp_path / "eval/step_3/oracle_duration/mels.npz"))
    _, predicted, _ = evaluator.load_mels(str(tmp_path / "eval/step_3/mels.npz"))
    assert [len(m) for m in oracle] == frames and settings["oracle_duration"]
    expected = evaluator.predicted_frames(tiny_model, texts).tolist()
    assert [len(m) for m in predicted] == expected != frames
    with pytest.raises(config.ConfigError, match="eval_oracle_duration.*needs eval_prompts"):
        config.load_config(None, {"eval_oracle_duration": True, "eval_prompts": "eval/x.txt"})


def test_duration_error_is_mean_relative_error(tiny_model, tiny_dataset):
    dataset = PreparedDataset(tiny_dataset)
    rows = [0, 1, 2]
    text_hidden, mask = tiny_model.encode_texts([dataset.texts[r] for r in rows])
    pred = tiny_model.predict_frames(text_hidden, mask).double().numpy()
    true = dataset.n_frames[rows].astype(float)
    expected = np.mean(np.abs(pred - true) / true)
    error = evaluator.duration_error(tiny_model, dataset, rows, batch_size=2)
    assert error == pytest.approx(expected)


def test_length_error_of_mels_sampled_elsewhere(tiny_dataset):
    dataset = PreparedDataset(tiny_dataset)
    true = [int(dataset.n_frames[r]) for r in (2, 0)]
    prompts = [("train_0000", dataset.texts[2]), ("train_0001", dataset.texts[0])]
    mels = [np.zeros((true[0] + 10, 80)), np.zeros((true[1] // 2, 80))]  # 10 frames long; half
    expected = (10 / true[0] + (true[1] - true[1] // 2) / true[1]) / 2
    assert evaluator.length_error(dataset, prompts, mels) == pytest.approx(expected)
    with pytest.raises(evaluator.EvalError, match="no utterance of the text 'never said'"):
        evaluator.length_error(dataset, [("train_0000", "never said")], mels[:1])


def test_an_empty_whisper_model_turns_the_recognizer_off(tiny_model, tmp_path, monkeypatch):
    """eval_whisper_model '' (the seed's switch): the evaluation keeps its wavs, scores none."""
    def refuse(*args):
        raise AssertionError("a recognizer was loaded")
    monkeypatch.setattr(evaluator, "load_asr", refuse)
    prompts = tmp_path / "p.txt"
    prompts.write_text("First prompt.\n")
    cfg = config.load_config(None, {**config.as_dict(tiny_model.cfg), "eval_prompts": str(prompts),
                                    "eval_steps": 1, "eval_whisper_model": "",
                                    "eval_vocoder": "griffinlim"})
    metrics = evaluator.InLoopEvaluator(cfg, str(tmp_path / "run"))(tiny_model, 3)
    tiny_model.eval()
    assert "eval/wer" not in metrics and metrics["eval/n_prompts"] == 1
    assert os.path.exists(tmp_path / "run" / "eval" / "step_3" / "0000.wav")
