"""Session-scoped fixtures: the tiny models and LoRA files of `tests.tiny_models`, built once."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """Every tiny artefact: keys sd_dir, sd_ckpt, sdxl_dir, lora_kohya, lora_kohya_b, lora_peft,
    dora, dora_plain (the same LoRA as `dora` without its magnitudes)."""
    from tests.tiny_models import build_all

    return build_all(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def tiny_sd_dir(tiny_models) -> Path:
    return tiny_models["sd_dir"]


@pytest.fixture(scope="session")
def tiny_sd_ckpt(tiny_models) -> Path:
    return tiny_models["sd_ckpt"]


@pytest.fixture(scope="session")
def tiny_sdxl_dir(tiny_models) -> Path:
    return tiny_models["sdxl_dir"]


@pytest.fixture(scope="session")
def tiny_lora_kohya(tiny_models) -> Path:
    return tiny_models["lora_kohya"]


@pytest.fixture(scope="session")
def tiny_lora_kohya_b(tiny_models) -> Path:
    return tiny_models["lora_kohya_b"]


@pytest.fixture(scope="session")
def tiny_lora_peft(tiny_models) -> Path:
    return tiny_models["lora_peft"]


@pytest.fixture(scope="session")
def tiny_dora(tiny_models) -> Path:
    return tiny_models["dora"]


@pytest.fixture(scope="session")
def tiny_dora_plain(tiny_models) -> Path:
    return tiny_models["dora_plain"]
