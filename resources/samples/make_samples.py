"""Draw the sample images the example workflows use (the project ships no third-party pictures).

Run from the repo root: `python resources/samples/make_samples.py`. Everything is drawn
procedurally with numpy and Pillow from a fixed seed, so the files are reproducible; the
committed PNGs are what the workflows and tests read. `clip.mp4` is written with OpenCV (mp4v);
`timelapse.mp4` with PyAV (H.264 + an AAC tone), with the exposure pumping of a real timelapse.
"""

from __future__ import annotations

import pathlib

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HERE = pathlib.Path(__file__).resolve().parent
W, H = 512, 384


def _grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs / (w - 1), ys / (h - 1)


def _noise(w: int, h: int, scale: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth value noise in [0, 1]: random cells upsampled with bicubic filtering."""
    cells = rng.random((max(2, h // scale), max(2, w // scale))).astype(np.float32)
    im = Image.fromarray((cells * 255).astype(np.uint8)).resize((w, h), Image.BICUBIC)
    return np.asarray(im, np.float32) / 255.0


def _fbm(w: int, h: int, rng: np.random.Generator, octaves: int = 4, base: int = 64) -> np.ndarray:
    total = np.zeros((h, w), np.float32)
    amp, norm = 1.0, 0.0
    for o in range(octaves):
        total += amp * _noise(w, h, max(2, base >> o), rng)
        norm += amp
        amp *= 0.5
    return total / norm


def _save(arr: np.ndarray, name: str) -> None:
    arr8 = (np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8)
    Image.fromarray(arr8, "RGBA" if arr8.shape[-1] == 4 else "RGB").save(HERE / name, optimize=True)


def sky(w: int = W, h: int = H, seed: int = 1) -> np.ndarray:
    """A dusk sky: blue zenith to warm horizon, a low sun with glow, soft clouds."""
    rng = np.random.default_rng(seed)
    x, y = _grid(w, h)
    top, horizon = np.array([0.10, 0.22, 0.55]), np.array([1.00, 0.62, 0.35])
    t = (y ** 1.3)[..., None]
    img = top * (1 - t) + horizon * t
    d = np.sqrt(((x - 0.68) * w / h) ** 2 + (y - 0.78) ** 2)
    img += np.array([1.0, 0.75, 0.4]) * (np.exp(-(d / 0.18) ** 2) * 0.6)[..., None]
    img = np.where((d < 0.06)[..., None], np.array([1.0, 0.95, 0.8]), img)
    clouds = np.clip((_fbm(w, h, rng, 5, 96) - 0.5) * 3.0, 0, 1) * np.clip(1.2 - y * 1.4, 0, 1)
    img = img * (1 - clouds[..., None] * 0.7) + np.array([1.0, 0.85, 0.8]) * clouds[..., None] * 0.7
    return img.astype(np.float32)


def texture(w: int = W, h: int = H, seed: int = 2) -> np.ndarray:
    """Marbled paper: warped sine veins over soft noise, in teal and cream."""
    rng = np.random.default_rng(seed)
    x, y = _grid(w, h)
    warp = _fbm(w, h, rng, 4, 48)
    veins = 0.5 + 0.5 * np.sin((x * 6 + y * 3 + warp * 5) * np.pi)
    veins = veins ** 3
    grain = _fbm(w, h, rng, 2, 24)
    a, b = np.array([0.93, 0.89, 0.80]), np.array([0.08, 0.42, 0.45])
    img = a * (1 - veins[..., None]) + b * veins[..., None]
    return (img * (0.9 + 0.1 * grain[..., None])).astype(np.float32)


def portrait(size: int = 384) -> np.ndarray:
    """A stylised head-and-shoulders figure on a transparent background (soft alpha edge)."""
    ss = 2  # draw at 2x and downsample for smooth edges
    s = size * ss
    shape = Image.new("L", (s, s), 0)
    d = ImageDraw.Draw(shape)
    d.ellipse([s * 0.33, s * 0.12, s * 0.67, s * 0.56], fill=255)  # head
    d.rectangle([s * 0.44, s * 0.50, s * 0.56, s * 0.66], fill=255)  # neck
    d.ellipse([s * 0.12, s * 0.60, s * 0.88, s * 1.30], fill=255)  # shoulders
    alpha = np.asarray(shape.filter(ImageFilter.GaussianBlur(ss * 1.5)).resize((size, size), Image.LANCZOS),
                       np.float32) / 255.0
    x, y = _grid(size, size)
    skin = np.array([0.88, 0.66, 0.52]) * (1.05 - 0.35 * np.clip(x - 0.35, 0, 1))[..., None]
    shirt = np.array([0.55, 0.12, 0.18]) * (1.1 - 0.4 * x)[..., None]
    rgb = np.where((y > 0.62)[..., None], shirt, skin)
    feats = Image.new("L", (size, size), 0)
    fd = ImageDraw.Draw(feats)
    for ex in (0.43, 0.57):
        fd.ellipse([size * (ex - 0.025), size * 0.31, size * (ex + 0.025), size * 0.35], fill=255)
    fd.arc([size * 0.44, size * 0.38, size * 0.56, size * 0.47], 20, 160, fill=255, width=max(2, size // 128))
    f = np.asarray(feats.filter(ImageFilter.GaussianBlur(1)), np.float32)[..., None] / 255.0
    rgb = rgb * (1 - f) + np.array([0.18, 0.10, 0.10]) * f
    return np.concatenate([rgb, alpha[..., None]], axis=-1).astype(np.float32)


def shapes(w: int = W, h: int = H) -> np.ndarray:
    """Bold flat shapes on off-white: a test card for blend modes and masks."""
    im = Image.new("RGB", (w, h), (245, 240, 230))
    d = ImageDraw.Draw(im)
    d.ellipse([40, 60, 220, 240], fill=(230, 57, 70))
    d.rectangle([260, 40, 470, 200], fill=(29, 53, 87))
    d.polygon([(300, 340), (420, 220), (500, 350)], fill=(244, 162, 97))
    d.ellipse([150, 200, 330, 360], fill=(42, 157, 143))
    return np.asarray(im, np.float32) / 255.0


def hue_gradient(w: int = W, h: int = H) -> np.ndarray:
    """Hue sweep left to right, fading to white at the top and black at the bottom."""
    x, y = _grid(w, h)
    hsv = np.stack([x * 255, np.clip(y * 2, 0, 1) * 255, np.clip(2 - y * 2, 0, 1) * 255], axis=-1)
    im = Image.fromarray(hsv.astype(np.uint8), "HSV").convert("RGB")
    return np.asarray(im, np.float32) / 255.0


def tiles(n: int = 6, w: int = 160, h: int = 120) -> list[np.ndarray]:
    """Small frames for the contact-sheet example: the sky at different times of day."""
    out = []
    for i in range(n):
        img = sky(w, h, seed=10 + i)
        shift = i / max(n - 1, 1)
        img = img * (1 - 0.5 * shift) + np.array([0.2, 0.1, 0.3]) * 0.5 * shift
        out.append(img.astype(np.float32))
    return out


def clip(n: int = 24, w: int = 128, h: int = 96) -> None:
    """A 24-frame clip (mp4v): a sun setting over the sky gradient."""
    import cv2

    base = sky(w, h, seed=3)
    path = HERE / "clip.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 12.0, (w, h))
    x, y = _grid(w, h)
    for i in range(n):
        cy = 0.3 + 0.6 * i / (n - 1)
        d = np.sqrt(((x - 0.4) * w / h) ** 2 + (y - cy) ** 2)
        frame = base * (1 - 0.3 * i / n) + np.array([1.0, 0.9, 0.6]) * np.exp(-(d / 0.12) ** 2)[..., None]
        writer.write(cv2.cvtColor((np.clip(frame, 0, 1) * 255).astype(np.uint8), cv2.COLOR_RGB2BGR))
    writer.release()


def timelapse(n: int = 48, w: int = 160, h: int = 96, fps: int = 12) -> None:
    """A 4-second "timelapse" with sound: clouds drift over hills while the exposure pumps from
    frame to frame (the flicker auto-exposure gives real timelapses), and a soft two-note tone."""
    from fractions import Fraction

    import av

    rng = np.random.default_rng(7)
    x, y = _grid(w, h)
    clouds = _fbm(w * 2, h, rng, 5, 48)
    hills = y > 0.62 + 0.08 * np.sin(x * 7.0) + 0.04 * np.sin(x * 17.0 + 1.0)
    gains = 1.0 + 0.14 * (rng.random(n) - 0.5)  # the exposure of each frame: +-7 %
    path = HERE / "timelapse.mp4"
    sr = 24000
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=fps, options={"crf": "20", "preset": "slow"})
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        aus = out.add_stream("aac", rate=sr)
        aus.layout = "mono"
        for i in range(n):
            shift = int(i * w / n)
            sky = np.stack([0.35 + 0.25 * (1 - y), 0.55 + 0.2 * (1 - y), 0.85 + 0.1 * (1 - y)], -1)
            c = np.clip((clouds[:, shift:shift + w] - 0.45) * 2.5, 0, 1)[..., None]
            frame = sky * (1 - c) + np.array([0.95, 0.95, 0.97]) * c
            frame[hills] = np.array([0.22, 0.38, 0.2]) * (0.8 + 0.2 * x[hills, None])
            img = (np.clip(frame * gains[i], 0, 1) * 255 + 0.5).astype(np.uint8)
            for packet in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        t = np.arange(int(sr * n / fps)) / sr
        tone = (0.2 * np.sin(2 * np.pi * np.where(t < n / fps / 2, 440.0, 554.4) * t)).astype(np.float32)
        for k in range(0, len(tone), 1024):
            chunk = av.AudioFrame.from_ndarray(tone[None, k:k + 1024], format="flt", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = sr, k, Fraction(1, sr)
            for packet in aus.encode(chunk):
                out.mux(packet)
        for stream in (vs, aus):
            for packet in stream.encode(None):
                out.mux(packet)


def main() -> None:
    _save(sky(), "sky.png")
    _save(texture(), "texture.png")
    _save(portrait(), "portrait.png")
    _save(shapes(), "shapes.png")
    _save(hue_gradient(), "gradient.png")
    (HERE / "tiles").mkdir(exist_ok=True)
    for i, t in enumerate(tiles(), 1):
        _save(t, f"tiles/tile_{i:02d}.png")
    clip()
    timelapse()


if __name__ == "__main__":
    main()
