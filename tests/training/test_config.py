"""Settings: presets, TOML files and options, with an error naming any bad key or value."""

from __future__ import annotations

import pytest

from app.training.config import ConfigError, TrainConfig, load_preset, load_toml, preset_names


def test_presets_ship_for_sd15_and_sdxl_with_sensible_defaults():
    assert {"style-sd15", "style-sdxl"} <= set(preset_names())
    sd = load_preset("style-sd15").validate()
    xl = load_preset("style-sdxl").validate()
    assert sd.resolution == 512 and xl.resolution == 1024
    assert not xl.train_text_encoder  # SDXL: U-Net only by default
    assert sd.min_snr_gamma == 5.0 and sd.scale == 0.5


def test_toml_overrides_preset_and_accepts_a_train_table(tmp_path):
    f = tmp_path / "run.toml"
    f.write_text('[train]\nrank = 32\nalpha = 16\nsample_prompts = ["a cat", "a dog"]\nnetwork = "dora"\n')
    cfg = load_toml(f, load_preset("style-sd15"))
    assert (cfg.rank, cfg.alpha, cfg.network, cfg.resolution) == (32, 16.0, "dora", 512)
    assert cfg.sample_prompts == ("a cat", "a dog")


def test_unknown_key_wrong_type_and_bad_toml_are_named(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("rnak = 8\n")
    with pytest.raises(ConfigError, match=r"bad.toml: unknown setting 'rnak'"):
        load_toml(f)
    f.write_text('rank = "eight"\n')
    with pytest.raises(ConfigError, match=r"'rank' expects int, got 'eight'"):
        load_toml(f)
    f.write_text("rank = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml(f)
    with pytest.raises(ConfigError, match="config file not found"):
        load_toml(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="unknown preset 'nope'"):
        load_preset("nope")


@pytest.mark.parametrize(("change", "message"), [
    ({"network": "loha"}, "network must be one of lora, dora"),
    ({"resolution": 500}, "multiple of 64"),
    ({"caption_dropout": 1.0}, "caption_dropout"),
    ({"rank": 0}, "rank must be at least 1"),
    ({"max_steps": 0, "epochs": 0}, "set max_steps or epochs"),
])
def test_validation_names_the_setting(change, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig().replace(**change).validate()


def test_one_rule_for_where_a_trained_lora_goes(tmp_path, monkeypatch):
    """The CLI, the node and the dialog put a LoRA without `out` in the models folder's loras/
    (where the LoRA dropdowns look), and its checkpoints beside it."""
    from app.training.config import checkpoint_root, lora_out_path
    from app.training.loop import Trainer
    from nodes.diffusion.catalog import list_loras

    monkeypatch.setenv("IMAGEBASH_MODELS", str(tmp_path / "models"))
    cfg = TrainConfig(data=str(tmp_path / "my_style"))
    assert lora_out_path(cfg) == tmp_path / "models" / "loras" / "my_style.safetensors"
    assert Trainer(cfg).out_path == lora_out_path(cfg)
    assert checkpoint_root(cfg) == tmp_path / "models" / "loras" / "my_style_checkpoints"
    assert lora_out_path(cfg.replace(out=str(tmp_path / "x"))) == tmp_path / "x.safetensors"
    assert list_loras() == []
