import os

import numpy as np
import pytest
import torch

import audio
import config
from conftest import SHARED_DATA
from data import BatchStream, Collate, DatasetError, PreparedDataset, global_batches, rank_slice


def test_reader_rows_and_mels(tiny_dataset):
    dataset = PreparedDataset(tiny_dataset)
    assert len(dataset) == 10 and dataset.splits.count("val") == 2
    train = dataset.rows("train", max_frames=1024, max_text_bytes=256)
    assert train == list(range(8))
    assert dataset.rows("train", 1024, 256, first_n=3) == [0, 1, 2]
    limit = int(np.median(dataset.n_frames[:8]))
    short = dataset.rows("train", max_frames=limit, max_text_bytes=256)
    assert short == [r for r in range(8) if dataset.n_frames[r] <= limit] and 0 < len(short) < 8
    assert dataset.rows("train", 1024, max_text_bytes=30) == [4, 5]  # the two 25-byte texts
    assert dataset.mel(0).shape == (dataset.n_frames[0], 80)


def test_missing_dataset_names_the_file(tmp_path):
    with pytest.raises(DatasetError, match="dataset_stats.json not found"):
        PreparedDataset(str(tmp_path))


def test_collate_masks_padding_and_tail_silence(tiny_dataset):
    dataset = PreparedDataset(tiny_dataset)
    cfg = config.load_config(None, {"silence_prob": 1.0, "max_silence_sec": 0.5, "mel_mean": 0,
                                    "mel_std": 1})
    batch = Collate(dataset, cfg)([0, 3])
    lengths = batch.mel_mask.sum(1)
    assert batch.mel.shape[1] % 16 == 0 and batch.mel.shape[1] >= lengths.max()
    for i, row in enumerate([0, 3]):
        n = dataset.n_frames[row]
        assert lengths[i] >= n and lengths[i] <= n + 0.5 * audio.FRAMES_PER_SECOND
        assert torch.allclose(batch.mel[i, :n], torch.from_numpy(dataset.mel(row)))
        assert torch.all(batch.mel[i, n:] == audio.SILENCE_LOGMEL)  # tail silence + padding
    assert torch.all((batch.t > 0) & (batch.t < 1))
    again = Collate(dataset, cfg)([0, 3])  # randomness is a function of (seed, epoch, row)
    assert torch.equal(again.noise, batch.noise) and torch.equal(again.t, batch.t)
    other_epoch = Collate(dataset, cfg, epoch=1)([0, 3])
    assert not torch.equal(other_epoch.t, batch.t)


def ljspeech_lengths() -> np.ndarray:
    """Frame counts shaped like LJSpeech's (mean ~6.6 s, 1-10 s), from its real text lengths
    when the shared copy is here (speaking rate ~15 characters per second)."""
    path = os.path.join(SHARED_DATA, "ljspeech_text", "metadata.csv")
    rng = np.random.default_rng(0)
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            chars = np.array([len(line.split("|")[2]) for line in f])
        seconds = chars / 15.2 * rng.normal(1.0, 0.08, len(chars))
    else:
        seconds = rng.normal(6.57, 2.2, 13100)
    return (np.clip(seconds, 1.1, 10.1) * audio.FRAMES_PER_SECOND).astype(np.int64)


def test_bucketed_sampler_covers_epoch_once_across_ranks_with_little_padding():
    lengths = ljspeech_lengths()
    world, batch_size = 2, 16
    batches = global_batches(lengths, batch_size, world, seed=7, epoch=3, bucket_batches=64)
    per_rank = [[rank_slice(b, r, world) for b in batches] for r in range(world)]
    seen = np.concatenate([np.concatenate(rank) for rank in per_rank])
    assert len(per_rank[0]) == len(per_rank[1])  # same step count: no rank waits forever
    assert len(seen) == len(set(seen.tolist()))  # no duplicates within or across ranks
    assert len(seen) >= len(lengths) - (world - 1)  # everything, bar < world leftovers
    padded = sum(len(b) * lengths[b].max() for rank in per_rank for b in rank)
    padding = 1 - lengths[seen].sum() / padded
    assert padding < 0.05
    unbucketed = global_batches(lengths, batch_size, world, 7, 3, bucket_batches=1)
    assert not np.array_equal(np.concatenate(unbucketed), np.concatenate(batches))


def test_stream_resumes_exactly(tiny_dataset):
    dataset = PreparedDataset(tiny_dataset)
    cfg = config.load_config(None, {"batch_size": 3, "num_workers": 0, "mel_mean": 0, "mel_std": 1})
    stream = BatchStream(dataset, list(range(8)), cfg)
    it = stream.iterate(0, 0)
    first = [next(it) for _ in range(7)]  # crosses epoch boundaries (3 batches per epoch)
    epoch, position, _ = first[3]
    resumed = stream.iterate(epoch, position)
    for expected in first[4:]:
        got = next(resumed)
        assert got[:2] == expected[:2]
        assert torch.equal(got[2].rows, expected[2].rows)
        assert torch.equal(got[2].noise, expected[2].noise)
    epochs = {tuple(sorted(np.concatenate(stream.epoch_batches(e)).tolist())) for e in range(3)}
    assert epochs == {tuple(range(8))}  # each epoch: every utterance once
