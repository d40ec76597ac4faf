"""The training set: a folder of images with sidecar captions, kohya repeat folders, buckets.

Scanning never fails on one bad file: unreadable and tiny images are skipped and listed, images
without a caption are listed in a warning, and only an empty result is an error. Captions come
from `name.txt` or `name.caption` (kohya's default extension, which users otherwise lose), and the
trigger word is put in front of every caption. A folder named `10_mystyle` repeats its images
ten times per epoch, as in kohya_ss.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
from collections import Counter
from dataclasses import dataclass, field

from app.training.buckets import Fit, fit, make_buckets, pick_bucket
from app.training.config import TrainConfig

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
_REPEAT_RE = re.compile(r"^(\d+)_(.*)$")


class DatasetError(ValueError):
    """The folder cannot be trained on (missing, or no usable image); one line naming the folder."""


@dataclass
class Item:
    """One training image: where it is, its caption, how often an epoch shows it, and its bucket."""

    path: pathlib.Path
    caption: str
    repeats: int
    size: tuple[int, int]  # original (w, h) after EXIF rotation
    fit: Fit
    folder: str  # its repeat folder (else its parent folder): kohya's dataset dir, for metadata
    has_caption: bool = True

    @property
    def bucket(self) -> tuple[int, int]:
        return self.fit.bucket

    def content_hash(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


@dataclass
class Dataset:
    """The usable items plus everything a user should hear about (skips, missing captions)."""

    root: pathlib.Path
    items: list[Item]
    skipped: list[tuple[pathlib.Path, str]] = field(default_factory=list)
    uncaptioned: list[pathlib.Path] = field(default_factory=list)
    resolution: int = 512

    def __len__(self) -> int:
        return len(self.items)

    @property
    def num_images_with_repeats(self) -> int:
        return sum(i.repeats for i in self.items)

    def buckets(self) -> Counter:
        """Bucket size -> number of images in it (counting repeats)."""
        return Counter(_bucket_counts(self.items))

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """kohya's ss_tag_frequency: concept folder -> comma-separated tag -> count."""
        out: dict[str, Counter] = {}
        for it in self.items:
            c = out.setdefault(it.folder, Counter())
            for tag in it.caption.split(","):
                tag = tag.strip()
                if tag:
                    c[tag] += 1
        return {k: dict(v) for k, v in out.items()}

    def warnings(self) -> list[str]:
        """One line per problem a user should fix, plus the caption count."""
        lines = []
        n = len(self.items)
        lines.append(f"{n - len(self.uncaptioned)} of {n} images have a caption")
        if self.uncaptioned:
            names = ", ".join(_rel(p, self.root) for p in self.uncaptioned[:8])
            more = f" and {len(self.uncaptioned) - 8} more" if len(self.uncaptioned) > 8 else ""
            lines.append(f"warning: {len(self.uncaptioned)} images have no caption and train on the trigger "
                         f"word or default caption only: {names}{more}")
        small = [it for it in self.items if it.fit.resized[0] > it.size[0] * 1.05]
        if small:
            lines.append(f"warning: {len(small)} images are smaller than their bucket and will be upscaled "
                         f"(e.g. {_rel(small[0].path, self.root)}, {small[0].size[0]}x{small[0].size[1]} "
                         f"for {small[0].bucket[0]}x{small[0].bucket[1]}); they may look soft")
        for p, why in self.skipped:
            lines.append(f"warning: skipped {_rel(p, self.root)}: {why}")
        return lines

    def summary(self) -> str:
        b = ", ".join(f"{w}x{h}: {c}" for (w, h), c in sorted(self.buckets().items()))
        return (f"{len(self.items)} images ({self.num_images_with_repeats} with repeats) from {self.root}; "
                f"buckets {b}")


def _bucket_counts(items: list[Item]) -> dict[tuple[int, int], int]:
    out: dict[tuple[int, int], int] = {}
    for it in items:
        out[it.bucket] = out.get(it.bucket, 0) + it.repeats
    return out


def _rel(p: pathlib.Path, root: pathlib.Path) -> str:
    try:
        return str(p.relative_to(root))
    except ValueError:
        return str(p)


def read_caption(image: pathlib.Path, extensions: tuple[str, ...]) -> str | None:
    """The sidecar caption of `image` (first extension that exists), stripped; None if there is none."""
    for ext in extensions:
        c = image.with_suffix(ext)
        if c.is_file():
            text = c.read_text(encoding="utf-8", errors="replace")
            return " ".join(text.split())
    return None


def with_trigger(caption: str, trigger: str) -> str:
    """Put the trigger word in front of a caption once (kohya's keep-first-token convention)."""
    trigger = trigger.strip()
    if not trigger:
        return caption
    if not caption:
        return trigger
    first = caption.split(",")[0].strip()
    return caption if first == trigger else f"{trigger}, {caption}"


def repeats_for(path: pathlib.Path, root: pathlib.Path) -> tuple[int, str, str]:
    """(repeats, concept, folder name) from the nearest `N_name` folder between `path` and `root`
    (inclusive); (1, "", parent folder name) when there is none."""
    folder = path.parent
    while True:
        m = _REPEAT_RE.match(folder.name)
        if m:
            return max(1, int(m.group(1))), m.group(2).replace("_", " ").strip(), folder.name
        if folder == root or folder == folder.parent:
            return 1, "", path.parent.name
        folder = folder.parent


def image_size(path: pathlib.Path) -> tuple[int, int]:
    """(w, h) as the image will be seen (EXIF rotation applied); raises OSError if unreadable."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()  # decode fully: a truncated file fails here, during the scan, not mid-training
        orientation = im.getexif().get(0x0112, 1)
        w, h = im.size
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def scan(folder: str | pathlib.Path, cfg: TrainConfig) -> Dataset:
    """Scan `folder` (recursively) into a Dataset; raises DatasetError when nothing is usable."""
    root = pathlib.Path(folder).expanduser()
    if not root.exists():
        raise DatasetError(f"training folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"training data must be a folder of images, not a file: {root}")
    buckets = make_buckets(cfg.resolution)
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    items: list[Item] = []
    skipped: list[tuple[pathlib.Path, str]] = []
    uncaptioned: list[pathlib.Path] = []
    for p in files:
        try:
            w, h = image_size(p)
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds; each is a skip, not a crash
            skipped.append((p, f"unreadable image ({type(exc).__name__}: {exc})".splitlines()[0]))
            continue
        if min(w, h) < cfg.min_image_size:
            skipped.append((p, f"too small ({w}x{h}; the shorter side must be at least {cfg.min_image_size} px)"))
            continue
        repeats, concept, folder_name = repeats_for(p, root)
        caption = read_caption(p, cfg.caption_extensions)
        has = bool(caption)
        if not has:
            uncaptioned.append(p)
            caption = cfg.default_caption or concept
        caption = with_trigger(caption or "", cfg.trigger)
        items.append(Item(p, caption, repeats, (w, h), fit(w, h, pick_bucket(w, h, buckets)),
                          folder_name, has))
    if not items:
        if files:
            raise DatasetError(f"no usable image in {root}: all {len(files)} were skipped "
                               f"({skipped[0][0].name}: {skipped[0][1]})")
        raise DatasetError(f"no images in {root} (looked for {', '.join(IMAGE_EXTENSIONS)}, in subfolders too)")
    return Dataset(root, items, skipped, uncaptioned, cfg.resolution)


def load_pixels(item: Item):
    """The item's image as a float tensor (3, h, w) in [-1, 1], scaled and cropped into its bucket."""
    import numpy as np
    import torch
    from PIL import Image, ImageOps

    with Image.open(item.path) as im:
        im = ImageOps.exif_transpose(im)
        if im.mode in ("RGBA", "LA", "P"):
            im = im.convert("RGBA")
            bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
            im = Image.alpha_composite(bg, im)
        im = im.convert("RGB")
        f = item.fit
        if im.size != f.resized:
            im = im.resize(f.resized, Image.Resampling.LANCZOS)
        bw, bh = f.bucket
        im = im.crop((f.left, f.top, f.left + bw, f.top + bh))
        arr = np.asarray(im, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)
