"""Prediction outputs brought home: streamed to disk with a size limit, checked, decoded.

Outputs are plain `http:` strings or `FileOutput` objects (https and data URIs) depending on
how they reached us; both carry a URL. Bytes stream into `cache_dir()/replicate/outputs`, named
by their hash (the same output downloaded twice is stored once), and a file is only decoded
after its first bytes say it is an image or a video. The API token goes only to the API's own
host, never to the CDN an output lives on.
"""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nodes.replicate.client import Limits, ReplicateNodeError
from nodes.types import Cancelled, Video

IMAGE_EXT = {"png": ".png", "jpeg": ".jpg", "gif": ".gif", "webp": ".webp", "bmp": ".bmp", "tiff": ".tif"}
VIDEO_EXT = {"mp4": ".mp4", "webm": ".webm", "avi": ".avi"}


def sniff(head: bytes) -> tuple[str, str] | None:
    """('image'|'video', format) from a file's first bytes, or None for anything else."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image", "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image", "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image", "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image", "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "video", "avi"
    if head[:2] == b"BM":
        return "image", "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "image", "tiff"
    if head[4:8] == b"ftyp":
        return "video", "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "video", "webm"
    return None


def output_dir() -> Path:
    from app.paths import cache_dir

    d = cache_dir() / "replicate" / "outputs"
    d.mkdir(parents=True, exist_ok=True)
    return d


def url_of(item: Any) -> str | None:
    """The URL of an output item (a str or a FileOutput), or None when it is plain text."""
    url = getattr(item, "url", item)
    if isinstance(url, str) and (url.startswith(("http://", "https://")) or url.startswith("data:")):
        return url
    return None


def fetch(url: str, client: Any, *, model: str, limits: Limits, api_base: str,
          cancel: threading.Event | None = None) -> tuple[Path, str, str]:
    """Download `url` into the outputs folder; returns (path, 'image'|'video', format)."""
    tmp = output_dir() / f".part-{os.getpid()}-{threading.get_ident()}"
    digest = hashlib.blake2b(digest_size=16)
    size = 0
    head = b""
    try:
        with open(tmp, "wb") as f:
            for chunk in _chunks(url, client, model=model, limits=limits, api_base=api_base):
                if cancel is not None and cancel.is_set():
                    raise Cancelled("cancelled")
                size += len(chunk)
                if size > limits.max_download_bytes:
                    raise _too_big(model, limits)
                if len(head) < 16:
                    head += chunk[:16]
                digest.update(chunk)
                f.write(chunk)
        what = sniff(head)
        if what is None:
            shown = _short(url)
            raise ReplicateNodeError(f"Replicate {model}: the output {shown} is not an image or a video")
        ext = (IMAGE_EXT if what[0] == "image" else VIDEO_EXT)[what[1]]
        final = output_dir() / f"{digest.hexdigest()}{ext}"
        os.replace(tmp, final)
        return final, what[0], what[1]
    finally:
        tmp.unlink(missing_ok=True)


def _too_big(model: str, limits: Limits) -> ReplicateNodeError:
    n = limits.max_download_bytes
    size = f"{n >> 20} MB" if n >= 1 << 20 else f"{n} byte"
    return ReplicateNodeError(f"Replicate {model}: an output is larger than the {size} download limit")


def _short(url: str) -> str:
    return "(inline data)" if url.startswith("data:") else f"'{url[:120]}'"


def _chunks(url: str, client: Any, *, model: str, limits: Limits, api_base: str):
    if url.startswith("data:"):
        _, _, payload = url.partition(",")
        data = base64.b64decode(payload) if ";base64" in url.split(",", 1)[0] else \
            urllib.parse.unquote_to_bytes(payload)
        yield data
        return
    import httpx

    same_host = urllib.parse.urlsplit(url).netloc == urllib.parse.urlsplit(api_base).netloc
    http = client._client if same_host else _plain_http()
    try:
        with http.stream("GET", url, follow_redirects=True) as resp:
            if resp.status_code >= 400:
                raise ReplicateNodeError(f"Replicate {model}: downloading an output failed "
                                         f"({resp.status_code}) from {_short(url)}")
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > limits.max_download_bytes:
                raise _too_big(model, limits)
            yield from resp.iter_bytes(1 << 16)
    except httpx.HTTPError as exc:
        raise ReplicateNodeError(f"Replicate {model}: downloading an output failed "
                                 f"({type(exc).__name__}) from {_short(url)}") from None


_http: Any = None
_http_lock = threading.Lock()


def _plain_http() -> Any:
    """An httpx client without credentials, for output files on other hosts (CDNs)."""
    global _http
    with _http_lock:
        if _http is None:
            import httpx

            _http = httpx.Client(timeout=httpx.Timeout(60.0, connect=10.0))
        return _http


def decode_image(path: Path) -> np.ndarray:
    """All frames of an image file as an Image batch (animated GIF/WebP give several).

    A still goes through Load Image's reader (16-bit files keep their precision, EXIF turns).
    """
    from PIL import Image as PILImage
    from PIL import ImageSequence

    from nodes.image.io import pil_to_float, read_image
    from nodes.image.util import match_channels

    with PILImage.open(path) as im:
        if getattr(im, "n_frames", 1) <= 1:
            frames = None
        else:
            frames = [pil_to_float(frame) for frame in ImageSequence.Iterator(im)]
    if frames is None:
        return read_image(path)[None]
    if len({f.shape[:2] for f in frames}) > 1:
        frames = frames[:1]
    channels = max(f.shape[-1] for f in frames)
    return np.stack([match_channels(f, channels) for f in frames], axis=0)


def open_video(path: Path) -> Video:
    """A lazy Video over a downloaded file (Load Video's reader: frames on demand)."""
    from nodes.video import open_video as open_file

    try:
        return open_file(path)
    except ValueError as exc:
        raise ReplicateNodeError(f"the video {path.name} from Replicate cannot be decoded: "
                                 f"{str(exc).removeprefix(f'{path}: ')}") from None


@dataclass
class Outputs:
    """A prediction's output sorted by what it is."""

    images: list[np.ndarray] = field(default_factory=list)
    videos: list[Video] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)


def flatten(output: Any) -> list[Any]:
    """A list of leaf items from an output that may be a value, a list or a dict of them."""
    if output is None:
        return []
    if isinstance(output, dict):
        return [x for v in output.values() for x in flatten(v)]
    if isinstance(output, (list, tuple)):
        return [x for v in output for x in flatten(v)]
    return [output]


def is_text_output(output_schema: dict | None) -> bool:
    """Whether a model's Output schema declares plain strings (so a URL in them is just text)."""
    out = output_schema or {}
    item = (out.get("items") or {}) if out.get("type") == "array" else out
    return item.get("type") == "string" and item.get("format") != "uri"


def collect(output: Any, client: Any, *, model: str, limits: Limits, api_base: str,
            cancel: threading.Event | None = None, text_only: bool = False) -> Outputs:
    """Download and decode every file in `output`; text pieces are kept as text."""
    result = Outputs()
    for item in flatten(output):
        url = None if text_only else url_of(item)
        if url is None:
            result.texts.append(str(item))
            continue
        result.urls.append(url if not url.startswith("data:") else "(inline data)")
        path, kind, _fmt = fetch(url, client, model=model, limits=limits, api_base=api_base, cancel=cancel)
        if kind == "image":
            result.images.append(decode_image(path))
        else:
            result.videos.append(open_video(path))
    return result


def image_batch(images: list[np.ndarray]) -> np.ndarray | None:
    """One Image batch from several results; later ones are resized to the first one's size."""
    if not images:
        return None
    from nodes.image.util import Interpolation, match_channels, resize

    h, w = images[0].shape[1:3]
    channels = max(im.shape[-1] for im in images)
    out = []
    for im in images:
        if im.shape[1:3] != (h, w):
            im = np.stack([np.clip(resize(f, w, h, Interpolation.LANCZOS), 0.0, 1.0) for f in im])
        out.append(match_channels(im, channels))
    return np.concatenate(out, axis=0).astype(np.float32)
