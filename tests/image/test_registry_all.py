"""Every image and video node declaration is complete: namespaced id, docs, coercible defaults."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nodes.registry import REQUIRED, default_registry

SPECS = [s for s in default_registry().all() if s.id.startswith(("imagebash.image.", "imagebash.video."))]


def test_image_and_video_nodes_are_registered():
    ids = {s.id for s in SPECS}
    for expected in ("load", "load_folder", "save", "blend", "composite", "resize", "crop", "pad", "flip",
                     "rotate", "color_adjust", "color_match", "blur", "sharpen", "invert", "grayscale",
                     "mask_from_image", "grid"):
        assert f"imagebash.image.{expected}" in ids
    for expected in ("load", "save", "from_images", "to_images"):
        assert f"imagebash.video.{expected}" in ids
    assert not default_registry().load_errors or all(not e.startswith(("nodes.image", "nodes.video"))
                                           for e in default_registry().load_errors)


@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_declaration_is_complete(spec):
    assert spec.category.split("/")[0] in ("image", "video")
    assert spec.description and spec.title
    assert spec.outputs or spec.output
    for port in spec.inputs:
        assert port.help, f"{spec.id}: input '{port.name}' has no help text (add it under Args:)"
        if port.default is not REQUIRED and port.default is not None:
            assert port.coerce(port.to_json(port.default)) == port.default
        if port.enum is not None:
            for member in port.enum:
                assert port.coerce(member.value) is member


def test_listing_nodes_does_not_import_opencv_or_torch():
    code = ("import sys, nodes.image, nodes.video; "
            "print(sorted(m for m in ('cv2', 'torch', 'imageio_ffmpeg') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
