"""Where imagebash keeps user data, settings and caches (platformdirs), and where its resources are.

Each folder can be moved with an environment variable (IMAGEBASH_DATA_DIR, IMAGEBASH_CONFIG_DIR,
IMAGEBASH_CACHE_DIR); tests point them at temporary folders.
"""

from __future__ import annotations

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


def resource(*parts: str) -> pathlib.Path:
    return RESOURCES.joinpath(*parts)
