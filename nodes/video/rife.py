"""RIFE 4.25 / 4.26 frame interpolation (Practical-RIFE's IFNet_HDv3) in plain torch.

A re-implementation of the IFNet of hzwer's Practical-RIFE (`train_log/IFNet_HDv3.py`, MIT
licence) with the same module and parameter names, so a released `flownet.pkl` loads with
`strict=True`. The two versions differ only in the width of the feature head: 4 channels (4.25)
or 16 (4.26); the loader reads it from the weights. Warping is `grid_sample` (no cupy, no custom
ops), so it runs on CUDA, MPS and the CPU. Weights load from `.safetensors`, or from a pickled
state dict through `torch.load(weights_only=True)` only: nothing else is ever unpickled.

torch is imported on first use, so importing this module (registering nodes) stays fast.
"""

from __future__ import annotations

import functools
import pathlib
import threading
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

#: Inputs are padded to a multiple of this: the first block works at 1/16 and then strides 4 more.
PAD = 64
#: The five blocks' working scales for a 1.0 overall scale (Practical-RIFE's inference default).
SCALES = (16.0, 8.0, 4.0, 2.0, 1.0)
_WIDTHS = (192, 128, 96, 64, 32)
_grids: dict[tuple[str, str, tuple[int, ...]], Any] = {}
_grid_lock = threading.Lock()


@functools.cache
def _arch() -> dict[str, Any]:
    """The torch modules, defined on first use (importing this module must not import torch)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    def warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
        """Backward warp: out(x) = image(x + flow(x)), bilinear, borders replicated (Practical-RIFE's warplayer)."""
        n, _, h, w = flow.shape
        key = (str(flow.device), str(flow.dtype), (n, h, w))
        with _grid_lock:
            grid = _grids.get(key)
            if grid is None:
                like = {"device": flow.device, "dtype": flow.dtype}
                gx = torch.linspace(-1.0, 1.0, w, **like).view(1, 1, 1, w).expand(n, 1, h, w)
                gy = torch.linspace(-1.0, 1.0, h, **like).view(1, 1, h, 1).expand(n, 1, h, w)
                grid = torch.cat([gx, gy], 1)
                if len(_grids) > 16:
                    _grids.clear()
                _grids[key] = grid
        f = torch.cat([flow[:, 0:1] / ((image.shape[3] - 1.0) / 2.0), flow[:, 1:2] / ((image.shape[2] - 1.0) / 2.0)], 1)
        g = (grid + f).permute(0, 2, 3, 1)
        return F.grid_sample(image, g, mode="bilinear", padding_mode="border", align_corners=True)


    def _conv(cin: int, cout: int, k: int = 3, stride: int = 1, pad: int = 1) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride, pad, bias=True), nn.LeakyReLU(0.2, True))


    class Head(nn.Module):
        """The feature encoder: 3 -> `channels` features at full resolution."""

        def __init__(self, channels: int = 4) -> None:
            super().__init__()
            self.cnn0 = nn.Conv2d(3, 16, 3, 2, 1)
            self.cnn1 = nn.Conv2d(16, 16, 3, 1, 1)
            self.cnn2 = nn.Conv2d(16, 16, 3, 1, 1)
            self.cnn3 = nn.ConvTranspose2d(16, channels, 4, 2, 1)
            self.relu = nn.LeakyReLU(0.2, True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.relu(self.cnn0(x))
            x = self.relu(self.cnn1(x))
            x = self.relu(self.cnn2(x))
            return self.cnn3(x)


    class ResConv(nn.Module):
        def __init__(self, c: int) -> None:
            super().__init__()
            self.conv = nn.Conv2d(c, c, 3, 1, 1)
            self.beta = nn.Parameter(torch.ones((1, c, 1, 1)))
            self.relu = nn.LeakyReLU(0.2, True)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.conv(x) * self.beta + x)


    class IFBlock(nn.Module):
        """One refinement level: 4 flow channels (t->0, t->1), a mask and 8 feature channels out."""

        def __init__(self, in_planes: int, c: int = 64) -> None:
            super().__init__()
            self.conv0 = nn.Sequential(_conv(in_planes, c // 2, 3, 2, 1), _conv(c // 2, c, 3, 2, 1))
            self.convblock = nn.Sequential(*(ResConv(c) for _ in range(8)))
            self.lastconv = nn.Sequential(nn.ConvTranspose2d(c, 4 * 13, 4, 2, 1), nn.PixelShuffle(2))

        def forward(self, x: torch.Tensor, flow: torch.Tensor | None = None,
                    scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x = F.interpolate(x, scale_factor=1.0 / scale, mode="bilinear", align_corners=False)
            if flow is not None:
                flow = F.interpolate(flow, scale_factor=1.0 / scale, mode="bilinear", align_corners=False) / scale
                x = torch.cat((x, flow), 1)
            feat = self.convblock(self.conv0(x))
            tmp = F.interpolate(self.lastconv(feat), scale_factor=scale, mode="bilinear", align_corners=False)
            return tmp[:, :4] * scale, tmp[:, 4:5], tmp[:, 5:]


    class IFNet(nn.Module):
        """Practical-RIFE's IFNet_HDv3 (4.25: head_channels=4, 4.26: 16), inference only."""

        def __init__(self, head_channels: int = 4) -> None:
            super().__init__()
            h = head_channels
            self.head_channels = h
            self.block0 = IFBlock(7 + 2 * h, c=_WIDTHS[0])
            self.block1 = IFBlock(8 + 4 + 8 + 2 * h, c=_WIDTHS[1])
            self.block2 = IFBlock(8 + 4 + 8 + 2 * h, c=_WIDTHS[2])
            self.block3 = IFBlock(8 + 4 + 8 + 2 * h, c=_WIDTHS[3])
            self.block4 = IFBlock(8 + 4 + 8 + 2 * h, c=_WIDTHS[4])
            self.encode = Head(h)

        def forward(self, img0: torch.Tensor, img1: torch.Tensor, timestep: float = 0.5,
                    scales: tuple[float, ...] = SCALES) -> torch.Tensor:
            """The frame at `timestep` between img0 and img1 ((N, 3, H, W) in [0, 1], H and W multiples of 64)."""
            t = torch.full_like(img0[:, :1], float(timestep))
            f0, f1 = self.encode(img0), self.encode(img1)
            blocks = (self.block0, self.block1, self.block2, self.block3, self.block4)
            flow = mask = feat = None
            warped0, warped1 = img0, img1
            for block, scale in zip(blocks, scales, strict=True):
                if flow is None:
                    flow, mask, feat = block(torch.cat((img0, img1, f0, f1, t), 1), None, scale=scale)
                else:
                    wf0, wf1 = warp(f0, flow[:, :2]), warp(f1, flow[:, 2:4])
                    fd, mask, feat = block(torch.cat((warped0, warped1, wf0, wf1, t, mask, feat), 1), flow, scale=scale)
                    flow = flow + fd
                warped0, warped1 = warp(img0, flow[:, :2]), warp(img1, flow[:, 2:4])
            m = torch.sigmoid(mask)
            return warped0 * m + warped1 * (1 - m)

    made: dict[str, Any] = {"warp": warp, "Head": Head, "ResConv": ResConv, "IFBlock": IFBlock, "IFNet": IFNet}
    for name, obj in made.items():  # module-level names, so the modules pickle and print as usual
        obj.__qualname__ = name
        globals()[name] = obj
    return made


def __getattr__(name: str) -> Any:  # PEP 562: rife.IFNet, rife.warp ... build the torch modules lazily
    if name in ("warp", "Head", "ResConv", "IFBlock", "IFNet"):
        return _arch()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class RifeWeightsError(ValueError):
    """A weights file that is not a RIFE 4.25/4.26 IFNet state dict (one line, naming the file)."""


def read_state_dict(path: pathlib.Path) -> dict[str, torch.Tensor]:
    """The tensors of a `.safetensors` file or a pickled state dict (`weights_only=True`), `module.` stripped."""
    import torch

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RIFE weights file not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".safetensors":
            from safetensors.torch import load_file

            sd: Any = load_file(str(path), device="cpu")
        elif suffix in (".pkl", ".pth", ".pt", ".ckpt", ".bin"):
            with warnings.catch_warnings():  # pickle-protocol notes are noise here
                warnings.simplefilter("ignore", UserWarning)
                sd = torch.load(str(path), map_location="cpu", weights_only=True)
        else:
            raise RifeWeightsError(f"{path.name}: RIFE weights must be .safetensors, .pkl or .pth")
    except RifeWeightsError:
        raise
    except Exception as exc:  # noqa: BLE001 - unpickling refused or a corrupt file: say which file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RifeWeightsError(f"{path.name}: cannot read it as a RIFE state dict "
                               f"(only plain tensors are loaded): {reason[:200]}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise RifeWeightsError(f"{path.name}: not a state dict of tensors (got {type(sd).__name__})")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def build(sd: dict[str, torch.Tensor], name: str = "weights") -> Any:
    """An IFNet holding `sd` (strict: every key, every shape), its head width read from the weights."""
    head = sd.get("encode.cnn3.weight")
    net_class = _arch()["IFNet"]
    if head is None or head.ndim != 4:
        raise RifeWeightsError(f"{name}: not RIFE 4.25/4.26 IFNet weights (no encode.cnn3.weight)")
    net = net_class(int(head.shape[1]))
    want = net.state_dict()
    missing = [k for k in want if k not in sd]
    extra = [k for k in sd if k not in want]
    bad = [k for k in want if k in sd and tuple(sd[k].shape) != tuple(want[k].shape)]
    if missing or extra or bad:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", extra), ("wrong shape", bad)):
            if keys:
                parts.append(f"{len(keys)} {label} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        raise RifeWeightsError(f"{name}: not RIFE 4.25/4.26 IFNet weights: {'; '.join(parts)}")
    net.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    return net.eval()


_cache: dict[tuple, Any] = {}
_cache_lock = threading.Lock()


def load(path: pathlib.Path, device: str = "cpu", dtype: Any = None) -> Any:
    """The IFNet in `path` on `device` in `dtype` (default float32); the last one loaded stays
    cached, keyed by file, mtime, device and dtype."""
    import torch

    dtype = torch.float32 if dtype is None else dtype
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"RIFE weights file not found: {path}")
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size, device, str(dtype))
    with _cache_lock:
        net = _cache.get(key)
        if net is None:
            net = build(read_state_dict(path), path.name).to(device=device, dtype=dtype)
            _cache.clear()
            _cache[key] = net
    return net


def interpolate(net: Any, a: Any, b: Any, timestep: float) -> Any:
    """The frame at `timestep` between two (1, H, W, 3) float32 numpy frames, as (1, H, W, 3) float32."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    p = next(net.parameters())
    h, w = a.shape[1:3]
    ph, pw = -(-h // PAD) * PAD, -(-w // PAD) * PAD

    def tensor(x: Any) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(x[..., :3], dtype=np.float32)).permute(0, 3, 1, 2)
        t = t.to(device=p.device, dtype=p.dtype)
        return F.pad(t, (0, pw - w, 0, ph - h), mode="replicate") if (ph, pw) != (h, w) else t

    with torch.inference_mode():
        out = net(tensor(a), tensor(b), timestep)[:, :, :h, :w]
    return out.clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
