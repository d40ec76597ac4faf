"""One read of a .safetensors header, shared by everything that asks what a file is.

Family detection, the inpainting (9-channel) check, the SD 2.x prediction-type metadata, the
LoRA/checkpoint split of the models folder and the trainer's "already trained" check all need a
file's tensor names, shapes or metadata, and none needs its weights. `probe(path)` reads the
header once (pure Python: an 8-byte little-endian length, then that many bytes of JSON mapping
each tensor name to {dtype, shape, data_offsets}, plus an optional "__metadata__" dict of
strings) and memoises the result on (absolute path, size, mtime_ns), so a file replaced on disk
is read again and the rest share one read. No torch: listing a models folder stays cheap.
"""

from __future__ import annotations

import functools
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

#: safetensors' own limit (MAX_HEADER_SIZE in the Rust crate): a longer header is refused unread.
MAX_HEADER_BYTES = 100_000_000
#: How many probed files are remembered (a models folder of a few hundred files fits).
MEMO_SIZE = 256

#: Key prefixes of a full single-file checkpoint in the original (LDM/SGM) layout.
BASE_PREFIXES = ("model.diffusion_model.", "cond_stage_model.", "conditioner.", "first_stage_model.")


class ProbeError(ValueError):
    """A file that is not readable safetensors; the one-line message names the file."""


@dataclass(frozen=True)
class TensorInfo:
    """What the header says about one tensor."""

    dtype: str
    shape: tuple[int, ...]
    data_offsets: tuple[int, int]


@dataclass(frozen=True, eq=False)
class Probe:
    """A safetensors file's header: tensor names, shapes, dtypes and metadata (no weights)."""

    path: Path
    size: int
    mtime_ns: int
    tensors: Mapping[str, TensorInfo]
    _metadata: Mapping[str, str]

    @property
    def metadata(self) -> dict[str, str]:
        """The "__metadata__" strings (modelspec, kohya ss_*, imagebash.*); a copy, so a caller's
        edit cannot change what the next caller of the memoised probe sees."""
        return dict(self._metadata)

    @property
    def keys(self) -> tuple[str, ...]:
        """Tensor names in the order the header lists them."""
        return tuple(self.tensors)

    def __contains__(self, key: object) -> bool:
        return key in self.tensors

    def shape(self, key: str) -> tuple[int, ...]:
        """The tensor's shape; KeyError when the file has no such tensor."""
        return self.tensors[key].shape

    def dtype(self, key: str) -> str:
        """The tensor's safetensors dtype name ("F16", "F32", "BF16", ...)."""
        return self.tensors[key].dtype

    def has_prefix(self, *prefixes: str) -> bool:
        """Whether any tensor name starts with one of `prefixes` (how layouts are told apart)."""
        return any(k.startswith(prefixes) for k in self.tensors)

    def looks_like_lora(self) -> bool:
        """LoRA-style names (kohya `lora_*`, peft `.lora_A`, diffusers `_lora.down`, LyCORIS) and
        none of a base checkpoint's prefixes, so a merged checkpoint is never taken for a LoRA."""
        if self.has_prefix(*BASE_PREFIXES):
            return False
        return any(_is_lora_key(k) for k in self.tensors)


def _is_lora_key(key: str) -> bool:
    return key.startswith("lora_") or ".lora_" in key or ".lora." in key or "_lora." in key


def probe(path: str | os.PathLike[str]) -> Probe:
    """The header of the .safetensors file at `path`, read once per (file, size, mtime).

    Raises ProbeError (naming the file) for anything that is not a readable safetensors file:
    missing, empty, truncated, a header length past the file or over 100 MB, bad JSON.
    """
    p = Path(path).absolute()
    try:
        st = p.stat()
    except OSError as exc:
        raise ProbeError(f"{p.name} cannot be read ({exc.strerror or type(exc).__name__})") from None
    return _probe(str(p), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=MEMO_SIZE)
def _probe(path: str, size: int, mtime_ns: int) -> Probe:
    p = Path(path)
    name = p.name
    bad = f"{name} is not a readable .safetensors file"
    if size < 8:
        raise ProbeError(f"{bad}: {size} bytes, too short for a header")
    try:
        with open(p, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > MAX_HEADER_BYTES:
                raise ProbeError(f"{bad}: header length {n} is over the {MAX_HEADER_BYTES} byte limit")
            if 8 + n > size:
                raise ProbeError(f"{bad}: header of {n} bytes runs past the end of the file ({size} bytes)")
            raw = f.read(n)
    except OSError as exc:
        raise ProbeError(f"{name} cannot be read ({exc.strerror or type(exc).__name__})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProbeError(f"{bad}: header is not JSON ({str(exc).splitlines()[0][:80]})") from None
    if not isinstance(header, dict):
        raise ProbeError(f"{bad}: header is a JSON {type(header).__name__}, not an object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ProbeError(f"{bad}: __metadata__ is not a mapping of strings")
    data_bytes = size - 8 - n
    tensors: dict[str, TensorInfo] = {}
    for key, info in header.items():
        try:
            dtype, shape, (start, end) = info["dtype"], info["shape"], info["data_offsets"]
            ok = (isinstance(dtype, str) and all(isinstance(d, int) and d >= 0 for d in shape)
                  and isinstance(start, int) and isinstance(end, int) and 0 <= start <= end)
        except (TypeError, KeyError, ValueError):
            ok = False
        if not ok:
            raise ProbeError(f"{bad}: bad header entry for tensor {key[:80]!r}")
        if end > data_bytes:
            raise ProbeError(f"{bad}: truncated ({size} bytes; tensor {key[:80]!r} ends past the end)")
        tensors[key] = TensorInfo(dtype, tuple(shape), (start, end))
    return Probe(p, size, mtime_ns, MappingProxyType(tensors), MappingProxyType(dict(metadata)))
