"""Numbers a user types, checked in one place, and what sampling cut to the model's limits.

Every entry point (train.py's `--key value` and YAML through config.py, sample.py,
scripts/*.py) checks its numbers with `check_number`: the right type, finite, within a
`Limit`, or a ConfigError naming the key or flag. `flag` makes such a check an argparse
`type=`, and `ArgumentParser` prints argparse's errors as one line. A value that is legal but
gets cut (a prompt over max_text_length, a duration at block_size) is reported by
`cut_to_limits`. Imports nothing of ours.
"""
from __future__ import annotations

import argparse
import math
import sys
from typing import NamedTuple


class ConfigError(ValueError):
    """A user error in a config file, an override or a command-line number: printed as one
    line, no traceback."""


class Limit(NamedTuple):
    """The legal values of a number a user types: int or float, finite, within [low, high]
    (None: no bound; low_open / high_open: the bound itself is excluded)."""
    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __str__(self) -> str:  # "an integer >= 1", "a finite number in [0, 1)"
        what = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            return (f"{what} in {'(' if self.low_open else '['}{self.low}, "
                    f"{self.high}{')' if self.high_open else ']'}")
        if self.low is not None:
            return f"{what} {'>' if self.low_open else '>='} {self.low}"
        if self.high is not None:
            return f"{what} {'<' if self.high_open else '<='} {self.high}"
        return what


INT64_MAX = 2**63 - 1
COUNT, POSITIVE_COUNT = Limit(int, 0), Limit(int, 1)
FRACTION = Limit(float, 0, 1)
# Euler steps past 1000 change nothing measurable and take minutes a prompt. Guidance past 20
# is no setting in the literature (F5-TTS samples at 2): the bound catches a typo such as 200
# before it drives the mel far outside what a vocoder reads.
STEPS, CFG_SCALE = Limit(int, 1, 1000), Limit(float, 0, 20)
# Sway bends the sampler's Euler time grid (model.FlowTTS.sample); outside [-1, 1] the grid is
# no longer monotone.
SWAY = Limit(float, -1, 1)
SEED = Limit(int, 0, 2**32 - 1)  # what numpy's and torch's generators all accept
DURATION_SCALE = Limit(float, 0, low_open=True)  # x the predicted duration
VAL_FRACTION = Limit(float, 0, 1, high_open=True)  # of a corpus held out


def _as_number(value, kind: type) -> int | float:
    """A YAML or command-line value as a finite int or float; ValueError if it is none."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError
    number = value
    if isinstance(value, str):
        try:
            number = int(value) if kind is int else float(value)
        except ValueError:
            number = float(value)  # "1e3" for an int; still a ValueError when not a number
    if isinstance(number, float) and not math.isfinite(number):
        raise ValueError
    if kind is int and isinstance(number, float):
        if not number.is_integer():
            raise ValueError
        return int(number)
    return float(number) if kind is float else number  # float(10**400): OverflowError


def shown(value) -> str:
    """A user's value for an error message: its repr, at most 60 characters."""
    try:
        text = repr(value)
    except ValueError:  # Python refuses to print an int of more than 4,300 digits
        text = "an integer of thousands of digits"
    return text if len(text) <= 60 else text[:57] + "..."


def check_number(where: str, value, limit: Limit) -> int | float:
    """The one check of a number a user typed (a config key or a command-line flag): the right
    type, finite, within the limit. Returns it as limit.kind; ConfigError naming `where`."""
    problem = f"must be {limit}, got {shown(value)}"
    try:
        number = _as_number(value, limit.kind)
    except (ValueError, OverflowError):
        raise ConfigError(f"{where}: {problem}" if where else problem) from None
    if limit.kind is int and abs(number) > INT64_MAX:  # numpy and torch take 64-bit integers
        problem = f"must be {limit} of at most 64 bits, got {shown(value)}"
        raise ConfigError(f"{where}: {problem}" if where else problem)
    too_low = limit.low is not None and (number <= limit.low if limit.low_open
                                         else number < limit.low)
    too_high = limit.high is not None and (number >= limit.high if limit.high_open
                                           else number > limit.high)
    if too_low or too_high:
        raise ConfigError(f"{where}: {problem}" if where else problem)
    return number


def flag(limit: Limit, many: bool = False):
    """argparse `type=` for a number flag, checked by check_number; many: a comma list
    ("16,32,50"). argparse names the flag: `argument --cfg_scale: must be ...`."""
    def parse(text: str):
        try:
            values = [check_number("", part, limit) for part in text.split(",")] if many else \
                check_number("", text, limit)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return values
    return parse


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line (`PROG: error: ...`, exit 2); usage is in --help."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def add_utterance_choice(parser: argparse.ArgumentParser, split: str, n: int,
                         n_help: str) -> None:
    """--data_dir, --n and --split: which utterances of a prepared dataset a script draws."""
    parser.add_argument("--data_dir", required=True, help="prepared dataset")
    parser.add_argument("--n", type=flag(POSITIVE_COUNT), default=n, help=n_help)
    parser.add_argument("--split", default=split)


def cut_to_limits(cfg, prompts: list[tuple[str, str]], frames: list[int] | None) -> list[dict]:
    """What sampling cut to a model's limits (cfg: its TrainConfig), said in one `note:` line
    on stderr each and returned as records {id, cut, limit, value, note}:
    a prompt over max_text_length byte tokens (the encoder reads its start only), a predicted
    length at block_size (the longest the model makes) or at 1 frame. frames: the sampled
    lengths, None when they were given (oracle durations) rather than predicted."""
    cuts = []
    for i, (pid, text) in enumerate(prompts):
        n_bytes = len(text.encode("utf-8")) + 1  # + EOS
        if n_bytes > cfg.max_text_length:
            cuts.append({"id": pid, "cut": "text", "limit": "max_text_length", "value": n_bytes,
                         "note": f"prompt {pid}: {n_bytes} byte tokens, over max_text_length "
                                 f"{cfg.max_text_length}: the model reads the first "
                                 f"{cfg.max_text_length}"})
        if frames is not None and frames[i] in (1, cfg.block_size):
            longest = frames[i] == cfg.block_size
            bound = "block_size, the longest" if longest else "1 frame, the shortest"
            seconds = frames[i] * cfg.hop_length / cfg.sample_rate
            cuts.append({"id": pid, "cut": "duration", "value": frames[i],
                         "limit": "block_size" if longest else "1 frame",
                         "note": f"prompt {pid}: the duration reached {bound} this model makes "
                                 f"({frames[i]} frames, {seconds:.2f} s)"})
    for cut in cuts:
        print(f"note: {cut['note']}", file=sys.stderr)
    return cuts
