import pytest
import yaml

import config
from config import ConfigError


def test_yaml_and_overrides_are_typed(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e-3\ndecoder_n_layer: 4\ncompile: true\nmel_mean: -5.5\n")
    cfg = config.config_from_argv(["--config", str(path), "--lr", "2e-4", "--compile=false",
                                   "--batch-size", "8", "--mel_std", "none"])
    assert cfg.lr == 2e-4 and isinstance(cfg.lr, float)  # YAML 1.1 reads 1e-3 as a string
    assert cfg.decoder_n_layer == 4 and cfg.batch_size == 8
    assert cfg.compile is False and cfg.mel_mean == -5.5 and cfg.mel_std is None


def test_unknown_key_names_it_and_lists_valid_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("decoder_d_modle: 512\n")
    with pytest.raises(ConfigError) as err:
        config.load_config(str(path))
    assert "decoder_d_modle" in str(err.value) and "decoder_d_model" in str(err.value)
    with pytest.raises(ConfigError, match="'nope'"):
        config.config_from_argv(["--nope", "1"])


@pytest.mark.parametrize("key,value,message", [
    ("lr", "fast", "must be a finite number >= 0, got 'fast'"),
    ("lr", "nan", "must be a finite number >= 0, got 'nan'"),
    ("decoder_n_layer", "2.5", "must be an integer >= 1"),
    ("max_steps", "1e400", "must be an integer >= 1"),
    ("compile", "maybe", "as bool"),
    ("optimizer", "sgd", "not one of"),
    ("batch_size", "0", "must be an integer >= 1"),
    ("silence_prob", "1.5", "must be a finite number in [0, 1]"),
    ("eval_sway", "-1.5", "in [-1, 1]"),
    ("eval_cfg_scale", "inf", "must be a finite number in [0, 20]"),
    ("mel_std", "1e30", "in (0, 20]"),
    ("seed", "-1", "must be an integer in [0, 4294967295]"),
    ("data_dir", "data/\x00x", "control character"),
    ("n_mels", "100", "must be 80"),
    ("decoder_n_head", "3", "even integer head size"),
    ("cuda_graphs", "true", "needs compile: true"),
])
def test_bad_values_are_named(key, value, message):
    with pytest.raises(ConfigError) as err:
        config.load_config(None, {key: value})
    assert key in str(err.value) and message in str(err.value)


def test_the_cosine_runs_over_steps_or_seconds_not_both():
    with pytest.raises(ConfigError) as err:
        config.load_config(None, {"lr_schedule_steps": 1000, "lr_schedule_seconds": 600})
    assert "lr_schedule_seconds" in str(err.value) and "set one" in str(err.value)
    assert config.load_config(None, {"lr_schedule_seconds": 600}).lr_schedule_seconds == 600.0


def test_repo_configs_and_seed_style_yaml_load(tmp_path):
    full = config.load_config("configs/ljspeech.yaml")
    assert (full.decoder_d_model, full.decoder_n_layer, full.decoder_n_head) == (1024, 8, 4)
    assert (full.batch_size, full.max_steps, full.lr, full.min_lr) == (32, 200000, 1e-3, 6e-5)
    assert (full.eval_steps, full.eval_cfg_scale, full.text_condition_dropout) == (50, 2.0, 0.1)
    overfit = config.load_config("configs/ljspeech_overfit64.yaml")
    assert overfit.overfit_first_n_samples == 64 and overfit.eval_prompts == "overfit"
    # The seed's own key set, including keys this project treats as fixed.
    seed_keys = {"block_size": 1024, "n_mels": 80, "text_encoder_trainable": False,
                 "text_embedding_trainable": False, "sample_rate": 22050, "mel_f_max": 8000.0,
                 "diffusion_train_steps": 1000, "grad_accum_steps": 16, "val_interval": 1000,
                 "eval_vocoder_model": "nvidia/bigvgan_v2_22khz_80band_fmax8k_256x",
                 "prefetch_factor": 4, "lr_schedule_steps": 200000, "cosine_lr": True}
    path = tmp_path / "seed.yaml"
    path.write_text(yaml.safe_dump(seed_keys))
    assert config.load_config(str(path)).diffusion_train_steps == 1000


def test_the_seeds_train_flags_are_config_overrides():
    seed_argv = ["--config", "configs/ljspeech.yaml", "--resume", "runs/a/step_00001000.pt",
                 "--run_name", "habits", "--no_wandb", "--lr", "5e-4"]
    cfg = config.config_from_argv(seed_argv)
    assert (cfg.resume, cfg.run_name, cfg.wandb_project, cfg.lr) == (
        "runs/a/step_00001000.pt", "habits", "", 5e-4)
    assert config.load_config("configs/ljspeech.yaml").wandb_project == "nanoaudio"
    assert config.parse_overrides(["--no-wandb"]) == {"wandb_project": ""}
    with pytest.raises(ConfigError, match="'--run_name' has no value"):
        config.parse_overrides(["--no_wandb", "--run_name"])


def test_checkpoint_round_trip():
    cfg = config.load_config(None, {"lr": "3e-4", "mel_mean": "-5"})
    assert config.from_dict(config.as_dict(cfg)) == cfg
