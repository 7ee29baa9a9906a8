"""Prepared-dataset reader, batching, and the frozen encoder's cached text features.

A prepared dataset (scripts/prepare_ljspeech.py) is `mels.f16` (all log-mels concatenated,
(total_frames, m) float16), `index.parquet` (one row per utterance) and
`metadata/dataset_stats.json`. Batches come from length-bucketed, seeded, per-rank shards
whose order is a pure function of (seed, epoch), so a resumed run sees the same batches.

All training randomness (flow noise, time t, text dropout, tail silence) is drawn here from
generators seeded by (seed, epoch, utterance), not from a process-wide RNG: resuming, and
splitting one batch over several ranks, give exactly the same numbers. The objective these
draws feed is written out in model.FlowTTS.forward.

Shape letters: b batch, n mel frames, m mel bands, l text tokens, h text-encoder width.
"""
from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass, fields

import numpy as np
import pyarrow.parquet as pq
import torch

import audio
from tokenizer import MEL_PAD_MULTIPLE, round_up, tokenize


class DatasetError(ValueError):
    """A missing or malformed prepared dataset: names the file."""


class PreparedDataset:
    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        stats_path = os.path.join(data_dir, "metadata", "dataset_stats.json")
        index_path = os.path.join(data_dir, "index.parquet")
        mels_path = os.path.join(data_dir, "mels.f16")
        for path in (stats_path, index_path, mels_path):
            if not os.path.exists(path):
                raise DatasetError(f"{path} not found: prepare the dataset first with `python "
                                   f"scripts/prepare_ljspeech.py --out {data_dir} --src DIR`")
        with open(stats_path) as f:
            self.stats = json.load(f)
        table = pq.read_table(index_path).to_pydict()
        self.ids, self.texts, self.splits = table["id"], table["text"], table["split"]
        self.offsets = np.asarray(table["frame_offset"], dtype=np.int64)
        self.n_frames = np.asarray(table["n_frames"], dtype=np.int64)
        total = int(self.offsets[-1] + self.n_frames[-1]) if len(self.ids) else 0
        expected_bytes = total * audio.N_MELS * 2
        if os.path.getsize(mels_path) != expected_bytes:
            raise DatasetError(f"{mels_path}: {os.path.getsize(mels_path)} bytes, index.parquet "
                               f"implies {expected_bytes}; re-run prepare with --force")
        self.mels = np.memmap(mels_path, dtype=np.float16, mode="r", shape=(total, audio.N_MELS))

    def __len__(self) -> int:
        return len(self.ids)

    def mel(self, row: int) -> np.ndarray:
        start = self.offsets[row]
        return np.asarray(self.mels[start:start + self.n_frames[row]], dtype=np.float32)  # (n, m)

    def rows(self, split: str, max_frames: int, max_text_bytes: int, first_n: int = 0) -> list[int]:
        """Rows of `split` that fit the model (longest mel, longest text incl. EOS)."""
        rows = [i for i, s in enumerate(self.splits) if s == split
                and self.n_frames[i] <= max_frames
                and len(self.texts[i].encode("utf-8")) + 1 <= max_text_bytes]
        return rows[:first_n] if first_n else rows


def global_batches(lengths: np.ndarray, batch_size: int, world_size: int, seed: int,
                   epoch: int, bucket_batches: int) -> list[np.ndarray]:
    """One epoch of global batches (positions into `lengths`), each of batch_size*world_size.

    Shuffle, cut into pools of `bucket_batches` global batches, sort each pool by length so a
    batch holds similar lengths (little padding), then shuffle the batch order. The last,
    partial global batch is kept while every rank can get at least one utterance."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    global_size = batch_size * world_size
    pool = global_size * bucket_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start:start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + global_size] for i in range(0, len(chunk), global_size)]
    batches = [batches[i] for i in rng.permutation(len(batches))]
    return [batch for batch in batches if len(batch) >= world_size]


def rank_slice(batch: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """Contiguous, near-equal slices: a rank's utterances have similar lengths."""
    bounds = np.linspace(0, len(batch), world_size + 1).round().astype(int)
    return batch[bounds[rank]:bounds[rank + 1]]


@dataclass
class Batch:
    rows: torch.Tensor  # (b,) dataset rows, to look up cached text features
    mel: torch.Tensor  # (b, n, m) log-mel, padded with silence
    mel_mask: torch.Tensor  # (b, n) bool
    text_ids: torch.Tensor  # (b, l)
    text_mask: torch.Tensor  # (b, l) bool
    noise: torch.Tensor  # (b, n, m) flow-matching source sample
    t: torch.Tensor  # (b,) flow time in (0, 1)
    drop_text: torch.Tensor  # (b,) bool: train this row unconditionally (CFG)
    text_hidden: torch.Tensor | None = None  # (b, l, h), filled from the feature cache

    def to(self, device, non_blocking: bool = True) -> "Batch":
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        return Batch(**{k: v.to(device, non_blocking=non_blocking) if torch.is_tensor(v) else v
                        for k, v in moved.items()})

    def pin_memory(self) -> "Batch":
        return Batch(**{f.name: getattr(self, f.name).pin_memory()
                        if torch.is_tensor(getattr(self, f.name)) else getattr(self, f.name)
                        for f in fields(self)})

    @property
    def useful_frames(self) -> torch.Tensor:
        return self.mel_mask.sum()


class Collate:
    """Rows -> Batch. Picklable, so DataLoader workers can run it."""

    def __init__(self, dataset: PreparedDataset, cfg, epoch: int = 0):
        self.dataset, self.cfg, self.epoch = dataset, cfg, epoch

    def utterance(self, row: int):
        """One row's (log-mel (n, m), noise (n, m), t, drop_text), all drawn from its own seed:
        the random half of the flow-matching objective (model.FlowTTS.forward is the rest)."""
        cfg = self.cfg
        rng = np.random.default_rng([cfg.seed, self.epoch, row])
        mel = self.dataset.mel(row)
        if rng.random() < cfg.silence_prob:  # tail silence counts in the target duration
            extra = int(rng.random() * cfg.max_silence_sec * audio.FRAMES_PER_SECOND)
            mel = np.concatenate([mel, np.full((extra, mel.shape[1]), audio.SILENCE_LOGMEL,
                                               dtype=np.float32)])[:cfg.block_size]
        logit_t = cfg.timestep_logit_mean + cfg.timestep_logit_std * rng.standard_normal()
        t = 1 / (1 + np.exp(-logit_t))  # logit-normal: most steps train mid-path
        if cfg.diffusion_train_steps > 1:  # the seed's discrete time grid
            t = np.round(t * (cfg.diffusion_train_steps - 1)) / (cfg.diffusion_train_steps - 1)
        drop = rng.random() < cfg.text_condition_dropout
        noise = rng.standard_normal(mel.shape, dtype=np.float32)
        return mel, noise, float(t), drop

    def __call__(self, rows) -> Batch:
        rows = [int(r) for r in rows]
        items = [self.utterance(r) for r in rows]
        lengths = [mel.shape[0] for mel, *_ in items]
        # Round the padded length up so compiled kernels see few distinct shapes.
        n = round_up(max(lengths), MEL_PAD_MULTIPLE)
        mel = torch.full((len(rows), n, audio.N_MELS), audio.SILENCE_LOGMEL)
        noise = torch.zeros(len(rows), n, audio.N_MELS)
        for i, (m, z, _, _) in enumerate(items):
            mel[i, :len(m)], noise[i, :len(z)] = torch.from_numpy(m), torch.from_numpy(z)
        texts = [self.dataset.texts[r] for r in rows]
        text_ids, text_mask = tokenize(texts, self.cfg.max_text_length)
        return Batch(rows=torch.tensor(rows), mel=mel,
                     mel_mask=torch.arange(n)[None] < torch.tensor(lengths)[:, None],
                     text_ids=text_ids, text_mask=text_mask, noise=noise,
                     t=torch.tensor([it[2] for it in items], dtype=torch.float32),
                     drop_text=torch.tensor([it[3] for it in items]))


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader workers leave SIGTERM/SIGINT to the main process, which finishes its step,
    saves and shuts them down. A scheduler, torchrun or Ctrl-C signals the whole process
    group, and a worker killed mid-step makes the DataLoader raise at a random point."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class BatchStream:
    """This rank's batches, epoch after epoch, from a given position (for exact resume)."""

    def __init__(self, dataset: PreparedDataset, rows: list[int], cfg, rank: int = 0,
                 world_size: int = 1):
        self.dataset, self.rows, self.cfg = dataset, np.asarray(rows), cfg
        self.rank, self.world_size = rank, world_size
        self.lengths = dataset.n_frames[self.rows]
        if len(self.rows) < world_size:
            raise DatasetError(f"{len(self.rows)} training utterances for {world_size} ranks")

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        cfg = self.cfg
        batches = global_batches(self.lengths, cfg.batch_size, self.world_size, cfg.seed, epoch,
                                 cfg.bucket_batches)
        return [self.rows[rank_slice(b, self.rank, self.world_size)] for b in batches]

    def iterate(self, epoch: int, position: int):
        """Yield (epoch, position_after, Batch) forever, starting at batch `position` of epoch.
        One DataLoader serves every epoch: a new one per epoch would start its worker
        processes again, which costs more than the steps of a small dataset's epoch."""
        def keys():  # (epoch, position after, rows) of each batch, in order
            e, p = epoch, position
            while True:
                for rows in self.epoch_batches(e)[p:]:
                    p += 1
                    yield e, p, rows
                e, p = e + 1, 0

        loader = torch.utils.data.DataLoader(
            _Keys(), sampler=keys(), batch_size=None,
            collate_fn=KeyedCollate(self.dataset, self.cfg),
            num_workers=self.cfg.num_workers,
            prefetch_factor=self.cfg.prefetch_factor if self.cfg.num_workers else None,
            pin_memory=torch.cuda.is_available(), worker_init_fn=ignore_stop_signals)
        yield from loader


class _Keys(torch.utils.data.Dataset):
    """A map-style dataset whose item is its key: the sampler's keys reach the collate fn."""

    def __getitem__(self, key):
        return key


class KeyedCollate:
    """(epoch, position, rows) -> (epoch, position, Batch), drawing with that epoch's seeds."""

    def __init__(self, dataset: PreparedDataset, cfg):
        self.dataset, self.cfg = dataset, cfg

    def __call__(self, key):
        epoch, position, rows = key
        return epoch, position, Collate(self.dataset, self.cfg, epoch)(rows)


class TextFeatureCache:
    """Frozen-encoder features of every dataset utterance, computed once: the encoder never
    runs in the training step. `encode(texts) -> (hidden (b, l, h), mask (b, l))` is the
    frozen encoder (FlowTTS.encode_texts). Stored flat, (sum of l, h), on encode's device."""

    def __init__(self, encode, texts: list[str], batch_size: int = 64):
        features, lengths = [], []
        for start in range(0, len(texts), batch_size):
            hidden, mask = encode(texts[start:start + batch_size])  # (b, l, h)
            counts = mask.sum(1).tolist()
            lengths += counts
            features += [hidden[i, :k] for i, k in enumerate(counts)]
        self.features = torch.cat(features)  # (sum l, h)
        self.lengths = torch.tensor(lengths, device=self.features.device)
        self.offsets = torch.cumsum(self.lengths, 0) - self.lengths

    def gather(self, rows: torch.Tensor, max_tokens: int) -> torch.Tensor:
        """rows (b,) dataset rows -> (b, max_tokens, h), zeros past each text's end."""
        steps = torch.arange(max_tokens, device=rows.device)
        valid = steps[None] < self.lengths[rows][:, None]  # (b, l)
        index = torch.where(valid, self.offsets[rows][:, None] + steps[None], 0)
        return self.features[index] * valid[..., None]
