"""Training test helpers: procedurally drawn tiny images with captions, and small-run settings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.training.config import TrainConfig


def draw(i: int, size: tuple[int, int] = (64, 64)) -> np.ndarray:
    """A deterministic stripy RGB image (uint8, h x w x 3): the 'style' to learn."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([np.sin(x / (3 + i)), np.cos(y / (4 + i)), np.sin((x + y) / 7.0)], -1)
    return (img * 127 + 128).astype(np.uint8)


def write_image(path: Path, i: int = 0, size: tuple[int, int] = (64, 64), caption: str | None = None,
                caption_ext: str = ".txt") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw(i, size)).save(path)
    if caption is not None:
        path.with_suffix(caption_ext).write_text(caption, encoding="utf-8")
    return path


@pytest.fixture
def style_folder(tmp_path) -> Path:
    """Four captioned 64x64 images in a kohya repeat folder (2 repeats)."""
    root = tmp_path / "data"
    for i in range(4):
        write_image(root / "2_stripes" / f"img{i}.png", i, caption=f"stripes, pattern {i}")
    return root


def small_config(tmp_path: Path, data: Path, base: Path, **kw) -> TrainConfig:
    """Settings for a few-second CPU run on the tiny models."""
    values = dict(data=str(data), base=str(base), out=str(tmp_path / "out" / "style.safetensors"),
                  resolution=64, rank=4, alpha=4.0, learning_rate=1e-2, lr_scheduler="constant",
                  batch_size=2, max_steps=8, cache_dir=str(tmp_path / "cache"), trigger="zzstyle",
                  device="cpu", seed=3)
    values.update(kw)
    return TrainConfig().replace(**values).validate()


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """One intra-op thread: with tiny tensors on a shared 2-core runner, OpenMP's spinning threads
    made steps ~10x slower whenever another process was busy."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
