"""The diffusers config folders for offline single-file loading (SD 1.x/2.x/XL, Flux.1, SD 3.5, Qwen-Image).

`resources/model_configs/<family>/` holds the component configs diffusers would otherwise fetch
from the hub. Tokenizer vocabularies are large and shared between families, so they ship once,
gzipped, next to the family folders; on first use a family folder is copied under the cache
directory and each tokenizer folder (any subfolder with a `tokenizer_config.json`, a Qwen
`processor/` included) is completed from the file its `tokenizer_class` needs:

- CLIPTokenizer: `vocab.json` + `merges.txt` from OpenAI CLIP's `bpe_simple_vocab_16e6.txt.gz`;
- T5Tokenizer(Fast): `tokenizer.json` of T5-XXL (100 sentinels) or UMT5-XXL (`extra_ids` 300);
- Qwen2Tokenizer(Fast): `vocab.json` + `merges.txt` derived from Qwen2.5's BPE merges (the
  special tokens are in the shipped `tokenizer_config.json`).

Provenance and licences: `resources/model_configs/README.md`.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path

from app.paths import cache_dir, resource

BPE_FILE = "clip_bpe_simple_vocab_16e6.txt.gz"
T5_FILE = "t5xxl_tokenizer.json.gz"
UMT5_FILE = "umt5xxl_tokenizer.json.gz"
QWEN_MERGES_FILE = "qwen25_merges.gz"  # not *.txt.gz: tests pick the CLIP BPE file by that pattern
_N_MERGES = 49152 - 256 - 2
_QWEN_BASE_VOCAB = 151643  # ids 0..151642: 256 byte symbols + one token per merge
_T5_FILES = {100: T5_FILE, 300: UMT5_FILE}  # sentinel count -> vocabulary (T5-XXL, UMT5-XXL)
_LAYOUT = "2"  # bump when the expansion changes, so cached folders are rebuilt
_Memo = dict[str, tuple[dict[str, int], list[str]]]


def byte_chars() -> list[str]:
    """GPT-2's byte -> printable unicode table in its own order (printable bytes first).

    CLIP and Qwen2 byte-level BPE both start their vocabularies with these 256 symbols."""
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


def qwen2_vocab(merges_path: Path) -> tuple[dict[str, int], list[str]]:
    """(vocab, merges) of Qwen2/2.5's byte-level BPE (151643 ordinary tokens, special ones excluded).

    The vocabulary is not shipped: a token's id is its merge rank plus 256, after the byte symbols."""
    with gzip.open(merges_path, "rt", encoding="utf-8") as f:
        merges = [m for m in f.read().split("\n") if m and not m.startswith("#version")]
    tokens = byte_chars() + [m.replace(" ", "") for m in merges]
    if len(tokens) != _QWEN_BASE_VOCAB:
        raise ValueError(f"{merges_path}: {len(tokens)} tokens, expected {_QWEN_BASE_VOCAB}")
    return {t: i for i, t in enumerate(tokens)}, merges


def shipped_families() -> list[str]:
    """Names of the shipped config folders (what `shipped_config` accepts)."""
    root = resource("model_configs")
    return sorted(p.parent.name for p in root.glob("*/model_index.json"))


def _write_bpe(folder: Path, vocab: dict[str, int], merges: list[str]) -> None:
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")


def _source(name: str) -> Path:
    path = resource("model_configs", name)
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file {name} is missing from {path.parent}")
    return path


def _bpe(name: str, memo: _Memo | None) -> tuple[dict[str, int], list[str]]:
    memo = {} if memo is None else memo
    if name not in memo:
        path = _source(name)
        memo[name] = clip_vocab(path) if name == BPE_FILE else qwen2_vocab(path)
    return memo[name]


def complete_tokenizer(folder: Path, memo: _Memo | None = None) -> None:
    """Write the vocabulary files `folder`'s tokenizer_config.json asks for (by `tokenizer_class`).

    A folder without tokenizer_config.json is taken as CLIP's (the SD folders' older layout).
    `memo` (an empty dict) keeps parsed vocabularies between calls, for a family with several folders."""
    cfg_path = folder / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
    cls = str(cfg.get("tokenizer_class") or "CLIPTokenizer")
    if cls in ("CLIPTokenizer", "CLIPTokenizerFast"):
        _write_bpe(folder, *_bpe(BPE_FILE, memo))
    elif cls in ("Qwen2Tokenizer", "Qwen2TokenizerFast"):
        _write_bpe(folder, *_bpe(QWEN_MERGES_FILE, memo))
    elif cls in ("T5Tokenizer", "T5TokenizerFast"):
        extra = int(cfg.get("extra_ids", 100))
        if extra not in _T5_FILES:
            raise ValueError(f"{cfg_path}: no shipped T5 vocabulary with {extra} sentinel tokens")
        with gzip.open(_source(_T5_FILES[extra]), "rb") as src, open(folder / "tokenizer.json", "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        raise ValueError(f"{cfg_path}: no shipped vocabulary for tokenizer class {cls}")


def _stamp(src: Path) -> str:
    files = [p for p in src.rglob("*") if p.is_file()]
    files += [p for p in resource("model_configs").glob("*.gz") if p.is_file()]
    return f"{_LAYOUT}:{max(p.stat().st_mtime_ns for p in files)}"


def shipped_config(family: str) -> Path:
    """A complete config folder for `family`, tokenizer files included (built once, then reused).

    The cached copy is rebuilt when a shipped file changes; it is built in a temporary folder and
    moved into place, so a reader never sees a half-written one."""
    src = resource("model_configs", family)
    if not (src / "model_index.json").is_file():
        raise FileNotFoundError(f"no shipped config for model family '{family}' in {src}")
    stamp = _stamp(src)
    dst = cache_dir() / "model_configs" / family
    if (dst / ".stamp").is_file() and (dst / ".stamp").read_text() == stamp:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{family}.tmp{os.getpid()}.", dir=dst.parent))
    try:
        shutil.copytree(src, tmp, dirs_exist_ok=True)
        folders = {p.parent for p in tmp.glob("*/tokenizer_config.json")} | set(tmp.glob("tokenizer*"))
        memo: _Memo = {}
        for folder in sorted(f for f in folders if f.is_dir()):
            complete_tokenizer(folder, memo)
        (tmp / ".stamp").write_text(stamp)
        shutil.rmtree(dst, ignore_errors=True)
        try:
            tmp.replace(dst)
        except OSError:
            # another process or thread moved its copy in first: use it if it is current
            if not ((dst / ".stamp").is_file() and (dst / ".stamp").read_text() == stamp):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dst
