"""Where imagebash keeps user data, settings, caches and models (platformdirs), and its resources.

Each folder can be moved with an environment variable (IMAGEBASH_DATA_DIR, IMAGEBASH_CONFIG_DIR,
IMAGEBASH_CACHE_DIR, IMAGEBASH_MODELS); tests point them at temporary folders.
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


def models_dirs() -> list[pathlib.Path]:
    """The models folders: `IMAGEBASH_MODELS` (several joined with the OS path separator), else the
    "models_dir" of `<config dir>/settings.json` (what Settings writes), else `<data dir>/models`."""
    env = os.environ.get("IMAGEBASH_MODELS", "").strip()
    if env:
        return [pathlib.Path(p).expanduser() for p in env.split(os.pathsep) if p.strip()]
    settings = config_dir() / "settings.json"
    try:
        value = json.loads(settings.read_text(encoding="utf-8")).get("models_dir")
    except (OSError, ValueError, AttributeError):
        value = None
    return [pathlib.Path(value).expanduser()] if value else [data_dir() / "models"]


def resource(*parts: str) -> pathlib.Path:
    return RESOURCES.joinpath(*parts)
