"""Shared test set-up: Qt offscreen, QSettings and user data in temporary folders, no network."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# No test may read a token stored in the developer's real keyring (and so reach the real API);
# tests that exercise the keyring install an in-memory backend themselves.
os.environ["PYTHON_KEYRING_BACKEND"] = "keyring.backends.null.Keyring"

import pytest

pytest_plugins = ["tests.fixtures_models", "tests.fixtures_families", "tests.fixtures_guidance", "tests.keyrings"]


@pytest.fixture(autouse=True)
def _user_dirs(tmp_path_factory, monkeypatch):
    """Keep settings, autosaves and caches of every test out of the real home folder."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("IMAGEBASH_DATA_DIR", str(home / "data"))
    monkeypatch.setenv("IMAGEBASH_CONFIG_DIR", str(home / "config"))
    monkeypatch.setenv("IMAGEBASH_CACHE_DIR", str(home / "cache"))
    monkeypatch.delenv("REPLICATE_API_TOKEN", raising=False)
    monkeypatch.delenv("IMAGEBASH_EXTRA_MODELS", raising=False)  # a developer's ComfyUI folder stays out
    for name in ("HF_TOKEN", "IMAGEBASH_HUGGINGFACE_TOKEN", "CIVITAI_API_TOKEN", "IMAGEBASH_CIVITAI_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    yield
