"""Load Image, Load Folder and Save Image: files in, files out.

Loading goes through Pillow (PNG, JPEG, WebP, TIFF, BMP), applies the EXIF orientation a camera
wrote and keeps alpha as a fourth channel. Pillow cuts 16-bit RGB/RGBA files to 8 bits, so those
are decoded by OpenCV instead (full precision; the EXIF orientation is still applied). Saving
writes into the run's output directory only: names are sanitised, sub-folders in the prefix stay
inside it, and a counter picks the next free number (files are created exclusively, so two Save
nodes never overwrite each other). PNGs carry the workflow, so dropping one back into imagebash
restores the graph.
"""

from __future__ import annotations

import enum
import json
import os
import pathlib
import re
from typing import Annotated, Any, BinaryIO, NamedTuple

import numpy as np

from nodes.image.util import check_image, each, from_uint8, match_channels, resize, to_uint8
from nodes.registry import node
from nodes.types import Context, FileFilter, Image, Mask, Range

IMAGE_PATTERNS = ("*.png", "*.jpg", "*.jpeg", "*.webp", "*.tif", "*.tiff", "*.bmp")
PROVENANCE_KEY = "imagebash.provenance"


class LoadedImage(NamedTuple):
    image: Image
    mask: Mask


#: The Pillow decoders Load Image uses: the formats it documents (JPEG includes the MPO files of
#: many cameras). Pillow would otherwise identify a file by its content with any of its ~40
#: plugins, EPS among them, which runs Ghostscript on the file.
PIL_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP")


def read_image(path: pathlib.Path) -> np.ndarray:
    """One file as float32 (H, W, 3|4) in [0, 1], EXIF-rotated; raises a one-line error naming it."""
    import struct

    from PIL import Image as PILImage
    from PIL import ImageOps, UnidentifiedImageError

    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; use Load Folder for image sequences")
    if path.suffix.lower() == ".exr":  # Pillow has no EXR; PyAV's FFmpeg decodes it (float, HDR kept)
        from nodes.video.sequence import read_exr

        img = read_exr(path)
        return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img
    try:
        with PILImage.open(path, formats=PIL_FORMATS) as im:
            if _deeper_than_8_bits(im):
                return _oriented(_read_deep(path), im.getexif().get(_ORIENTATION, 1))
            im = ImageOps.exif_transpose(im)
            return pil_to_float(im)
    except UnidentifiedImageError:
        raise ValueError(f"{path}: not a PNG, JPEG, WebP, TIFF or BMP image Pillow can read") from None
    except PILImage.DecompressionBombError as exc:  # declared size > 2x Image.MAX_IMAGE_PIXELS
        raise ValueError(f"{path}: image too large to load ({_first_line(exc)})") from None
    except (OSError, SyntaxError, EOFError, struct.error) as exc:
        # a damaged file: Pillow's decoders raise more than OSError (e.g. struct.error and
        # SyntaxError from a broken TIFF directory or EXIF block)
        raise ValueError(f"{path}: cannot read image: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_ORIENTATION = 0x0112


def _deeper_than_8_bits(im: Any) -> bool:
    """Whether a colour file has more than 8 bits per channel (Pillow would truncate it)."""
    if im.mode not in ("RGB", "RGBA", "LA"):
        return False
    bits = getattr(im, "tag_v2", {}).get(258)  # TIFF BitsPerSample
    if bits:
        return max(bits if isinstance(bits, tuple) else (bits,)) > 8
    raw = im.tile[0].args if im.tile else ""
    raw = raw[0] if isinstance(raw, tuple) and raw else raw
    return isinstance(raw, str) and (";16" in raw or ";32" in raw)


def _read_deep(path: pathlib.Path) -> np.ndarray:
    """A 16-bit (or float) file through OpenCV as float32 RGB(A); OpenCV gives BGR(A)."""
    import cv2

    a = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if a is None:
        raise ValueError(f"{path}: cannot decode image")
    scale = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(a.dtype, 1.0)
    f = np.clip(a.astype(np.float32) / np.float32(scale), 0.0, 1.0)
    if f.ndim == 2:
        f = f[..., None]
    if f.shape[-1] == 1:
        return np.repeat(f, 3, axis=-1)
    if f.shape[-1] == 2:  # grey + alpha
        return np.concatenate([np.repeat(f[..., :1], 3, axis=-1), f[..., 1:]], axis=-1)
    return np.ascontiguousarray(f[..., [2, 1, 0, 3][: f.shape[-1]]])


def _oriented(a: np.ndarray, orientation: int) -> np.ndarray:
    """`a` turned as EXIF orientation 1-8 says (what Pillow's exif_transpose does)."""
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.transpose(1, 0, 2),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: x[::-1, ::-1].transpose(1, 0, 2),
        8: lambda x: np.rot90(x, 1),
    }
    op = ops.get(int(orientation or 1))
    return np.ascontiguousarray(op(a)) if op else a


def pil_to_float(im: Any) -> np.ndarray:
    """A Pillow image (or frame) as float32 (H, W, 3|4) in [0, 1], alpha kept."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        a = np.asarray(im, dtype=np.float32)
        a = a / (65535.0 if a.max(initial=0) > 255 or mode.startswith("I;16") else 255.0)
        return np.repeat(np.clip(a, 0, 1)[..., None], 3, axis=-1).astype(np.float32)
    if mode == "F":
        a = np.clip(np.asarray(im, dtype=np.float32), 0, 1)
        return np.repeat(a[..., None], 3, axis=-1)
    has_alpha = mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info)
    im = im.convert("RGBA" if has_alpha else "RGB")
    return from_uint8(np.asarray(im))


@node("imagebash.image.load", title="Load Image", category="image/io", io=True)
def load_image(path: Annotated[pathlib.Path, FileFilter(IMAGE_PATTERNS)]) -> LoadedImage:
    """Load a PNG, JPEG, WebP or TIFF file; EXIF orientation is applied and alpha is kept.

    Args:
        path: The image file.
    """
    img = read_image(path)
    mask = img[..., 3] if img.shape[-1] == 4 else np.ones(img.shape[:2], np.float32)
    return LoadedImage(img[None], np.ascontiguousarray(mask)[None])


class SizeMismatch(str, enum.Enum):
    """What Load Folder does with an image whose size differs from the first one."""

    RESIZE = "resize"
    ERROR = "error"


def list_images(folder: pathlib.Path, pattern: str = "*") -> list[pathlib.Path]:
    """Image files in `folder` matching `pattern`, in natural order (frame2 before frame10)."""
    folder = pathlib.Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"folder not found: {folder}")
    pattern = pattern or "*"
    if pattern.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", pattern) or ".." in re.split(r"[\\/]", pattern):
        raise ValueError(f"pattern {pattern!r} must name files inside {folder} (no '..', no absolute path)")
    # '.' parts name the folder itself; Python 3.11's glob raises IndexError or AttributeError on
    # patterns made only of them ('.', './'), so they are dropped here
    parts = [part for part in pattern.split("/") if part not in ("", ".")]
    if not parts:
        raise ValueError(f"pattern {pattern!r} names no files (use '*' for every image in the folder)")
    exts = {p[1:] for p in IMAGE_PATTERNS}
    try:  # pathlib refuses some patterns ('a**b') with ValueError
        files = [p for p in folder.glob("/".join(parts)) if p.is_file() and p.suffix.lower() in exts]
    except (ValueError, NotImplementedError) as exc:
        raise ValueError(f"pattern {pattern!r} is not a usable glob: {exc}") from None
    return sorted(files, key=_natural_key)


def _natural_key(p: pathlib.Path) -> list[Any]:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]


@node("imagebash.image.load_folder", title="Load Folder", category="image/io", io=True)
def load_folder(folder: Annotated[pathlib.Path, FileFilter(folder=True)], pattern: str = "*",
                size_mismatch: SizeMismatch = SizeMismatch.RESIZE,
                limit: Annotated[int, Range(0, 100000)] = 0, ctx: Context = None) -> LoadedImage:
    """Load every image in a folder, in natural sort order, as one batch.

    Images of another size than the first are stretched to its size (or the node fails, if
    you choose `error`). If any image has alpha, every image gets an alpha channel.

    Args:
        folder: The folder to read.
        pattern: Glob for file names, e.g. `frame_*.png`.
        size_mismatch: `resize` to the first image's size, or stop with an error.
        limit: Read at most this many images (0 = all).
    """
    files = list_images(folder, pattern)
    if limit:
        files = files[:limit]
    if not files:
        raise FileNotFoundError(f"no images matching {pattern!r} in {folder}")
    first = read_image(files[0])
    h, w = first.shape[:2]

    def load(i: int) -> np.ndarray:
        img = first if i == 0 else read_image(files[i])
        if img.shape[:2] != (h, w):
            if size_mismatch is SizeMismatch.ERROR:
                raise ValueError(f"{files[i].name} is {img.shape[1]}x{img.shape[0]}, "
                                 f"but {files[0].name} is {w}x{h}")
            img = resize(img, w, h)
        return match_channels(img, 4)

    batch = each(len(files), load, ctx, "file")
    if np.all(batch[..., 3] == 1.0):
        batch = np.ascontiguousarray(batch[..., :3])
        return LoadedImage(batch, np.ones(batch.shape[:3], np.float32))
    return LoadedImage(batch, np.ascontiguousarray(batch[..., 3]))


class ImageFormat(str, enum.Enum):
    PNG = "png"
    JPEG = "jpeg"
    WEBP = "webp"


_EXT = {ImageFormat.PNG: "png", ImageFormat.JPEG: "jpg", ImageFormat.WEBP: "webp"}
_UNSAFE = re.compile(r"[^\w\-. ]+")


def safe_prefix(prefix: str) -> pathlib.PurePosixPath:
    """A relative path made of safe parts only: no '..', no absolute root, no odd characters."""
    parts = []
    for part in re.split(r"[\\/]+", str(prefix)):
        part = _UNSAFE.sub("_", part).strip(" .")
        if part:
            parts.append(part)
    return pathlib.PurePosixPath(*parts) if parts else pathlib.PurePosixPath("imagebash")


def output_place(output_dir: pathlib.Path, prefix: str) -> tuple[pathlib.Path, str]:
    """The (made) folder and the name stem a file name prefix points at inside the output folder;
    a prefix that would leave it (`../x`, a link out) is one error line."""
    rel = safe_prefix(prefix)
    root = pathlib.Path(output_dir).resolve()
    folder = (root / rel.parent).resolve()
    if folder != root and root not in folder.parents:
        raise ValueError(f"file name prefix '{prefix}' leaves the output directory")
    folder.mkdir(parents=True, exist_ok=True)
    return folder, rel.name


def reserve_file(output_dir: pathlib.Path, prefix: str, ext: str) -> pathlib.Path:
    """Create and return `<output_dir>/<prefix>_<counter>.<ext>` with the next free counter.

    The counter continues after the highest number already there; the file is created with
    O_EXCL, so a concurrent writer never gets the same name and nothing is overwritten.
    """
    folder, stem = output_place(output_dir, prefix)
    taken = re.compile(re.escape(stem) + r"_(\d+)\.")
    counter = 1 + max((int(m.group(1)) for f in os.listdir(folder) if (m := taken.match(f))), default=0)
    while True:
        path = folder / f"{stem}_{counter:05d}.{ext}"
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            counter += 1
            continue
        os.close(fd)
        return path


def png_info(workflow: dict | None, provenance: dict | None) -> Any:
    """A PngInfo with the workflow (so the PNG reopens as a graph) and the provenance."""
    from PIL.PngImagePlugin import PngInfo

    from app.graph.io import PNG_WORKFLOW_KEY

    info = PngInfo()
    if workflow:
        info.add_text(PNG_WORKFLOW_KEY, json.dumps(workflow, separators=(",", ":")), zip=True)
    if provenance:
        info.add_text(PROVENANCE_KEY, json.dumps(provenance, default=str, separators=(",", ":")), zip=True)
    return info


def write_image(img: np.ndarray, path: pathlib.Path | BinaryIO, fmt: ImageFormat, quality: int = 95,
                workflow: dict | None = None, provenance: dict | None = None) -> None:
    """Write one (H, W, 3|4) float image to a file or a stream; JPEG drops alpha, PNG gets the workflow."""
    from PIL import Image as PILImage

    arr = to_uint8(img)
    if fmt is ImageFormat.JPEG and arr.shape[-1] == 4:
        arr = arr[..., :3]
    im = PILImage.fromarray(arr, "RGBA" if arr.shape[-1] == 4 else "RGB")
    if fmt is ImageFormat.PNG:
        im.save(path, "PNG", pnginfo=png_info(workflow, provenance), compress_level=4)
    elif fmt is ImageFormat.JPEG:
        im.save(path, "JPEG", quality=int(quality), subsampling=0 if quality >= 90 else 2)
    else:
        im.save(path, "WEBP", quality=int(quality), lossless=quality >= 100)


@node("imagebash.image.save", title="Save Image", category="image/io", io=True, output=True,
      cacheable=False)
def save_image(image: Image, filename_prefix: str = "imagebash", format: ImageFormat = ImageFormat.PNG,
               quality: Annotated[int, Range(1, 100)] = 95, embed_workflow: bool = True,
               ctx: Context = None) -> str:
    """Save each image of the batch into the run's output folder as prefix_00001.png, _00002, ...

    Existing files are never overwritten: the counter continues after the highest one there.
    PNGs embed the workflow (drop one back into imagebash to get the graph) and the provenance
    of the models and LoRAs that made it. Each file is reported to the engine as it is written
    (an "image" artefact); the output is the written paths, one per line.

    Args:
        image: The images to save.
        filename_prefix: File name start; may hold sub-folders (`shots/hero`), always kept inside the output folder.
        format: png (lossless, with workflow), jpeg or webp.
        quality: JPEG/WebP quality; 100 makes WebP lossless.
        embed_workflow: Store the workflow and provenance in PNG files.
    """
    images = check_image(image, "image")
    out_dir = pathlib.Path(getattr(ctx, "output_dir", None) or "output")
    workflow = ctx.workflow if (ctx is not None and embed_workflow) else None
    provenance = ctx.provenance if (ctx is not None and embed_workflow) else None
    paths: list[str] = []

    def save(i: int) -> np.ndarray:
        path = reserve_file(out_dir, filename_prefix, _EXT[format])
        try:
            write_image(images[i], path, format, quality, workflow, provenance)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        paths.append(str(path))
        if ctx is not None:
            ctx.add_file(path, "image")
        return images[i, :1, :1]

    each(len(images), save, ctx, "saved")
    if ctx is not None:
        ctx.log("saved " + (paths[0] if len(paths) == 1 else f"{len(paths)} files to {pathlib.Path(paths[0]).parent}"))
    return "\n".join(paths)
