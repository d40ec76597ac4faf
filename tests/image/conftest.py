"""Fixtures for the image node tests."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from tests.image.helpers import FakeContext


@pytest.fixture
def ctx(tmp_path: pathlib.Path) -> FakeContext:
    return FakeContext(tmp_path / "out")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
