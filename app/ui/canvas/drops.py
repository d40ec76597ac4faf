"""Files dropped on a canvas: a workflow (.json, or a PNG / video carrying one) opens; other images and
videos become Load nodes (an animated WebP is a video, a still one an image; a GIF is a video)."""

from __future__ import annotations

import pathlib
from collections.abc import Callable

from app.graph import io
from app.ui.document import WorkflowDocument

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".exr"}
#: A GIF is always a clip: Load Video reads it (through PyAV, a still one as one frame), Load Image does not.
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".gif"}
#: Image formats that may hold an animation Load Video reads (WebP through Pillow): a file with more than
#: one frame is a clip, one with a single frame a still.
ANIMATED_SUFFIXES = {".webp"}
LOAD_IMAGE, LOAD_VIDEO = "imagebash.image.load", "imagebash.video.load"


def is_animated(path: pathlib.Path) -> bool:
    """Whether an image file holds more than one frame (an animated WebP / GIF); False when unreadable."""
    try:
        from PIL import Image as PILImage

        with PILImage.open(path) as im:
            return bool(getattr(im, "is_animated", False)) or getattr(im, "n_frames", 1) > 1
    except Exception:  # noqa: BLE001 - not an image Pillow reads: treat it as a still
        return False


def drop_files(doc: WorkflowDocument, files: list[pathlib.Path], pos: tuple[float, float],
               open_workflow: Callable[[str], None], say: Callable[[str], None]) -> list[str]:
    """Add a Load node per image / video (one undo step, stacked from `pos`); returns their ids.

    `open_workflow(path)` is called for each .json and each PNG / WebP / video that carries a workflow (ours, a
    ComfyUI one or A1111 parameters), `say(text)` for files
    that cannot be used, with the reason.
    """
    loads: list[tuple[str, pathlib.Path]] = []
    for f in files:
        suffix = f.suffix.lower()
        if suffix == ".json" or (suffix in (".png", ".webp", *io.VIDEO_SUFFIXES) and io.carries_workflow(f)):
            open_workflow(str(f))  # the window opens it in a tab and reports a file that is not a workflow
        elif suffix in ANIMATED_SUFFIXES and is_animated(f):
            loads.append((LOAD_VIDEO, f))  # an animated WebP: its frames are a clip
        elif suffix in IMAGE_SUFFIXES:
            loads.append((LOAD_IMAGE, f))
        elif suffix in VIDEO_SUFFIXES:
            loads.append((LOAD_VIDEO, f))
        else:
            say(f"{f.name}: not an image, video or workflow imagebash can open")
    ids: list[str] = []
    if not loads:
        return ids
    doc.undo_stack.beginMacro("Drop files")
    try:
        for i, (type_id, f) in enumerate(loads):
            spec = doc.registry.get(type_id)
            port = next((p for p in spec.inputs if p.kind == "Path"), None) if spec else None
            if port is None:
                say(f"{f.name}: no '{type_id}' node is installed to load it")
                continue
            ids.append(doc.add_node(type_id, (pos[0], pos[1] + 60 * i), {port.name: str(f)}))
    finally:
        doc.undo_stack.endMacro()
    return ids
