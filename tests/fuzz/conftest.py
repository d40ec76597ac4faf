"""Hypothesis set-up for the fuzz suite: reproducible (derandomized, no example database, so
nothing is written into the repository) and bounded, so the suite stays under a minute in CI."""

from __future__ import annotations

import atexit
import importlib
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir

from nodes.registry import Registry

# Hypothesis keeps a cache of the constants it finds in the code under test in its home folder
# (./.hypothesis by default) even without an example database: point it at a throw-away folder.
_home = tempfile.mkdtemp(prefix="imagebash-hypothesis-")
atexit.register(shutil.rmtree, _home, ignore_errors=True)
set_hypothesis_home_dir(_home)

settings.register_profile(
    "fuzz",
    derandomize=True,  # the same examples on every run and machine: a failure reproduces
    database=None,  # no .hypothesis folder; failing inputs are kept as explicit @example()s
    deadline=None,  # slow shared CI cores: hangs are caught by pytest-timeout instead
    max_examples=40,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
settings.load_profile("fuzz")


def media_registry() -> Registry:
    """The image and video node packs only: real Load/Save nodes without torch-heavy packs, so a
    fuzzed run is fast and every node in it can write only through Save nodes."""
    reg = Registry(load_packs=False)
    for mod in ("nodes.image", "nodes.video"):
        reg.add_module(importlib.import_module(mod))
    return reg


@pytest.fixture(scope="session")
def media_reg() -> Registry:
    return media_registry()


@pytest.fixture(scope="session")
def test_reg() -> Registry:
    from tests.engine.conftest import make_registry

    return make_registry()
