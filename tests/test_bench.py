"""scripts/bench.py on CPU: the training benchmark warms up over one epoch before it times (four
with CUDA graphs) and counts its shapes, its profile sorts GPU kernels by the work they do, its
loss curves replay a seed and plot_losses overlays them, and its vocoder runs under the
autocast asked for."""
import argparse
import json

import pytest
import torch
from matplotlib.image import imread

import config as config_lib
from conftest import load_script
from data import PreparedDataset


def test_training_bench_warms_up_one_epoch_of_optimizer_steps(tiny_overrides, tmp_path,
                                                              monkeypatch):
    bench = load_script("bench")
    texts = bench.ljspeech_texts(None, 48, seed=0)  # made-up texts, LJSpeech-like lengths
    dataset = PreparedDataset(bench.synthetic_dataset(str(tmp_path), texts, seed=0))
    cfg = config_lib.load_config(None, {**tiny_overrides, "batch_size": 4,
                                        "effective_batch_size": 8, "mel_mean": -5.5,
                                        "mel_std": 2.0})
    learning_rates = []
    step = bench.Trainer.step

    def counted_step(self, batches, lr):
        learning_rates.append(lr)
        return step(self, batches, lr)

    monkeypatch.setattr(bench.Trainer, "step", counted_step)
    record = bench.bench_train(cfg, dataset, torch.device("cpu"), None, 3, 790.0)
    # 48 utterances at 8 per optimizer step (4 x 2 accumulated): 6 warm-up steps, then 3 timed.
    assert len(learning_rates) == 6 + 3
    assert record["utterances_per_step"] == 8
    assert 0 <= record["padding_fraction"] < 0.5 and record["useful_frames_per_s"] > 0
    assert 1 <= record["warmup_shapes"] <= 12 and 0 <= record["timed_unsettled_shapes"] <= 6


def test_shape_record_counts_timed_batches_whose_shape_is_not_yet_in_its_steady_state():
    bench = load_script("bench")
    a, b, c = (32, 512, 128), (32, 528, 128), (32, 544, 64)
    # CUDA graphs: a met twice in the warm-up (replayed); b once (its timed step records);
    # c new (warmed up, then recorded). Compiled only, a shape is settled once met.
    record = bench.shape_record([a, a, b], [a, b, b, c, c, c], settled_after=2)
    assert record == {"warmup_shapes": 2, "timed_unsettled_shapes": 3}
    assert bench.shape_record([a, a, b], [a, b, b, c, c, c], 1)["timed_unsettled_shapes"] == 1


def test_cuda_graphs_warm_up_four_epochs_so_each_shape_is_replayed_when_timed():
    bench = load_script("bench")
    cfg = config_lib.load_config(None, {"batch_size": 8})
    graphed = config_lib.apply(cfg, {"compile": True, "cuda_graphs": True}, "test")
    assert bench.default_warmup(cfg, 100, accum=2) == 7  # 100 / 16, rounded up
    assert bench.default_warmup(graphed, 100, accum=1) == 4 * 13


def test_profile_sorts_kernels_by_the_work_they_do():
    category = load_script("bench_profile").kernel_category
    assert category("cudnn_generated_fort_native_sdpa_sm90_flash_bprop_wgmma_f16") == "attention"
    assert category("nvjet_sm90_tst_256x128_64x4_1x2_h_bz_coopA_NNT") == "matmul/conv"
    assert category("sm80_xmma_gemm_f32f32_f32f32_f32_tn_n_tilesize128x64x8") == "matmul/conv"
    assert category("triton_poi_fused__scaled_dot_product_cudnn_attention__to_copy_3") == \
        "fused elementwise"
    assert category("void at::native::vectorized_elementwise_kernel<4>") == "other"


def test_loss_curve_replays_the_same_run_for_the_same_seed(tiny_overrides, tmp_path):
    """--loss_steps overlays two versions of the code: on one version the curve must be the
    same number for number, so any difference between versions comes from the code."""
    bench = load_script("bench")
    dataset = PreparedDataset(bench.synthetic_dataset(
        str(tmp_path), bench.ljspeech_texts(None, 16, seed=0), seed=0))
    overrides = {**tiny_overrides, "batch_size": 4, "effective_batch_size": 4,
                 "mel_mean": -5.5, "mel_std": 2.0}
    curve = lambda seed: bench.loss_curve(config_lib.load_config(None, {**overrides, "seed": seed}),
                                          dataset, torch.device("cpu"), 4)["flow_loss"]
    first, again, other_seed = curve(0), curve(0), curve(1)
    assert len(first) == 4 and all(0 < loss < 10 for loss in first)
    assert first == again
    assert first != other_seed


def test_vocoder_dtypes_run_the_vocoder_under_that_autocast_only():
    bench = load_script("bench")
    seen = []

    class Recorder:
        name = "recorder"

        def __call__(self, mel):  # (b, m, n), as audio.Vocoder takes it
            seen.append((tuple(mel.shape), torch.is_autocast_enabled("cpu"),
                         torch.get_autocast_dtype("cpu")))
            return mel.sum(1)

    mel = torch.randn(2, 10, 80)  # (b, n, m), as the sampler returns it
    for dtype in ("bf16", "fp32"):
        bench.vocode(Recorder(), mel, dtype, torch.device("cpu"))
    assert seen[0] == ((2, 80, 10), True, torch.bfloat16)
    assert seen[1][:2] == ((2, 80, 10), False)  # fp32: no autocast at all
    dtypes = bench.comma_list("vocoder dtype(s)", bench.VOCODER_DTYPES)
    assert dtypes("fp32,fp16") == ["fp32", "fp16"]
    with pytest.raises(argparse.ArgumentTypeError, match="unknown vocoder dtype.s. 'fp8'"):
        dtypes("fp32,fp8")


def test_plot_losses_overlays_the_curves_and_prints_how_far_apart_they_are(tmp_path, capsys):
    script = load_script("plot_losses")
    records = [{"mode": "train", "variant": "compile"},
               {"mode": "losses", "variant": "compile", "flow_loss": [2.0, 1.0, 0.5]},
               {"mode": "losses", "variant": "graphs", "code": "abc1234",
                "flow_loss": [2.0, 1.01, 0.5]}]
    path = tmp_path / "b.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "overlay.png"
    assert script.main([str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert ("graphs @ abc1234 (b.jsonl:3): relative difference from the first curve, "
            "median 0, max 0.01") in printed
    assert imread(out).shape[:2] == (600, 900)
    one = tmp_path / "one.jsonl"
    one.write_text(json.dumps(records[1]) + "\n")
    with pytest.raises(SystemExit):  # one curve: nothing to overlay
        script.main([str(one), "--out", str(out)])
