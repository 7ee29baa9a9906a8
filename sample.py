"""Text to a 22,050 Hz wav with a trained checkpoint.

    python sample.py --ckpt RUN/latest.pt --text "Hello there." --out hello.wav
    python sample.py --ckpt RUN/latest.pt --text-file prompts.txt --out out/prompt.wav
    python sample.py --ckpt RUN/latest.pt --text "Hello there." --out hello.wav --seconds 2.5

The model predicts the duration (or --seconds fixes it, as in the seed), integrates the flow
with Euler steps and classifier-free guidance, and the vocoder (BigVGAN when its weights load,
else HiFi-GAN, else Griffin-Lim; --vocoder_model picks the BigVGAN weights) turns the log-mel
into audio. With --text-file, one prompt per line; outputs are numbered
(`prompt_000.wav`, `prompt_001.wav`, ...).
"""
from __future__ import annotations

import os
import sys
import unicodedata

import torch

import audio
import checkpoint
import checks
from config import ConfigError, TrainConfig
from evaluator import Sampling, sample_mels
from model import FlowTTS


class PromptError(ValueError):
    """A prompt the model cannot speak: says which and why."""


def check_prompt(text: str, max_bytes: int, where: str = "prompt") -> str:
    """Return the prompt stripped, or raise PromptError for empty, control-char or long text."""
    text = text.strip()
    if not text:
        raise PromptError(f"{where} is empty")
    bad = [c for c in text if unicodedata.category(c) == "Cc"]
    if bad:
        raise PromptError(f"{where} contains control character(s) {sorted(set(map(repr, bad)))}")
    n_bytes = len(text.encode("utf-8")) + 1  # + EOS
    if n_bytes > max_bytes:
        raise PromptError(f"{where} is {n_bytes} byte tokens; this model reads at most {max_bytes} "
                          f"(max_text_length): split it into sentences")
    return text


def output_paths(out: str, count: int) -> list[str]:
    if count == 1:
        return [out]
    stem, ext = os.path.splitext(out)
    return [f"{stem}_{i:03d}{ext or '.wav'}" for i in range(count)]


def synthesize(model: FlowTTS, vocoder, texts: list[str], sampling: Sampling = Sampling(),
               n_frames: list[int] | None = None) -> list:
    """texts -> list of float32 waveforms, each as long as its predicted duration (or as
    n_frames says, one length per text)."""
    mels = sample_mels(model, texts, sampling, n_frames)
    return [vocoder(mel.T[None], f"prompt {text[:60]!r}")[0].numpy()  # (n, m) -> (s,) = n * 256
            for mel, text in zip(mels, texts)]


def parse_args(argv):
    parser = checks.ArgumentParser(description="Synthesize speech from a checkpoint.")
    parser.add_argument("--ckpt", required=True)
    prompt = parser.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--text")
    prompt.add_argument("--text-file", dest="text_file")
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=checks.flag(checks.STEPS), default=TrainConfig.eval_steps)
    parser.add_argument("--cfg_scale", type=checks.flag(checks.CFG_SCALE),
                        default=TrainConfig.eval_cfg_scale)
    parser.add_argument("--sway", type=checks.flag(checks.SWAY), default=TrainConfig.eval_sway,
                        help="time grid in [-1, 1]; < 0 puts more Euler steps near the noise end")
    parser.add_argument("--seed", type=checks.flag(checks.SEED), default=0)
    parser.add_argument("--duration_scale", type=checks.flag(checks.DURATION_SCALE), default=1.0)
    parser.add_argument("--seconds", type=checks.flag(checks.Limit(float, 0)), default=0.0,
                        help="a fixed duration instead of the predicted one (0: predicted)")
    parser.add_argument("--vocoder", default="auto")
    parser.add_argument("--vocoder_model",
                        help=f"BigVGAN weights: a hub name or a local directory (default "
                             f"{audio.BIGVGAN_MODEL}); naming them makes --vocoder auto BigVGAN")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", action="store_true",
                        help="GPU: compile the decoder with CUDA graphs (about a minute once; "
                             "then faster per step: for many prompts)")
    return parser.parse_args(argv)


def read_prompts(args, max_bytes: int) -> list[str]:
    if args.text is not None:
        return [check_prompt(args.text, max_bytes)]
    try:
        with open(args.text_file, encoding="utf-8") as f:
            lines = [(i, line) for i, line in enumerate(f, 1) if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise PromptError(f"cannot read {args.text_file}: {exc}") from None
    if not lines:
        raise PromptError(f"{args.text_file} has no prompts")
    return [check_prompt(line, max_bytes, f"{args.text_file}:{i}") for i, line in lines]


def check_args(args) -> None:
    """The numbers were checked as they were parsed (checks.flag); this checks the flags that
    exclude each other, and --out."""
    if args.seconds and args.duration_scale != 1.0:
        raise PromptError("--seconds fixes the duration; --duration_scale scales the predicted "
                          "one: give one of them")
    if args.vocoder_model and args.vocoder not in ("auto", "bigvgan"):
        raise PromptError(f"--vocoder_model names BigVGAN weights; --vocoder {args.vocoder} "
                          f"does not use them")
    out_dir = os.path.dirname(os.path.abspath(args.out))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise PromptError(f"--out {args.out}: cannot create {out_dir}: {exc.strerror}") from None
    if not os.access(out_dir, os.W_OK):
        raise PromptError(f"--out {args.out}: directory {out_dir} is not writable")


def fixed_frames(seconds: float, block_size: int) -> int:
    """--seconds as mel frames (at least one); more than the model's block_size is refused."""
    frames = max(1, round(seconds * audio.FRAMES_PER_SECOND))
    if frames > block_size:
        longest = block_size / audio.FRAMES_PER_SECOND
        raise PromptError(f"--seconds {seconds:g} is {frames} mel frames; this model makes at "
                          f"most {block_size} (block_size, {longest:.1f} s)")
    return frames


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    check_args(args)
    model = checkpoint.model_from_checkpoint(args.ckpt, args.device, compile=args.compile)
    texts = read_prompts(args, model.cfg.max_text_length)
    n_frames = None
    if args.seconds:
        n_frames = [fixed_frames(args.seconds, model.cfg.block_size)] * len(texts)
    vocoder_name = "bigvgan" if args.vocoder_model and args.vocoder == "auto" else args.vocoder
    vocoder = audio.load_vocoder(vocoder_name, args.device,
                                 args.vocoder_model or audio.BIGVGAN_MODEL)
    sampling = Sampling(args.steps, args.cfg_scale, args.sway, args.seed, args.duration_scale)
    waves = synthesize(model, vocoder, texts, sampling, n_frames)
    prompts = [(str(i + 1), text) for i, text in enumerate(texts)]
    predicted = None if n_frames else [len(wave) // audio.HOP_LENGTH for wave in waves]
    checks.cut_to_limits(model.cfg, prompts, predicted)
    for path, wave, text in zip(output_paths(args.out, len(texts)), waves, texts):
        audio.write_wav(path, wave, what=f"prompt {text[:60]!r}")
        print(f"{path}: {len(wave) / audio.SAMPLE_RATE:.2f} s  {text[:60]!r}")


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (PromptError, ConfigError, checkpoint.CheckpointError, audio.AudioError,
            OSError) as exc:
        sys.exit(f"error: {exc}")
