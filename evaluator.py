"""Evaluation: prompts -> model.sample -> vocoder -> Whisper -> WER, per prompt and per corpus.

The number we track is intelligibility: corpus WER = total (substitutions + deletions +
insertions) / total reference words, after both sides go through Whisper's English text
normalizer (Radford et al. 2022). The same pipeline run on ground-truth mels (resynth_floor)
gives the floor: what the vocoder and the ASR alone cost, which no model can beat.

Shape letters: b batch, n mel frames, m mel bands, s samples.
"""
from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from tqdm import tqdm

import audio
from asr import load_asr
from checks import cut_to_limits
from config import TrainConfig
from report import write_report

REPO_ROOT = os.path.dirname(os.path.abspath(__file__))  # prompt files may be given from here


class EvalError(ValueError):
    """A user error in evaluation inputs (prompt file, ids): printed as one line."""


# --- text normalization and WER ----------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _normalizer():
    try:
        from whisper.normalizers import EnglishTextNormalizer
    except ImportError:
        from whisper_normalizer.english import EnglishTextNormalizer
    return EnglishTextNormalizer()


def normalize_text(text: str) -> str:
    # Whisper's normalizer deletes words inside ( ) and [ ]; LJSpeech's reader speaks them.
    # It also leaves a lone "." for a trailing "..." in Whisper's output: not a word, dropped.
    words = _normalizer()(re.sub(r"[()\[\]]", " ", text)).split()
    return " ".join(w for w in words if any(c.isalnum() for c in w))


def word_errors(reference: str, hypothesis: str) -> dict | None:
    """Edit counts after normalization; None when the reference normalizes to nothing."""
    ref, hyp = normalize_text(reference), normalize_text(hypothesis or "")
    n_ref = len(ref.split())
    if n_ref == 0:
        return None
    sub, dele, ins = 0, n_ref, 0  # nothing heard: every reference word is a deletion
    if hyp:
        import jiwer
        out = jiwer.process_words(ref, hyp)
        sub, dele, ins = out.substitutions, out.deletions, out.insertions
    return {"substitutions": sub, "deletions": dele, "insertions": ins, "errors": sub + dele + ins,
            "ref_words": n_ref, "wer": (sub + dele + ins) / n_ref, "normalized_ref": ref,
            "normalized_hyp": hyp}


def score(prompts: list[tuple[str, str]], hypotheses: list[str]) -> tuple[list[dict], dict]:
    """Per-prompt rows {id, text, hypothesis, wer, errors, ref_words, ...} and corpus WER."""
    rows = []
    for (pid, text), hyp in zip(prompts, hypotheses):
        counts = word_errors(text, hyp) or {"wer": None, "errors": 0, "ref_words": 0,
                                            "note": "empty reference after normalizing: skipped"}
        rows.append({"id": pid, "text": text, "hypothesis": hyp, **counts})
    errors, words = sum(r["errors"] for r in rows), sum(r["ref_words"] for r in rows)
    return rows, {"wer": errors / words if words else None, "errors": errors, "ref_words": words,
                  "n_scored": sum(r["wer"] is not None for r in rows)}


# --- prompts -----------------------------------------------------------------------------------
def evenly_spaced(items: list, n: int) -> list:
    """A deterministic subset of n items spread over the list (n = 0 or >= len: all)."""
    k = n if 0 < n < len(items) else len(items)
    return [items[i * len(items) // k] for i in range(k)]


def load_prompts(spec: str, train_texts: list[str] | None = None, n: int = 0,
                 val_texts: list[str] | None = None) -> list[tuple[str, str]]:
    """'overfit' -> the training texts; 'val' -> the held-out texts; else a text file, one
    prompt a line ('#' comments)."""
    if spec in ("overfit", "val"):
        texts, prefix = (train_texts, "train") if spec == "overfit" else (val_texts, "val")
        if not texts:
            raise EvalError(f"eval_prompts {spec!r} needs the dataset's {prefix} texts")
        prompts = [(f"{prefix}_{i:04d}", t) for i, t in enumerate(texts)]
    else:
        path = spec if os.path.exists(spec) else os.path.join(REPO_ROOT, spec)
        try:
            with open(path, encoding="utf-8") as f:
                texts = [line.strip() for line in f if line.strip() and line.strip()[0] != "#"]
        except OSError as exc:
            raise EvalError(f"cannot read prompt file {spec}: {exc.strerror}") from None
        if not texts:
            raise EvalError(f"prompt file {spec} has no prompts")
        prompts = [(f"{i:04d}", t) for i, t in enumerate(texts)]
    return evenly_spaced(prompts, n)


# --- sampling, vocoding, scoring ---------------------------------------------------------------
@dataclass(frozen=True)
class Sampling:
    """How prompts are sampled: FlowTTS.sample's settings, the in-loop evaluation's defaults."""
    steps: int = TrainConfig.eval_steps  # Euler steps
    cfg_scale: float = TrainConfig.eval_cfg_scale  # classifier-free guidance weight
    sway: float = TrainConfig.eval_sway  # time grid; < 0 puts more steps near the noise end
    seed: int = 0  # prompt j of a call gets seed + j, whatever the batching
    duration_scale: float = 1.0  # times the predicted duration
    batch_size: int = 32  # prompts per model.sample call: fewer launch-bound calls on a GPU

    @classmethod
    def from_config(cls, cfg) -> "Sampling":
        return cls(cfg.eval_steps, cfg.eval_cfg_scale, cfg.eval_sway, cfg.seed)


def sample_mels(model, texts: list[str], sampling: Sampling = Sampling(),
                n_frames=None) -> list[torch.Tensor]:
    """model.sample in batches -> one log-mel (n, m) per text, cut to its own length;
    n_frames: per-text lengths instead of the predicted ones."""
    mels, batch = [], sampling.batch_size
    for start in tqdm(range(0, len(texts), batch), desc="sample", leave=False):
        frames = None if n_frames is None else list(n_frames[start:start + batch])
        mel, lengths = model.sample(texts[start:start + batch], steps=sampling.steps,
                                    cfg_scale=sampling.cfg_scale, seed=sampling.seed + start,
                                    duration_scale=sampling.duration_scale, n_frames=frames,
                                    sway=sampling.sway)  # (b, n, m)
        mels += [m[:n] for m, n in zip(mel.float().cpu(), lengths.tolist())]
    return mels


def voice_and_score(out_dir, prompts, mels, vocoder, asr, settings: dict, gt_mels=None,
                    report=True) -> dict:
    """Vocode each mel (n, m) to out_dir/<id>.wav, transcribe, score, write wer.jsonl and
    report.html; returns `settings` followed by the corpus WER and timings."""
    os.makedirs(out_dir, exist_ok=True)
    start, wavs = time.time(), []
    for (pid, text), mel in zip(tqdm(prompts, desc=f"vocode {vocoder.name}", leave=False), mels):
        what = f"prompt {pid} ({text[:60]!r})"
        wavs.append(vocoder(torch.as_tensor(mel).T[None], what)[0].numpy())  # (m, n) -> (s,)
        audio.write_wav(os.path.join(out_dir, f"{pid}.wav"), wavs[-1], what=what)
    summary = {**settings, "vocoder": vocoder.name,
               "vocode_seconds": round(time.time() - start, 2)}
    start = time.time()
    if asr is not None:
        rows, corpus = score(prompts, asr.transcribe(wavs))
    else:
        rows, corpus = [{"id": pid, "text": text} for pid, text in prompts], {"wer": None}
    for row, wav in zip(rows, wavs):
        row["pred_seconds"] = round(len(wav) / audio.SAMPLE_RATE, 3)
    summary.update(corpus, n_prompts=len(prompts), asr_seconds=round(time.time() - start, 2),
                   whisper_model=asr.name if asr is not None else None,
                   whisper_model_requested=asr.requested if asr is not None else None,
                   audio_seconds=round(sum(len(w) for w in wavs) / audio.SAMPLE_RATE, 2))
    with open(os.path.join(out_dir, "wer.jsonl"), "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)
    if report:
        images = {pid: (np.asarray(m), (gt_mels or {}).get(pid))
                  for (pid, _), m in zip(prompts, mels)}
        write_report(out_dir, rows, summary, mels=images)
    return summary


def evaluate_texts(model, prompts, out_dir, vocoder, asr, sampling: Sampling = Sampling(),
                   n_frames=None, gt_mels=None, report=True) -> dict:
    """Sample, vocode, transcribe and score `prompts` [(id, text)]; asr None: wavs only;
    vocoder None: the generated mels only (out_dir/mels.npz is always written, to re-score
    later with `eval_checkpoint.py --mels`). n_frames: per-prompt lengths (oracle durations);
    gt_mels: {id: (n, m)} for the report."""
    start = time.time()
    mels = sample_mels(model, [t for _, t in prompts], sampling, n_frames)
    lengths = None if n_frames is not None else [len(m) for m in mels]  # predicted: maybe cut
    cuts = cut_to_limits(model.cfg, prompts, lengths)
    summary = {"kind": "model samples", "steps": sampling.steps, "cfg": sampling.cfg_scale,
               "sway": sampling.sway, "seed": sampling.seed,
               "duration_scale": sampling.duration_scale, "oracle_duration": n_frames is not None,
               "sample_seconds": round(time.time() - start, 2), "n_prompts": len(prompts),
               "cut_to_limits": cuts}
    save_mels(os.path.join(out_dir, "mels.npz"), prompts, mels, summary)
    if vocoder is not None:
        summary = voice_and_score(out_dir, prompts, mels, vocoder, asr, summary,
                                  gt_mels=gt_mels, report=report)
    return {**summary, "seconds": round(time.time() - start, 2)}


def save_mels(path: str, prompts, mels, settings: dict) -> None:
    """Generated log-mels (n, m) as float16 with their prompts and sampling settings."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.savez_compressed(path, ids=np.array([p for p, _ in prompts]),
                        texts=np.array([t for _, t in prompts]), settings=json.dumps(settings),
                        **{f"mel_{i}": np.asarray(m, dtype=np.float16) for i, m in enumerate(mels)})


def load_mels(path: str) -> tuple[list[tuple[str, str]], list[np.ndarray], dict]:
    """(prompts, mels (n, m) float32, settings) as written by save_mels."""
    try:
        data = np.load(path)
        prompts = list(zip(data["ids"].tolist(), data["texts"].tolist()))
        mels = [data[f"mel_{i}"].astype(np.float32) for i in range(len(prompts))]
        return prompts, mels, json.loads(str(data["settings"]))
    except (OSError, KeyError, ValueError) as exc:
        raise EvalError(f"{path}: not a mels.npz written by the evaluator ({exc})") from None


def resynth_floor(dataset, rows, vocoder, asr, out_dir, report=True) -> dict:
    """Ground-truth mels -> vocoder -> ASR -> WER: what vocoding and recognition alone cost."""
    start = time.time()
    prompts = [(dataset.ids[r], dataset.texts[r]) for r in rows]
    mels = [dataset.mel(r) for r in rows]  # (n, m) each
    summary = voice_and_score(out_dir, prompts, mels, vocoder, asr, {"kind": "resynthesis floor"},
                              report=report)
    return {**summary, "seconds": round(time.time() - start, 2)}


@torch.no_grad()
def predicted_frames(model, texts: list[str], batch_size: int = 32) -> np.ndarray:
    """The duration predictor's length (frames) for each text, as model.sample would use."""
    frames = []
    for start in range(0, len(texts), batch_size):
        text_hidden, mask = model.encode_texts(texts[start:start + batch_size])  # (b, l, h)
        frames += model.predict_frames(text_hidden, mask).tolist()
    return np.asarray(frames, dtype=np.int64)


def duration_error(model, dataset, rows, batch_size: int = 32) -> float:
    """Mean |predicted - true| / true utterance length of the duration predictor."""
    if not rows:
        return float("nan")
    predicted = predicted_frames(model, [dataset.texts[r] for r in rows], batch_size)
    return mean_relative_error(predicted, dataset.n_frames[rows])


def length_error(dataset, prompts, mels) -> float:
    """duration_error of mels sampled elsewhere at predicted lengths: mean |generated - true|
    / true length, the true lengths from the dataset's utterances of the same texts (the
    in-loop evaluation names its prompts train_0000, ..., not by utterance id)."""
    row_of = {text: row for row, text in enumerate(dataset.texts)}
    missing = [text for _, text in prompts if text not in row_of]
    if missing:
        raise EvalError(f"the dataset has no utterance of the text {missing[0]!r} to take its "
                        f"true length from")
    true = [dataset.n_frames[row_of[text]] for _, text in prompts]
    return mean_relative_error([len(m) for m in mels], true)


def mean_relative_error(predicted, true) -> float:
    true = np.asarray(true, dtype=np.float64)  # lengths in frames
    return float(np.mean(np.abs(np.asarray(predicted) - true) / true))


# --- in-loop evaluation ------------------------------------------------------------------------
class InLoopEvaluator:
    """train.py calls evaluator(model, step) on rank 0 every eval_interval steps (or seconds)."""

    def __init__(self, cfg, run_dir: str, train_texts: list[str] | None = None,
                 val_texts: list[str] | None = None, true_frames: dict[str, int] | None = None,
                 test_texts: list[str] | None = None):
        """true_frames: text -> its utterance's mel frames, for eval_oracle_duration;
        test_texts: sampled to eval/step_<N>/test/mels.npz (eval_keep_test), never scored here."""
        self.cfg, self.run_dir = cfg, run_dir
        self.prompts = load_prompts(cfg.eval_prompts, train_texts, cfg.eval_num_samples, val_texts)
        if cfg.eval_keep_test and not test_texts:
            raise EvalError("eval_keep_test needs the dataset's test split, and it has none")
        self.test_prompts = [(f"test_{i:04d}", text) for i, text in enumerate(test_texts or [])
                             ] if cfg.eval_keep_test else []
        self.oracle_frames = ([true_frames[text] for _, text in self.prompts]
                              if cfg.eval_oracle_duration else None)
        self.vocoder, self.asr, self.loaded = None, None, False

    def __call__(self, model, step: int) -> dict:
        cfg = self.cfg
        model = getattr(model, "module", model)  # DDP wrapper
        model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
        if not self.loaded:  # on the first call, then reused
            self.loaded = True
            device = str(next(model.parameters()).device)
            if cfg.eval_vocoder != "none":  # none: keep the mels only (score them elsewhere)
                self.vocoder = audio.load_vocoder(cfg.eval_vocoder, device, cfg.eval_vocoder_model)
            # eval_whisper_model "" is the seed's way to turn the recognizer off
            if cfg.eval_asr != "none" and cfg.eval_whisper_model and self.vocoder is not None:
                self.asr = load_asr(cfg.eval_asr, cfg.eval_whisper_model, cfg.eval_whisper_device)
        was_training = model.training
        model.eval()
        out_dir = os.path.join(self.run_dir, "eval", f"step_{step}")
        evaluate = lambda where, frames: evaluate_texts(
            model, self.prompts, where, self.vocoder, self.asr, Sampling.from_config(cfg),
            n_frames=frames)
        # Eagerly: compiling the sampling shapes would cost more than a few evaluations take.
        try:
            with torch.compiler.set_stance("force_eager"):
                summary = evaluate(out_dir, None)
                oracle = (evaluate(os.path.join(out_dir, "oracle_duration"), self.oracle_frames)
                          if self.oracle_frames else None)
                if self.test_prompts:
                    evaluate_texts(model, self.test_prompts, os.path.join(out_dir, "test"),
                                   None, None, Sampling.from_config(cfg))
        except audio.AudioError as exc:  # non-finite samples: no wav, and training goes on
            print(f"warning: evaluation at step {step}: {exc}", file=sys.stderr)
            return {"eval/nonfinite_audio": 1}
        finally:
            model.train(was_training)
        keys = ("seconds", "n_prompts") + (("audio_seconds",) if self.vocoder else ()) + (
            ("wer",) if self.asr else ())
        values = {f"eval/{k}": summary[k] for k in keys}
        if oracle is not None and self.asr:
            values["eval/wer_oracle_duration"] = oracle["wer"]
        return values
