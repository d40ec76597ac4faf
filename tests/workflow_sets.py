"""Overrides that let example workflows needing a model or the network run in the test suite.

`tests/test_workflows.py` runs every workflow in `workflows/`. Workflows made only of image and
video nodes run as they are. A workflow that uses other nodes (a diffusion model, a Replicate
call, training) runs only if it has an entry here: the workflow's file name mapped to a function
that takes the pytest request (to reach fixtures such as a tiny test model or a fake Replicate
server, via `request.getfixturevalue`) and returns `--set NODE.PARAM=VALUE` strings, applied with
`app.cli.apply_sets` exactly as on the command line. A workflow that needs one and has no
entry fails its test, naming the entry to add.

Example:
    WORKFLOW_SETS["txt2img_lora.json"] = lambda request: [
        f"model.path={request.getfixturevalue('tiny_sd_folder')}", "sampler.steps=2"]
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

WORKFLOW_SETS: dict[str, Callable[[pytest.FixtureRequest], list[str]]] = {}


def _fake_replicate(request: pytest.FixtureRequest) -> list[str]:
    """Point the Replicate client at a fake server on 127.0.0.1 with a test token."""
    from tests.replicate.fake_server import use_fake_replicate

    use_fake_replicate(request)
    return ["online.seed=1234"]


WORKFLOW_SETS["replicate_blend.json"] = _fake_replicate


def _tiny_sd(request: pytest.FixtureRequest) -> str:
    return f"model.checkpoint={request.getfixturevalue('tiny_sd_dir')}"


WORKFLOW_SETS["txt2img_two_loras.json"] = lambda request: [
    _tiny_sd(request), f"style.file={request.getfixturevalue('tiny_lora_kohya')}",
    f"detail.file={request.getfixturevalue('tiny_lora_peft')}", "gen.width=64", "gen.height=64", "gen.steps=2"]
WORKFLOW_SETS["img2img_restyle_blend.json"] = lambda request: [_tiny_sd(request), "restyle.steps=2"]
WORKFLOW_SETS["latent_blend_prompts.json"] = lambda request: [
    _tiny_sd(request), "empty.width=64", "empty.height=64", "forest.steps=2", "city.steps=2"]


def _tiny_flux_split(request: pytest.FixtureRequest) -> list[str]:
    f = request.getfixturevalue("tiny_families")
    return [f"model.checkpoint={f['comfy_flux_dev_denoiser']}", f"model.config={f['comfy_flux_dev_config']}",
            f"model.text_encoder={f['comfy_clip_l']}", f"model.text_encoder_2={f['comfy_t5']}",
            f"model.vae={f['comfy_flux_dev_vae']}", "gen.width=64", "gen.height=64", "gen.steps=2",
            "wider.right=32", "wider.feather=8", "wider.steps=2"]


WORKFLOW_SETS["flux_comfy_layout_outpaint.json"] = _tiny_flux_split


WORKFLOW_SETS["guided_canny_regions.json"] = lambda request: [
    _tiny_sd(request), f"net.controlnet={request.getfixturevalue('tiny_sd_controlnet')}", "gen.width=64",
    "gen.height=64", "gen.steps=2", "sky.width=64", "sky.height=16"]
