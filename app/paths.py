"""Where imagebash keeps user data, settings, caches and models (platformdirs), and its resources.

Each folder can be moved with an environment variable (IMAGEBASH_DATA_DIR, IMAGEBASH_CONFIG_DIR,
IMAGEBASH_CACHE_DIR, IMAGEBASH_MODELS, IMAGEBASH_EXTRA_MODELS); tests point them at temporary folders.
"""

from __future__ import annotations

import json
import os
import pathlib

import platformdirs

APP_NAME = "imagebash"
REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
RESOURCES = REPO_ROOT / "resources"
WORKFLOWS = REPO_ROOT / "workflows"


def _dir(env: str, default: str) -> pathlib.Path:
    p = pathlib.Path(os.environ.get(env) or default).expanduser()
    p.mkdir(parents=True, exist_ok=True)
    return p


def data_dir() -> pathlib.Path:
    """Autosaves, queue history, trained LoRAs by default."""
    return _dir("IMAGEBASH_DATA_DIR", platformdirs.user_data_dir(APP_NAME))


def config_dir() -> pathlib.Path:
    """Settings (never secrets: those go to the OS keyring)."""
    return _dir("IMAGEBASH_CONFIG_DIR", platformdirs.user_config_dir(APP_NAME))


def cache_dir() -> pathlib.Path:
    """Schemas of online models, latent caches, thumbnails."""
    return _dir("IMAGEBASH_CACHE_DIR", platformdirs.user_cache_dir(APP_NAME))


def _shared_setting(key: str) -> object:
    """A value of `<config dir>/settings.json` (what the Settings dialog writes); None when unset."""
    try:
        return json.loads((config_dir() / "settings.json").read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _own_models_dirs() -> list[pathlib.Path]:
    env = os.environ.get("IMAGEBASH_MODELS", "").strip()
    if env:
        return [pathlib.Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    value = _shared_setting("models_dir")
    return [pathlib.Path(value).expanduser()] if isinstance(value, str) and value else [data_dir() / "models"]


#: Sub-folders that mark a ComfyUI or A1111 `models/` folder (so an install's root can be given).
_FOREIGN_MARKERS = ("checkpoints", "Stable-diffusion", "loras", "Lora", "diffusion_models", "unet")


def extra_model_roots() -> list[pathlib.Path]:
    """Models folders of other tools the user pointed us at (an existing ComfyUI or A1111 `models/`,
    so nothing is copied twice): `IMAGEBASH_EXTRA_MODELS` (joined with the OS path separator) plus
    the Settings' "library/extra_roots" (a list, or one string joined the same way). An install's
    own folder is taken as its `models/` when that holds the usual sub-folders."""
    raw: list[str] = [p for p in os.environ.get("IMAGEBASH_EXTRA_MODELS", "").split(os.pathsep) if p.strip()]
    value = _shared_setting("library/extra_roots")
    if isinstance(value, str):
        raw += [p for p in value.split(os.pathsep) if p.strip()]
    elif isinstance(value, list):
        raw += [p for p in value if isinstance(p, str) and p.strip()]
    roots: list[pathlib.Path] = []
    for text in raw:
        p = pathlib.Path(text.strip()).expanduser()
        inner = p / "models"
        if not any((p / m).is_dir() for m in _FOREIGN_MARKERS) and any((inner / m).is_dir() for m in _FOREIGN_MARKERS):
            p = inner
        if p not in roots:
            roots.append(p)
    return roots


def models_dirs() -> list[pathlib.Path]:
    """The models folders: ours first (`IMAGEBASH_MODELS`, several joined with the OS path separator,
    else the "models_dir" of `<config dir>/settings.json`, else `<data dir>/models`; the first is
    where new models go), then `extra_model_roots()`, so every dropdown lists those too."""
    found: list[pathlib.Path] = []
    for p in [*_own_models_dirs(), *extra_model_roots()]:
        if p not in found:
            found.append(p)
    return found


def resource(*parts: str) -> pathlib.Path:
    return RESOURCES.joinpath(*parts)
