"""Every model in the models folders (ours and a ComfyUI / A1111 install's), described from its header.

Why a scan of its own: the dropdowns (`nodes.diffusion.catalog`) only need names, but the library
shows what each file is, so a user can tell two "style.safetensors" apart, see a LoRA's trigger
words before using it and free disk space. Kind, family and variant come from the safetensors
header (`app.engine.probe`: the JSON header only, never the weights); `.ckpt`/`.pt`/`.bin` files
are listed as kind "unsafe" and never opened, because loading a pickle can run code. A diffusers
folder is one model. Hashing a 7 GB checkpoint takes seconds, so each file's sha256 is computed
once and kept in `<cache dir>/library/sha256.json` keyed by (absolute path, size, mtime_ns): a file
replaced on disk is hashed again, an unchanged one never is.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: Kinds a model can be, plus "unsafe" (a pickle, not loaded) and "unreadable" (a broken header).
KINDS = ("checkpoint", "diffusion_model", "text_encoder", "vae", "lora", "embedding", "controlnet", "ipadapter",
         "clip_vision")
UNSAFE, UNREADABLE = "unsafe", "unreadable"
#: Folders catalog.DIRS does not know yet (A1111 and ComfyUI keep textual inversions in embeddings/).
EXTRA_DIRS = {"embedding": ("embeddings",)}
#: Sub-folders whose files are denoiser-only (ComfyUI's split layout), listed apart from checkpoints.
DENOISER_DIRS = ("diffusion_models", "unet")
SAFE_SUFFIXES = (".safetensors", ".sft")
UNSAFE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
PREVIEW_SUFFIXES = (".preview.png", ".preview.jpg", ".preview.jpeg", ".preview.webp", ".png", ".jpg", ".jpeg",
                    ".webp")
#: Files that belong to a model and go with it (A1111's user metadata, Civitai Helper's info, a config).
SIDECAR_SUFFIXES = (*PREVIEW_SUFFIXES, ".json", ".civitai.info", ".yaml")
MAX_DEPTH = 4
_CHUNK = 8 << 20
_lock = threading.Lock()


class LibraryError(ValueError):
    """A model that is not there, not a model, or not what it should be; the one line names it."""


@dataclass
class ModelInfo:
    """What the library knows about one model file or diffusers folder."""

    path: Path
    name: str  # what a workflow writes: relative to its kind's folder, or the file name
    kind: str
    family: str | None = None
    variant: str | None = None
    size: int = 0
    sha256: str | None = None
    trigger_words: list[str] = field(default_factory=list)
    tags: list[tuple[str, int]] = field(default_factory=list)
    preview: Path | None = None
    licence: str | None = None
    root: Path | None = None  # the models folder it was found in
    format: str = "safetensors"  # safetensors, diffusers, gguf or pickle
    title: str | None = None
    note: str = ""  # why it is unsafe or unreadable, or what is odd about it

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("path", "preview", "root"):
            d[key] = None if d[key] is None else str(d[key])
        d["tags"] = [[t, n] for t, n in self.tags]
        return d


# where models lie -------------------------------------------------------------------------------
def layout() -> list[tuple[str, str]]:
    """(sub-folder, kind) pairs, the root itself as "" (checkpoints and LoRAs, told apart by header)."""
    from nodes.diffusion.catalog import DIRS

    dirs = dict(DIRS)
    for kind, subs in EXTRA_DIRS.items():
        dirs.setdefault(kind, subs)
    pairs: list[tuple[str, str]] = []
    for kind, subs in dirs.items():
        for sub in subs:
            k = "diffusion_model" if sub in DENOISER_DIRS else ("checkpoint" if sub == "" else kind)
            if all(sub != s for s, _ in pairs):
                pairs.append((sub, k))
    return pairs


def folders(roots: Iterable[Path] | None = None) -> list[tuple[Path, Path, str]]:
    """(root, folder, kind) for every kind folder under each models root that exists."""
    from app.paths import models_dirs

    out: list[tuple[Path, Path, str]] = []
    seen: set[Path] = set()
    for root in (list(roots) if roots is not None else models_dirs()):
        root = Path(root).expanduser()
        pairs = list(layout())
        if root.name == "models" and (root / "Stable-diffusion").is_dir():
            pairs.append(("../embeddings", "embedding"))  # A1111 keeps embeddings beside models/
        for sub, kind in pairs:
            folder = (root / sub) if sub else root
            try:
                key = folder.resolve()
                if key in seen or not folder.is_dir():
                    continue
            except OSError:
                continue
            seen.add(key)
            out.append((root, folder, kind))
    return out


def _is_model_folder(p: Path) -> bool:
    return (p / "model_index.json").is_file() or (p / "config.json").is_file()


def _candidates(folder: Path, kind: str, top: bool) -> Iterator[Path]:
    """Model files and folders in one kind folder; sub-folders are searched (ComfyUI allows
    `loras/sdxl/x.safetensors`) except in a root, whose sub-folders are the kind folders."""
    stack = [(folder, 0)]
    while stack:
        here, depth = stack.pop()
        try:
            children = sorted(here.iterdir())
        except OSError:
            continue
        for p in children:
            if p.name.startswith("."):
                continue
            try:
                if p.is_dir():
                    if _is_model_folder(p) and (not top or (p / "model_index.json").is_file()):
                        yield p
                    elif not top and depth < MAX_DEPTH:
                        stack.append((p, depth + 1))
                elif p.is_file() and p.suffix.lower() in (*SAFE_SUFFIXES, ".gguf", *UNSAFE_SUFFIXES):
                    if p.name.lower().endswith((".part", ".tmp")):
                        continue
                    yield p
            except OSError:
                continue


# the sha256 cache -------------------------------------------------------------------------------
def _cache_file() -> Path:
    from app.paths import cache_dir

    return cache_dir() / "library" / "sha256.json"


def _load_cache() -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(_cache_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_cache(data: dict[str, dict[str, Any]]) -> None:
    target = _cache_file()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(data, indent=0, sort_keys=True), encoding="utf-8")
    tmp.replace(target)


def _key(path: Path) -> str:
    return str(path.absolute())


def cached_sha256(path: Path) -> str | None:
    """The sha256 recorded for this file as it is now (same size and mtime), else None."""
    rec = _load_cache().get(_key(path))
    return _valid(rec, path)


def _valid(rec: Any, path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    if isinstance(rec, dict) and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
        sha = rec.get("sha256")
        return sha if isinstance(sha, str) else None
    return None


def _record(cache: dict[str, dict[str, Any]], path: Path, sha: str) -> None:
    st = path.stat()
    cache[_key(path)] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}


def _hash_file(path: Path) -> str:
    """sha256 of the file (the engine's memo, which remote uploads also use, so it is read once)."""
    from app.engine.fingerprint import file_hash

    return file_hash(path, algorithm="sha256")


def sha256(path: Path) -> str:
    """The file's sha256, from the on-disk cache when the file is unchanged, else computed and recorded."""
    path = Path(path)
    with _lock:
        cache = _load_cache()
        hit = _valid(cache.get(_key(path)), path)
        if hit:
            return hit
    digest = _hash_file(path)
    with _lock:
        cache = _load_cache()
        _record(cache, path, digest)
        _save_cache(cache)
    return digest


# describing one model ---------------------------------------------------------------------------
def _sidecar(path: Path, suffix: str) -> Path:
    base = path.name if path.is_dir() else path.stem
    return path.with_name(base + suffix)


def _preview(path: Path) -> Path | None:
    for suffix in PREVIEW_SUFFIXES:
        p = _sidecar(path, suffix)
        if p.is_file():
            return p
    return None


def _json_sidecar(path: Path, suffix: str) -> dict[str, Any]:
    p = _sidecar(path, suffix)
    try:
        data = json.loads(p.read_text(encoding="utf-8")) if p.is_file() else {}
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _words(text: str) -> list[str]:
    return [w.strip() for w in text.split(",") if w.strip()]


def trigger_words(path: Path, metadata: dict[str, str]) -> list[str]:
    """modelspec.trigger_phrase, A1111's `NAME.json` "activation text" and Civitai Helper's
    `NAME.civitai.info` trainedWords, in that order, without repeats."""
    words = _words(metadata.get("modelspec.trigger_phrase", ""))
    words += _words(str(_json_sidecar(path, ".json").get("activation text", "") or ""))
    trained = _json_sidecar(path, ".civitai.info").get("trainedWords")
    if isinstance(trained, list):
        words += [w for t in trained if isinstance(t, str) for w in _words(t)]
    return list(dict.fromkeys(words))


def tags(metadata: dict[str, str]) -> list[tuple[str, int]]:
    """kohya's `ss_tag_frequency` (dataset folder -> tag -> count), summed over folders, most used first."""
    try:
        freq = json.loads(metadata.get("ss_tag_frequency", "") or "{}")
    except ValueError:
        return []
    total: dict[str, int] = {}
    if isinstance(freq, dict):
        for counts in freq.values():
            if isinstance(counts, dict):
                for tag, n in counts.items():
                    if isinstance(n, (int, float)) and str(tag).strip():
                        total[str(tag).strip()] = total.get(str(tag).strip(), 0) + int(n)
    return sorted(total.items(), key=lambda item: (-item[1], item[0]))


def _embedding_family(header: Any) -> str | None:
    """SD 1.x (768 wide), SD 2.x (1024) or SDXL (clip_l + clip_g) textual inversions."""
    if "clip_g" in header and "clip_l" in header:
        return "sdxl"
    if "emb_params" in header and header.shape("emb_params"):
        return {768: "sd1", 1024: "sd2"}.get(header.shape("emb_params")[-1])
    return None


def _folder_size(folder: Path) -> int:
    total = 0
    for p in folder.rglob("*"):
        try:
            if p.is_file():
                total += p.stat().st_size
        except OSError:
            continue
    return total


def describe(path: Path, kind: str, root: Path | None = None, name: str | None = None,
             hashes: bool = True) -> ModelInfo:
    """A ModelInfo for one file or folder; `kind` is its folder's kind (the header may correct it)."""
    from app.engine import families
    from app.engine.probe import ProbeError, probe

    path = Path(path)
    m = ModelInfo(path=path, name=name or path.name, kind=kind, root=root, preview=_preview(path))
    if path.is_dir():
        m.format, m.size = "diffusers", _folder_size(path)
        if (path / "model_index.json").is_file():
            m.kind = "checkpoint" if kind in ("checkpoint", "diffusion_model") else kind
            try:
                fam, m.variant = families.detect_folder(path)
                m.family = fam.name
            except (families.FamilyNotFound, OSError, ValueError):
                pass
        m.trigger_words = trigger_words(path, {})
        return m
    m.size = path.stat().st_size
    suffix = path.suffix.lower()
    if suffix in UNSAFE_SUFFIXES:
        m.kind, m.format = UNSAFE, "pickle"
        m.note = f"{path.name} is a pickle ({suffix}): listed, never loaded (unpickling can run code)"
    elif suffix == ".gguf":
        m.format = "gguf"
        m.kind = kind if kind in ("checkpoint", "diffusion_model", "text_encoder") else "diffusion_model"
    else:
        try:
            header = probe(path)
        except ProbeError as exc:
            m.kind, m.note = UNREADABLE, str(exc)
            return m
        md = header.metadata
        m.title = md.get("modelspec.title") or None
        m.licence = md.get("modelspec.license") or None
        m.trigger_words, m.tags = trigger_words(path, md), tags(md)
        if kind in ("checkpoint", "diffusion_model", "lora"):
            if header.looks_like_lora():
                m.kind = "lora"
            elif kind == "lora":
                m.kind = "checkpoint"
                m.note = f"{path.name} is not a LoRA (no LoRA keys) though it is in a LoRA folder"
        if m.kind == "lora":
            m.family = families.lora_family(header)
        elif m.kind in ("checkpoint", "diffusion_model"):
            try:
                fam, m.variant = families.detect(header)
                m.family = fam.name
            except families.FamilyNotFound:
                pass
        elif m.kind == "embedding":
            m.family = _embedding_family(header)
    if hashes:
        m.sha256 = sha256(path)
    else:
        m.sha256 = cached_sha256(path)
    return m


# the library ------------------------------------------------------------------------------------
def scan(kinds: Iterable[str] | None = None, roots: Iterable[Path] | None = None,
         hashes: bool = True) -> list[ModelInfo]:
    """Every model under the models folders (`app.paths.models_dirs()`, which includes the extra
    roots), or under `roots`; only `kinds` when given. `hashes=False` gives only cached hashes."""
    wanted = set(kinds) if kinds is not None else None
    found: list[ModelInfo] = []
    seen: set[Path] = set()
    pending: list[Path] = []
    for root, folder, kind in folders(roots):
        top = folder == root
        for p in _candidates(folder, kind, top):
            try:
                key = p.resolve()
            except OSError:
                continue
            if key in seen:
                continue
            seen.add(key)
            rel = p.relative_to(folder).as_posix()
            try:
                m = describe(p, kind, root, rel, hashes=False)
            except OSError:
                continue  # removed while listing
            if wanted is not None and m.kind not in wanted:
                continue
            found.append(m)
            if hashes and m.sha256 is None and p.is_file():
                pending.append(p)
    if pending:
        _hash_many(found)
    return found


def _hash_many(models: list[ModelInfo]) -> None:
    """Hash what the cache lacks and write the cache once (not once per file)."""
    computed: dict[str, dict[str, Any]] = {}
    for m in models:
        if m.sha256 is None and m.path.is_file():
            try:
                m.sha256 = _hash_file(m.path)
                _record(computed, m.path, m.sha256)
            except OSError:
                continue  # removed or unreadable: listed without a hash
    if computed:
        with _lock:
            cache = _load_cache()
            cache.update(computed)
            _save_cache(cache)


def _where(path: Path) -> tuple[Path | None, str, str]:
    """(root, kind, name) of a path inside a models folder; a path elsewhere gets its own name."""
    try:
        resolved = path.resolve()
    except OSError:
        resolved = path.absolute()
    best: tuple[Path | None, str, str] | None = None
    for root, folder, kind in folders():
        try:
            rel = resolved.relative_to(folder.resolve())
        except (ValueError, OSError):
            continue
        if folder == root and len(rel.parts) > 1:
            continue  # inside a kind folder of this root, which has its own entry
        if best is None or len(rel.parts) < len(best[2].split("/")):
            best = (root, kind, rel.as_posix())
    return best or (None, "checkpoint", path.name)


def info(path_or_name: str | os.PathLike[str], hashes: bool = True) -> ModelInfo:
    """The model at a path, or the one a name (file name, name as a workflow writes it, or stem)
    means in the models folders. LibraryError when there is none, or several."""
    text = str(path_or_name).strip()
    if not text:
        raise LibraryError("no model named")
    try:
        p = Path(text).expanduser()
        exists = p.exists()
    except (OSError, ValueError):
        p, exists = Path(text), False
    if exists:
        root, kind, name = _where(p)
        if p.is_dir() and not _is_model_folder(p):
            raise LibraryError(f"{p}: a folder, but not a diffusers model (no model_index.json or config.json)")
        if p.is_file() and p.suffix.lower() not in (*SAFE_SUFFIXES, ".gguf", *UNSAFE_SUFFIXES):
            raise LibraryError(f"{p.name} is not a model file (.safetensors, .gguf, a diffusers folder)")
        return describe(p, kind, root, name, hashes=hashes)
    if p.is_absolute() or text.startswith((".", "~")):
        raise LibraryError(f"{text}: no such file")
    matches = [m for m in scan(hashes=False) if text in (m.name, m.path.name, m.path.stem)]
    if not matches:
        from app.paths import models_dirs

        where = ", ".join(str(d) for d in models_dirs())
        raise LibraryError(f"no model named {text!r} in the models folders ({where})")
    exact = [m for m in matches if m.name == text] or matches
    if len(exact) > 1:
        listed = "; ".join(str(m.path) for m in exact[:5])
        raise LibraryError(f"{text!r} names {len(exact)} models ({listed}): give the path")
    m = exact[0]
    if hashes and m.sha256 is None and m.path.is_file():
        m.sha256 = sha256(m.path)
    return m


@dataclass(frozen=True)
class Verification:
    """What verify found: the sha256 read now and what it was compared against."""

    ok: bool
    sha256: str
    expected: str | None  # None when there was nothing to compare with
    against: str  # "given", "recorded", "embedded" (kohya's sshs_model_hash of the tensor data) or "none"


def _read_hashes(path: Path) -> tuple[str, str | None]:
    """(sha256 of the file, sha256 of a safetensors file's tensor data), in one read."""
    whole = hashlib.sha256()
    data = hashlib.sha256()
    skip: int | None = None
    with open(path, "rb") as f:
        if path.suffix.lower() in SAFE_SUFFIXES:
            head = f.read(8)
            whole.update(head)
            if len(head) == 8:
                (n,) = struct.unpack("<Q", head)
                skip = n
        done = 0
        while chunk := f.read(_CHUNK):
            whole.update(chunk)
            if skip is not None:
                start = max(0, skip - done)
                if start < len(chunk):
                    data.update(chunk[start:])
            done += len(chunk)
    return whole.hexdigest(), (data.hexdigest() if skip is not None else None)


def check(path: str | os.PathLike[str], expected: str | None = None) -> Verification:
    """Read the file again and compare its sha256 with `expected`, else with the hash recorded when
    it was first hashed (same size and mtime: the bytes changed under an unchanged date, i.e. bit
    rot or a bad copy), else with the tensor-data hash kohya trainers embed (`sshs_model_hash`)."""
    p = Path(path)
    if p.is_dir():
        raise LibraryError(f"{p.name} is a diffusers folder: it has no single sha256 to verify")
    try:
        sha, data_sha = _read_hashes(p)
    except OSError as exc:
        raise LibraryError(f"{p.name} cannot be read ({exc.strerror or type(exc).__name__})") from None
    if expected:
        want = expected.strip().lower().removeprefix("0x")
        return Verification(sha == want, sha, want, "given")
    with _lock:
        cache = _load_cache()
        recorded = _valid(cache.get(_key(p)), p)
        if recorded:
            return Verification(sha == recorded, sha, recorded, "recorded")
    embedded = None
    if data_sha is not None:
        from app.engine.probe import ProbeError, probe

        try:
            embedded = probe(p).metadata.get("sshs_model_hash")
        except ProbeError:
            embedded = None
    ok = True if not embedded else data_sha == embedded.strip().lower()
    if ok:
        with _lock:
            cache = _load_cache()
            _record(cache, p, sha)
            _save_cache(cache)
    if embedded:
        return Verification(ok, sha, embedded, "embedded")
    return Verification(True, sha, None, "none")


def verify(path: str | os.PathLike[str], expected: str | None = None) -> tuple[bool, str]:
    """(ok, sha256) of the file read again now; see `check` for what it is compared with."""
    v = check(path, expected)
    return v.ok, v.sha256


def sidecars(path: Path) -> list[Path]:
    """The preview, A1111 `.json`, `.civitai.info` and `.yaml` files that belong to a model."""
    return [s for suffix in SIDECAR_SUFFIXES if (s := _sidecar(path, suffix)).is_file() and s != path]


def remove(path: str | os.PathLike[str]) -> list[Path]:
    """Delete a model file (or diffusers folder), its sidecars and its cache entry; what went.
    Only model files and model folders are removed, so a mistyped path cannot delete a folder."""
    p = Path(path)
    if p.is_dir():
        if not _is_model_folder(p):
            raise LibraryError(f"{p}: not a model folder (no model_index.json or config.json); nothing removed")
    elif p.is_file():
        if p.suffix.lower() not in (*SAFE_SUFFIXES, ".gguf", *UNSAFE_SUFFIXES):
            raise LibraryError(f"{p.name} is not a model file; nothing removed")
    else:
        raise LibraryError(f"{p}: no such file")
    gone = sidecars(p)
    for s in gone:
        s.unlink(missing_ok=True)
    if p.is_dir():
        shutil.rmtree(p)
    else:
        p.unlink()
    with _lock:
        cache = _load_cache()
        if cache.pop(_key(p), None) is not None:
            _save_cache(cache)
    return [p, *gone]


def _names_model(value: Any, m: ModelInfo, base_dir: str | None) -> bool:
    if not isinstance(value, str) or not value.strip():
        return False
    v = value.strip()
    if v in (m.name, m.path.name):
        return True
    try:
        p = Path(v).expanduser()
        if not p.is_absolute() and base_dir:
            p = Path(base_dir) / p
        return p.exists() and p.resolve() == m.path.resolve()
    except (OSError, ValueError, RuntimeError):
        return False


def used_in(model: ModelInfo, workflow_dirs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """The workflow .json files (in these folders and below, or given one by one) whose node
    parameters name the model, by name or by path."""
    from app.graph.io import WorkflowFormatError, load

    files: list[Path] = []
    for d in workflow_dirs:
        d = Path(d)
        if d.is_file() and d.suffix.lower() == ".json":
            files.append(d)
        elif d.is_dir():
            files += sorted(p for p in d.rglob("*.json") if not any(part.startswith(".") for part in p.parts))
    hits: list[Path] = []
    for f in dict.fromkeys(files):
        try:
            graph = load(f)
        except (WorkflowFormatError, OSError, ValueError):
            continue
        if any(_names_model(v, model, graph.base_dir) for node in graph.nodes.values() for v in node.params.values()):
            hits.append(f)
    return hits
