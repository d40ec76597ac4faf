"""Session-scoped fixtures: the tiny Flux / SD 3.5 / Qwen-Image models of `tests.tiny_families`
(built once, a few seconds) and header-only files of the real-size key sets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_families(tmp_path_factory) -> dict[str, Path]:
    """Every tiny artefact (name -> path; the same names, relative, in `<root>/manifest.json`):
    flux_{dev,schnell,fill,kontext}_dir, sd3_dir, sd3_medium_dir, sd3_no_t5_dir, qwen_dir,
    qwen_edit_dir (diffusers folders); flux_dev_file, sd3_file (denoiser-only, diffusers keys);
    comfy_dir and its files comfy_{clip_l,clip_g,t5}, comfy_{flux_dev,sd3}_{denoiser,vae,config}."""
    from tests.tiny_families import build_all

    return build_all(tmp_path_factory.mktemp("tiny-families"))


@pytest.fixture(scope="session")
def tiny_flux_dev_dir(tiny_families) -> Path:
    return tiny_families["flux_dev_dir"]


@pytest.fixture(scope="session")
def tiny_flux_schnell_dir(tiny_families) -> Path:
    return tiny_families["flux_schnell_dir"]


@pytest.fixture(scope="session")
def tiny_flux_fill_dir(tiny_families) -> Path:
    return tiny_families["flux_fill_dir"]


@pytest.fixture(scope="session")
def tiny_flux_kontext_dir(tiny_families) -> Path:
    return tiny_families["flux_kontext_dir"]


@pytest.fixture(scope="session")
def tiny_sd3_dir(tiny_families) -> Path:
    return tiny_families["sd3_dir"]


@pytest.fixture(scope="session")
def tiny_sd3_medium_dir(tiny_families) -> Path:
    return tiny_families["sd3_medium_dir"]


@pytest.fixture(scope="session")
def tiny_sd3_no_t5_dir(tiny_families) -> Path:
    return tiny_families["sd3_no_t5_dir"]


@pytest.fixture(scope="session")
def tiny_qwen_dir(tiny_families) -> Path:
    return tiny_families["qwen_dir"]


@pytest.fixture(scope="session")
def tiny_qwen_edit_dir(tiny_families) -> Path:
    return tiny_families["qwen_edit_dir"]


@pytest.fixture(scope="session")
def tiny_flux_dev_file(tiny_families) -> Path:
    return tiny_families["flux_dev_file"]


@pytest.fixture(scope="session")
def tiny_sd3_file(tiny_families) -> Path:
    return tiny_families["sd3_file"]


@pytest.fixture(scope="session")
def tiny_comfy_dir(tiny_families) -> Path:
    """The ComfyUI-style split layout: diffusion_models/, text_encoders/, vae/, config/."""
    return tiny_families["comfy_dir"]


@pytest.fixture(scope="session")
def family_key_file(tmp_path_factory) -> Callable[..., Path]:
    """A factory: `family_key_file(name, prefix=None, extras=True, sparse=False)` -> a header-only
    .safetensors file of the real-size key set `name` (tests/fixtures/family_keys/<name>.json),
    written once per argument set."""
    from tests.tiny_families import write_family_file

    root = tmp_path_factory.mktemp("family-keys")
    made: dict[tuple, Path] = {}

    def make(name: str, prefix: str | None = None, extras: bool = True, sparse: bool = False) -> Path:
        key = (name, prefix, extras, sparse)
        if key not in made:
            tag = f"{name}-{len(made)}" if key != (name, None, True, False) else name
            made[key] = write_family_file(name, root / f"{tag}.safetensors", prefix, extras, sparse)
        return made[key]

    return make


@pytest.fixture(scope="session")
def family_key_files(family_key_file) -> dict[str, Path]:
    """Every stored real-size key set as a header-only file named as the real one is (name -> path)."""
    from tests.tiny_families import family_names

    return {name: family_key_file(name) for name in family_names()}
