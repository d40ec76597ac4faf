"""Fuzzing the image and video loaders: Load Image and Load Folder (nodes/image/io.py) and Load
Video (nodes/video/), on random bytes under image/video names, real files cut short or with
flipped bytes, empty files, and headers declaring huge sizes.

Properties: a loader gives well-formed output (float32 in [0, 1], the documented shapes, frames
that can be pulled) or raises ValueError / an OSError subclass (FileNotFoundError,
IsADirectoryError) with one line naming the file, the engine's node failure; never another
exception type, never a hang (pytest-timeout), never a decoder outside the documented formats.
"""

from __future__ import annotations

import io as pyio
import pathlib
import struct
import tempfile
import zlib

import numpy as np
import pytest
from hypothesis import event, example, given
from hypothesis import strategies as st
from PIL import Image as PILImage

from nodes.image.io import SizeMismatch, load_folder, load_image
from nodes.video import load_video
from tests.fuzz import assert_one_line, examples

pytestmark = [
    pytest.mark.timeout(120),
    # damaged files are the point here: Pillow's notes about them (corrupt EXIF, a header over
    # its pixel-count warning limit) are expected, not news
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning:PIL"),
]

ROOT = pathlib.Path(__file__).resolve().parents[2]
CLIP = (ROOT / "resources" / "samples" / "clip.mp4").read_bytes()


def _encode(fmt: str, mode: str = "RGB", size: tuple[int, int] = (12, 9), **kw) -> bytes:
    rng = np.random.default_rng(len(fmt) + len(mode))
    channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}.get(mode, 3)
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    im = PILImage.fromarray(arr[..., 0] if channels == 1 else arr, mode)
    buf = pyio.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _exif_jpeg() -> bytes:
    exif = PILImage.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    return _encode("JPEG", exif=exif.tobytes())


def _deep_png() -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.arange(12 * 9 * 3, dtype=np.uint16).reshape(9, 12, 3) * 97)
    assert ok
    return buf.tobytes()


def _with_size(png: bytes, width: int, height: int, bit_depth: int = 8) -> bytes:
    """A PNG whose header declares another size (and bit depth) than its pixel data holds."""
    data = bytearray(png)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, 2, 0, 0, 0)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def _eps() -> bytes:
    """An EPS file: Pillow identifies it by content and hands it to Ghostscript."""
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n"


REAL_IMAGES = {
    "png": _encode("PNG"), "rgba": _encode("PNG", "RGBA"), "la": _encode("PNG", "LA"), "grey": _encode("PNG", "L"),
    "jpg": _encode("JPEG"), "exif": _exif_jpeg(), "webp": _encode("WEBP"), "tif": _encode("TIFF"),
    "tif_lzw": _encode("TIFF", compression="tiff_lzw"), "bmp": _encode("BMP"), "deep": _deep_png(),
}
HUGE = _with_size(REAL_IMAGES["png"], 100_000, 100_000)  # 10 G pixels: Pillow's DecompressionBombError
IMAGE_SUFFIXES = st.sampled_from([".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".PNG"])


@st.composite
def damaged(draw: st.DrawFn, originals: dict[str, bytes]) -> bytes:
    """A real file cut short, with a few bytes flipped, or both."""
    data = bytearray(originals[draw(st.sampled_from(sorted(originals)))])
    for _ in range(draw(st.integers(0, 6))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


IMAGE_BYTES = st.one_of(
    damaged(REAL_IMAGES), st.sampled_from(sorted(REAL_IMAGES.values())), st.binary(max_size=80),
    st.builds(_with_size, st.sampled_from([REAL_IMAGES["png"]]), st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1),
              st.sampled_from([1, 8, 16])))


def _check_image(img: np.ndarray, mask: np.ndarray) -> None:
    assert img.dtype == np.float32 and img.ndim == 4 and img.shape[0] == 1 and img.shape[-1] in (3, 4)
    assert mask.shape == img.shape[:3] and mask.dtype == np.float32
    assert np.isfinite(img).all() and img.min() >= 0.0 and img.max() <= 1.0


def _refused(exc: BaseException, path: pathlib.Path) -> None:
    event(f"refused: {type(exc).__name__}: {str(exc).replace(str(path), '<file>')[:40]}")
    assert isinstance(exc, (ValueError, OSError)), f"{type(exc).__name__}: {exc}"
    assert_one_line(exc, str(path))


@examples(150)
@given(data=IMAGE_BYTES, suffix=IMAGE_SUFFIXES)
@example(data=HUGE, suffix=".png")  # DecompressionBombError escaped as its own exception type
@example(data=_with_size(REAL_IMAGES["png"], 0, 0), suffix=".png")
@example(data=b"", suffix=".png")  # zero-size
@example(data=_eps(), suffix=".png")  # was opened with the EPS plugin (Ghostscript), not refused
@example(data=_encode("GIF"), suffix=".png")
@example(data=REAL_IMAGES["deep"][:80], suffix=".png")  # 16-bit: the OpenCV path, cut short
@example(data=_with_size(REAL_IMAGES["deep"], 30_000, 30_000, 16), suffix=".png")
def test_load_image_gives_an_image_or_one_line(data, suffix, tmp_path):
    path = pathlib.Path(tempfile.mkdtemp(dir=tmp_path)) / f"in{suffix}"
    path.write_bytes(data)
    try:
        img, mask = load_image(path)
    except Exception as exc:
        _refused(exc, path)
        return
    event("loaded")
    _check_image(img, mask)


@pytest.mark.parametrize("data", [_eps(), _encode("GIF"), _encode("ICO"), _encode("PPM")],
                         ids=["eps", "gif", "ico", "ppm"])
def test_only_the_documented_decoders_read_a_file(data, tmp_path):
    """Whatever the name says, an EPS (Ghostscript would run on it) or another format Load Image
    does not document is refused, not decoded by whichever Pillow plugin recognises it."""
    path = tmp_path / "in.png"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="not a PNG, JPEG, WebP, TIFF or BMP image") as info:
        load_image(path)
    assert_one_line(info.value, str(path))


def test_missing_and_folder_paths_are_one_line(tmp_path):
    for path in (tmp_path / "missing.png", tmp_path):
        with pytest.raises((FileNotFoundError, IsADirectoryError)) as info:
            load_image(path)
        assert_one_line(info.value, str(path))


FOLDER_PATTERNS = st.one_of(
    st.sampled_from(["*", "", "*.png", "in_*", "**", "**/*", "*/", "[", "[!a]*", "../*", "/*", "/tmp/*", "a**b",
                     "\x00", "~/*", ".", "..", "*" * 50]),
    st.text(max_size=6))


@examples(60)
@given(files=st.lists(st.tuples(IMAGE_BYTES, IMAGE_SUFFIXES), max_size=4), pattern=FOLDER_PATTERNS,
       limit=st.integers(0, 3), size_mismatch=st.sampled_from(list(SizeMismatch)))
@example(files=[(REAL_IMAGES["png"], ".png")], pattern="/*", limit=0,
         size_mismatch=SizeMismatch.RESIZE)  # NotImplementedError: non-relative patterns
@example(files=[(REAL_IMAGES["png"], ".png")], pattern="a**b", limit=0, size_mismatch=SizeMismatch.RESIZE)
@example(files=[(REAL_IMAGES["png"], ".png")], pattern="\x00", limit=0, size_mismatch=SizeMismatch.RESIZE)
@example(files=[(REAL_IMAGES["png"], ".png"), (REAL_IMAGES["jpg"], ".jpg")], pattern="*", limit=0,
         size_mismatch=SizeMismatch.ERROR)
@example(files=[(REAL_IMAGES["png"], ".png"), (HUGE, ".png")], pattern="*", limit=0,
         size_mismatch=SizeMismatch.RESIZE)
def test_load_folder_gives_a_batch_or_one_line(files, pattern, limit, size_mismatch, tmp_path):
    folder = pathlib.Path(tempfile.mkdtemp(dir=tmp_path))
    (folder / "sub").mkdir()
    for i, (data, suffix) in enumerate(files):
        (folder / ("sub" if i == 3 else ".") / f"in_{i}{suffix}").write_bytes(data)
    try:
        batch, mask = load_folder(folder, pattern=pattern, size_mismatch=size_mismatch, limit=limit)
    except Exception as exc:
        assert isinstance(exc, (ValueError, OSError)), f"{type(exc).__name__}: {exc}"
        assert_one_line(exc)
        return
    assert batch.dtype == np.float32 and batch.ndim == 4 and batch.shape[-1] in (3, 4)
    assert mask.shape == batch.shape[:3] and 1 <= len(batch) <= len(files)
    assert np.isfinite(batch).all() and batch.min() >= 0.0 and batch.max() <= 1.0


# ---------------------------------------------------------------------------------------- video
def _clip_header_size(width: int, height: int) -> bytes:
    """The sample clip with the mp4 track header (tkhd) declaring another picture size."""
    data = bytearray(CLIP)
    at = data.find(b"tkhd")
    assert at > 0
    end = at + 4 + 80  # version/flags (4) ... width and height are the last 8 bytes (16.16 fixed point)
    data[end - 8:end] = struct.pack(">II", width << 16 & 0xFFFFFFFF, height << 16 & 0xFFFFFFFF)
    return bytes(data)


#: The clip damaged, whole, with a fuzzed declared size; noise; still images under video names.
VIDEO_BYTES = st.one_of(damaged({"clip": CLIP}), st.just(CLIP), st.binary(max_size=80),
                        st.builds(_clip_header_size, st.integers(0, 65535), st.integers(0, 65535)),
                        st.sampled_from(sorted(REAL_IMAGES.values())))


@examples(60)
@given(data=VIDEO_BYTES, suffix=st.sampled_from([".mp4", ".avi", ".webm", ".mov", ".gif", ".mkv"]),
       start=st.integers(0, 30), max_frames=st.integers(0, 30), stride=st.integers(1, 7))
@example(data=b"", suffix=".mp4", start=0, max_frames=0, stride=1)
@example(data=CLIP[:len(CLIP) - 100], suffix=".mp4", start=0, max_frames=0, stride=1)  # frames that never decode
@example(data=CLIP, suffix=".avi", start=23, max_frames=0, stride=1)
@example(data=CLIP, suffix=".mp4", start=24, max_frames=0, stride=1)  # past the end
def test_load_video_gives_pullable_frames_or_one_line(data, suffix, start, max_frames, stride, tmp_path):
    path = pathlib.Path(tempfile.mkdtemp(dir=tmp_path)) / f"in{suffix}"
    path.write_bytes(data)
    try:
        video, fps, *_ = load_video(path, start=start, max_frames=max_frames, stride=stride)
    except Exception as exc:
        _refused(exc, path)
        return
    event("opened")
    assert len(video) >= 1 and fps > 0 and np.isfinite(fps)
    assert not max_frames or len(video) <= max_frames
    w, h = video.size
    assert w > 0 and h > 0
    for i in dict.fromkeys((0, len(video) // 2, len(video) - 1)):
        try:
            frame = video.frame(i)
        except Exception as exc:  # a damaged clip: the frame cannot be decoded
            _refused(exc, path)
            continue
        assert frame.dtype == np.float32 and frame.ndim == 4 and frame.shape[0] == 1 and frame.shape[-1] in (3, 4)
        assert np.isfinite(frame).all()


@examples(30)
@given(width=st.integers(1, 12), height=st.integers(1, 12), frames=st.integers(1, 3),
       codec=st.sampled_from(["mp4v", "mjpg", "vp8", "h264"]))
@example(width=4, height=4, frames=1, codec="mjpg")  # OpenCV's MJPG encoder: heap corruption, abort
@example(width=2, height=8, frames=2, codec="mjpg")
@example(width=1, height=1, frames=1, codec="mp4v")  # OpenCV refuses 1-pixel frames
def test_save_video_writes_any_small_clip(width, height, frames, codec, tmp_path):
    """Tiny frames (a fuzzed run's 1..12 px images) encode with every codec; the CLI fuzz found
    MJPG aborting the whole process on frames narrower than 8 pixels."""
    from nodes.video import VideoCodec, save_video
    from tests.image.helpers import FakeContext

    out = pathlib.Path(tempfile.mkdtemp(dir=tmp_path))
    batch = np.random.default_rng(width * 100 + height).random((frames, height, width, 3), dtype=np.float32)
    path = pathlib.Path(save_video(batch, codec=VideoCodec(codec), ctx=FakeContext(out)))
    assert path.parent == out and path.stat().st_size > 0
    video = load_video(path).video
    assert len(video) >= 1
