"""Load Image Sequence and Save Image Sequence: numbered stills as a clip and back."""

from __future__ import annotations

import enum
import glob
import os
import pathlib
import re
from typing import Annotated, Any

import numpy as np

from nodes.image.io import output_place
from nodes.registry import node
from nodes.types import Context, FileFilter, Range, Video

SEQUENCE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".exr")


def natural_key(name: str) -> list[Any]:
    """Sort key where digit runs compare as numbers: frame2 before frame10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def sequence_files(source: pathlib.Path | str) -> list[pathlib.Path]:
    """The image files of a folder, or matching a glob, in natural order."""
    text = str(source)
    if any(ch in text for ch in "*?["):
        files = [pathlib.Path(p) for p in glob.glob(text)]
    else:
        p = pathlib.Path(text)
        if not p.exists():
            raise FileNotFoundError(f"Load Image Sequence: no such folder: {p}")
        files = list(p.iterdir()) if p.is_dir() else [p]
    files = [f for f in files if f.is_file() and f.suffix.lower() in SEQUENCE_SUFFIXES]
    return sorted(files, key=lambda f: natural_key(f.name))


def missing_numbers(files: list[pathlib.Path]) -> list[int]:
    """Frame numbers missing between the first and the last (the last digit run of each name)."""
    nums = []
    for f in files:
        m = re.findall(r"\d+", f.stem)
        if m:
            nums.append(int(m[-1]))
    if len(nums) < 2:
        return []
    have = set(nums)
    return [n for n in range(min(nums), max(nums) + 1) if n not in have]


EXR_MAGIC = b"\x76\x2f\x31\x01"  # the bytes 76 2f 31 01 (20000630 little-endian) open every OpenEXR file


def exr_available() -> bool:
    """Whether EXR can be written and read: PyAV's FFmpeg has an `exr` encoder and decoder."""
    try:
        import av

        return {"exr"} <= set(av.codecs_available) and bool(av.codec.Codec("exr", "w")) \
            and bool(av.codec.Codec("exr", "r"))
    except Exception:  # noqa: BLE001 - no PyAV, or a build without EXR
        return False


def encode_exr(a: np.ndarray) -> bytes:
    """One float frame (H, W, 1|2|3|4) as the bytes of an OpenEXR file (32-bit float, ZIP).

    Values are kept as they are (above 1.0 and below 0.0 too); NaN and infinities become finite.
    Grey is written as one Y channel, grey + alpha as RGBA.
    """
    import av

    a = np.nan_to_num(np.asarray(a, np.float32), posinf=np.finfo(np.float32).max,
                      neginf=-np.finfo(np.float32).max)
    c = a.shape[-1]
    if c == 2:
        a = np.concatenate([np.repeat(a[..., :1], 3, -1), a[..., 1:]], -1)
    elif c > 4:
        a = a[..., :4]
    fmt = {1: "grayf32le", 3: "gbrpf32le"}.get(a.shape[-1], "gbrapf32le")
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(a[..., 0] if fmt == "grayf32le" else a), format=fmt)
    cc = av.codec.CodecContext.create("exr", "w")
    cc.width, cc.height, cc.pix_fmt = a.shape[1], a.shape[0], fmt
    cc.time_base = 1
    cc.options = {"compression": "zip16", "format": "float"}
    data = b"".join(bytes(pkt) for pkt in [*cc.encode(frame), *cc.encode(None)])
    if not data.startswith(EXR_MAGIC):
        raise ValueError("Save Image Sequence: FFmpeg's EXR encoder wrote no OpenEXR file")
    return _with_pixel_aspect(data, a.shape[0])


#: Scan lines per chunk by EXR compression (none, rle, zips, zip, piz, pxr24, b44, b44a, dwaa, dwab).
_LINES_PER_CHUNK = (1, 1, 1, 16, 32, 16, 32, 32, 32, 256)


def _with_pixel_aspect(data: bytes, height: int) -> bytes:
    """Add the `pixelAspectRatio` attribute (1.0) that FFmpeg's encoder leaves out of the header.

    The OpenEXR spec makes it required; the library adds a default unless reading strictly. The
    header is attributes (name, type, size, value) up to a NUL, then the chunk offset table of
    absolute file offsets, which move by the inserted bytes.
    """
    import struct

    at, compression = 8, None
    while data[at] != 0:
        name_end = data.index(b"\0", at)
        type_end = data.index(b"\0", name_end + 1)
        (size,) = struct.unpack_from("<i", data, type_end + 1)
        name = data[at:name_end]
        if name == b"pixelAspectRatio":
            return data
        if name == b"compression":
            compression = data[type_end + 5]
        at = type_end + 5 + size
    if compression is None or compression >= len(_LINES_PER_CHUNK):
        return data
    attr = b"pixelAspectRatio\0float\0" + struct.pack("<if", 4, 1.0)
    chunks = -(-height // _LINES_PER_CHUNK[compression])
    table = struct.unpack_from(f"<{chunks}Q", data, at + 1)
    moved = struct.pack(f"<{chunks}Q", *(o + len(attr) for o in table))
    return data[:at] + attr + b"\0" + moved + data[at + 1 + 8 * chunks:]


def read_exr(path: pathlib.Path) -> np.ndarray:
    """An OpenEXR file through PyAV as float32 (H, W, 1|3|4), values as stored (not clipped)."""
    import av

    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read EXR ({exc.strerror or exc})") from None
    if not data.startswith(EXR_MAGIC):
        raise ValueError(f"{path}: not an OpenEXR file")
    try:  # one packet straight into the decoder: no demuxer, so no image2 pattern in the name
        cc = av.codec.CodecContext.create("exr", "r")
        frames = [*cc.decode(av.Packet(data)), *cc.decode(None)]
        if not frames:
            raise ValueError("no picture decoded")
        frame = frames[0]
        comps = frame.format.components
        alpha = any(getattr(k, "is_alpha", False) for k in comps)
        if len(comps) - alpha == 1 and not alpha:
            a = frame.to_ndarray() if frame.format.name == "grayf32le" else \
                frame.reformat(format="grayf32le").to_ndarray()
            a = a[..., None]
        else:
            want = "gbrapf32le" if alpha else "gbrpf32le"
            a = frame.to_ndarray() if frame.format.name == want else frame.reformat(format=want).to_ndarray()
    except (ValueError, av.error.FFmpegError) as exc:
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ValueError(f"{path}: cannot read EXR ({detail})") from None
    return np.ascontiguousarray(a, np.float32)


def _read(path: pathlib.Path) -> np.ndarray:
    if path.suffix.lower() == ".exr":
        return read_exr(path)
    from nodes.image.io import read_image

    return read_image(path)


@node("imagebash.video.load_sequence", title="Load Image Sequence", category="video", io=True)
def load_sequence(source: Annotated[pathlib.Path, FileFilter(folder=True)],
                  fps: Annotated[float, Range(0.1, 1000, step=1)] = 24.0, ctx: Context = None) -> Video:
    """Numbered stills (a folder, or a glob like shots/frame_*.png) as a lazy clip, in natural order.

    Frame 2 comes before frame 10; gaps in the numbering are reported as a warning. Frames are
    read only when pulled; a frame of another size than the first is resized to it.

    Args:
        source: A folder of images, or a glob pattern.
        fps: Frames per second of the clip.
    """
    files = sequence_files(source)
    if not files:
        raise ValueError(f"Load Image Sequence: no image files in {source}")
    gaps = missing_numbers(files)
    if gaps and ctx is not None:
        shown = ", ".join(map(str, gaps[:20])) + (f" and {len(gaps) - 20} more" if len(gaps) > 20 else "")
        ctx.log(f"Load Image Sequence: {len(gaps)} frame(s) missing from the numbering: {shown}", "warning")
    first = _read(files[0])
    h, w, c = first.shape

    def get(i: int) -> np.ndarray:
        from nodes.image.util import match_channels, resize

        a = first if i == 0 else _read(files[i])
        if a.shape[:2] != (h, w):
            a = resize(a, w, h)
        if a.shape[-1] != c:
            a = match_channels(a, c)
        return a[None].astype(np.float32, copy=False)

    return Video(len(files), fps, (w, h), get, channels=c)


class SequenceFormat(str, enum.Enum):
    PNG = "png"
    PNG16 = "png16"
    EXR = "exr"
    JPEG = "jpeg"
    WEBP = "webp"


_EXT = {SequenceFormat.PNG: "png", SequenceFormat.PNG16: "png", SequenceFormat.EXR: "exr",
        SequenceFormat.JPEG: "jpg", SequenceFormat.WEBP: "webp"}


def _new_folder(out_dir: pathlib.Path, prefix: str) -> tuple[pathlib.Path, str]:
    try:
        parent, stem = output_place(out_dir, prefix)
    except ValueError as exc:
        raise ValueError(f"Save Image Sequence: {exc}") from None
    n = 1
    while True:
        folder = parent / f"{stem}_{n:05d}"
        try:
            folder.mkdir()
            return folder, stem
        except FileExistsError:
            n += 1


def _encode_still(a: np.ndarray, path: pathlib.Path, fmt: SequenceFormat, quality: int) -> bytes:
    if fmt is SequenceFormat.EXR:
        return encode_exr(a)
    import cv2

    a = np.nan_to_num(a)
    c = a.shape[-1]
    bgr = a[..., 2::-1] if c >= 3 else a
    if c == 4:
        bgr = np.concatenate([bgr, a[..., 3:]], -1)
    if fmt is SequenceFormat.PNG16:
        data, params = (np.clip(bgr, 0, 1) * 65535 + 0.5).astype(np.uint16), []
    else:
        data = (np.clip(bgr, 0, 1) * 255 + 0.5).astype(np.uint8)
        if fmt is SequenceFormat.JPEG:
            data = data[..., :3] if c >= 3 else data
            params = [cv2.IMWRITE_JPEG_QUALITY, quality]
        elif fmt is SequenceFormat.WEBP:
            params = [cv2.IMWRITE_WEBP_QUALITY, 101 if quality >= 100 else max(1, quality)]
        else:
            params = []
    ok, buf = cv2.imencode("." + path.suffix.lstrip("."), data, params)
    if not ok:
        raise ValueError(f"Save Image Sequence: cannot encode {path.name}")
    return buf.tobytes()


def _write(a: np.ndarray, path: pathlib.Path, fmt: SequenceFormat, quality: int) -> None:
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)  # never overwrite
    os.close(fd)
    try:
        path.write_bytes(_encode_still(a, path, fmt, quality))
    except BaseException:
        path.unlink(missing_ok=True)
        raise


@node("imagebash.video.save_sequence", title="Save Image Sequence", category="video", output=True,
      cacheable=False)
def save_sequence(video: Video, filename_prefix: str = "imagebash_frames",
                  format: SequenceFormat = SequenceFormat.PNG,
                  quality: Annotated[int, Range(1, 100)] = 95, ctx: Context = None) -> str:
    """Write every frame as a numbered still (prefix_00001.png ...) into a new subfolder of the output folder.

    Frames are pulled one at a time; nothing is overwritten. Returns the folder.

    Args:
        video: The frames (a video, or an image batch).
        filename_prefix: Name of the new folder and of each frame file.
        format: png (8-bit), png16 (16-bit), exr (float), jpeg or webp.
        quality: JPEG / WebP quality.
    """
    from nodes.image.util import check_image

    if not isinstance(video, Video):
        video = Video.from_batch(check_image(video, "video"))
    if len(video) == 0:
        raise ValueError("Save Image Sequence: the video has no frames")
    fmt = SequenceFormat(format)
    if fmt is SequenceFormat.EXR and not exr_available():
        raise ValueError("Save Image Sequence: this PyAV/FFmpeg build cannot write EXR (no exr encoder)")
    out_dir = pathlib.Path(getattr(ctx, "output_dir", None) or "output")
    folder, stem = _new_folder(out_dir, filename_prefix)
    n = len(video)
    for i in range(n):
        if ctx is not None:
            ctx.check_cancelled()
        path = folder / f"{stem}_{i + 1:05d}.{_EXT[fmt]}"
        _write(video.frame(i)[0], path, fmt, quality)
        if ctx is not None:
            ctx.add_file(path, "image", frame=i)
            ctx.progress((i + 1) / n, text=f"frame {i + 1}/{n}")
    if ctx is not None:
        ctx.log(f"saved {n} frames to {folder}")
    return str(folder)
