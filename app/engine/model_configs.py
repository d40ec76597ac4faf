"""The diffusers config folders for offline single-file loading (SD 1.x, SD 2.x, SDXL).

`resources/model_configs/<family>/` holds the component configs diffusers would otherwise fetch
from the hub. The CLIP BPE vocabulary (the same for every family's tokenizers) ships once, as
OpenAI CLIP's `bpe_simple_vocab_16e6.txt.gz` (MIT licence, from the open_clip package); on first
use it is expanded into the `vocab.json`/`merges.txt` pair each tokenizer folder needs, in a
copy of the family folder under the cache directory.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from pathlib import Path

from app.paths import cache_dir, resource

BPE_FILE = "clip_bpe_simple_vocab_16e6.txt.gz"
_N_MERGES = 49152 - 256 - 2


def byte_chars() -> list[str]:
    """CLIP's byte -> printable unicode table in its own order (printable bytes first)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def clip_vocab(bpe_path: Path) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) exactly as the Hugging Face CLIP tokenizer files hold them (49408 tokens)."""
    with gzip.open(bpe_path, "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1: _N_MERGES + 1]
    chars = byte_chars()
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(tokens)}, merges


def _write_tokenizer(folder: Path, vocab: dict[str, int], merges: list[str]) -> None:
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def shipped_config(family: str) -> Path:
    """A complete config folder for `family`, tokenizer files included (built once, then reused)."""
    src = resource("model_configs", family)
    if not (src / "model_index.json").is_file():
        raise FileNotFoundError(f"no shipped config for model family '{family}' in {src}")
    stamp = str(max(p.stat().st_mtime_ns for p in src.rglob("*") if p.is_file()))
    dst = cache_dir() / "model_configs" / family
    if (dst / ".stamp").is_file() and (dst / ".stamp").read_text() == stamp:
        return dst
    tmp = dst.with_name(f"{family}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    vocab, merges = clip_vocab(resource("model_configs", BPE_FILE))
    for tok in tmp.glob("tokenizer*"):
        _write_tokenizer(tok, vocab, merges)
    (tmp / ".stamp").write_text(stamp)
    shutil.rmtree(dst, ignore_errors=True)
    tmp.replace(dst)
    return dst
