"""The diffusion tests' engine fixture (a CPU engine sharing one model manager), for guidance tests."""

from tests.diffusion.conftest import engine, shared_models  # noqa: F401
