"""The model manager: every loaded pipeline lives here, loaded once and shared.

Pipelines are cached by (source, dtype, config) under a memory budget; when a load goes over it
the least recently used pipeline moves to the CPU (on a GPU) and, if still over, is dropped. A
`Model` wire value is only a handle (its key and source), so a handle whose pipeline was dropped
simply reloads it. Two workflows naming the same file get the same pipeline object, and
per-pipeline state (loaded LoRA adapters) lives beside it in the entry.

Sources: a single-file `.safetensors` checkpoint (its family and variant read from its keys by
`app.engine.families`, the component configs from the variant's folder in
`resources/model_configs/` or an explicit config folder, so it works offline; a denoiser-only
file takes its text encoders and VAE from split-layout `Parts`), a diffusers folder, or a hub
repo id (downloaded with progress when online). Nothing here knows a family by name. Getting a
source onto disk (`ModelManager.fetch`) holds no lock shared with other models; reading it
(`read_pipeline`, which the trainer calls too, for its private copy) happens under the manager's
lock. A checkpoint's header is read once (`app.engine.probe`). Pickle checkpoints are refused.
torch and diffusers are imported inside functions.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.engine.devices import free_memory, pick_device, pick_dtype, release_memory
from app.engine.families import Family, FamilyNotFound, all_families, detect, detect_folder, get_family
from app.engine.families.loading import UNUSED_COMPONENTS, LoadError, Parts
from app.engine.fingerprint import fingerprint
from app.engine.model_configs import shipped_config
from app.engine.probe import Probe, ProbeError, probe

Progress = Callable[[float, str], None]
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
MAX_CONTROLNETS = 6  # loaded ControlNets kept (least recently used dropped first)


class ModelError(ValueError):
    """A model that cannot be loaded, with a message saying what to do about it."""


@dataclass
class Entry:
    """One loaded base pipeline and what hangs off it."""

    key: str
    source: str
    family: str  # the family's name (app.engine.families)
    pipe: Any
    device: str
    nbytes: int
    variant: str = ""
    state: dict[str, Any] = field(default_factory=dict)  # e.g. the LoRA adapters loaded into it
    derived: dict[str, Any] = field(default_factory=dict)  # img2img/inpaint views sharing weights
    lock: threading.RLock = field(default_factory=threading.RLock)


def refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelError(
            f"{path.name} is a pickle checkpoint ({path.suffix}): loading one can run arbitrary code, so "
            "imagebash loads only .safetensors. Convert it once where you trust the file, e.g. "
            "`python -c \"import torch, safetensors.torch as s; sd=torch.load('IN.ckpt', weights_only=True); "
            "s.save_file({k: v.contiguous() for k, v in sd.get('state_dict', sd).items() "
            "if hasattr(v, 'contiguous')}, 'OUT.safetensors')\"`, or download the .safetensors release.")


def refuse_pickle_folder(path: Path) -> None:
    """A diffusers folder whose weights are only pickles (.bin/.ckpt): refused, like a .ckpt file."""
    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    for comp in sorted(p for p in path.iterdir()
                       if p.is_dir() and p.name in index and p.name not in UNUSED_COMPONENTS):
        pickles = [f for f in comp.iterdir() if f.suffix.lower() in PICKLE_SUFFIXES]
        if pickles and not any(f.suffix == ".safetensors" for f in comp.iterdir()):
            raise ModelError(
                f"{path.name}/{comp.name} holds only pickle weights ({pickles[0].name}): loading one can run "
                "arbitrary code, so imagebash loads only .safetensors. Convert the folder once where you "
                "trust it (diffusers: `Pipeline.from_pretrained(IN).save_pretrained(OUT, "
                "safe_serialization=True)`), or download its .safetensors release.")


def header(path: Path) -> Probe:
    """The checkpoint's safetensors header (one read per file version, shared by every check)."""
    try:
        return probe(path)
    except ProbeError as exc:
        raise ModelError(str(exc)) from None


def identify(path: Path) -> tuple[Family, str]:
    """(family, variant) of a diffusers folder or a single-file checkpoint, from its configs or
    its keys and shapes (never its name); the error lists the families tried."""
    from app.engine import memory_modes

    try:
        if path.is_dir():
            return detect_folder(path)
        try:
            h = header(path)
        except ModelError:  # not safetensors: a GGUF denoiser, or a damaged file
            if not memory_modes.is_gguf(path):
                raise
            try:
                h = memory_modes.gguf_header(path)
            except Exception as exc:  # noqa: BLE001 - the gguf reader's errors name no file
                first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise ModelError(f"{path.name} is not a readable GGUF file ({first[:120]})") from None
        if h.looks_like_lora():
            raise ModelError(f"{path.name} is a LoRA, not a base model: load it with a LoRA node")
        return detect(h)
    except FamilyNotFound as exc:
        raise ModelError(str(exc)) from None


def detect_family(path: Path) -> str:
    """The family name ("sd1", "flux", ...) of a folder or checkpoint (see `identify`)."""
    return identify(path)[0].name


def config_folder(family: Family, variant: str, explicit: str | os.PathLike[str] | None = None) -> Path:
    """The diffusers config folder for single-file loading: explicit, else the variant's shipped one."""
    if not explicit:
        try:
            return shipped_config(family.variant(variant).config)
        except FileNotFoundError as exc:
            raise ModelError(f"{family.variant(variant).title}: {exc}; set Load Model's config folder") from None
    folder = Path(explicit)
    if not (folder / "model_index.json").is_file():
        raise ModelError(f"no diffusers config for single-file loading at {folder} (model_index.json missing)")
    return folder


def _nbytes(pipe: Any) -> int:
    total = 0
    for comp in pipe.components.values():
        if hasattr(comp, "parameters"):
            total += sum(p.numel() * p.element_size() for p in comp.parameters())
    return total


def _weight_variant(name: str) -> str | None:
    """'' (plain) or the variant ('fp16') of a safetensors weight or shard index name; None otherwise."""
    parts = name.split(".")
    if parts[-1] == "safetensors" and len(parts) in (2, 3):
        return parts[1] if len(parts) == 3 else ""
    if parts[-1] == "json" and len(parts) in (4, 5) and parts[1:3] == ["safetensors", "index"]:
        return parts[3] if len(parts) == 5 else ""
    return None


def hub_files(files: list[str], model_index: dict[str, Any], half: bool) -> tuple[list[str], str]:
    """(files to download, weight variant) for a diffusers repo: model_index.json, and for each
    component it names its configs/tokenizer/scheduler files and ONE weight variant: "fp16" when
    running in half precision and every component has it, else the plain weights. Root single-file
    checkpoints, ONNX/Flax/OpenVINO exports and unused folders (vae_1_0, ...) are skipped."""
    components = {k for k, v in model_index.items()
                  if not k.startswith("_") and isinstance(v, list) and v and v[0] is not None}
    by_comp: dict[str, list[str]] = {c: [] for c in components}
    for f in files:
        comp, _, name = f.partition("/")
        if comp in by_comp and name and "/" not in name:
            by_comp[comp].append(name)
    weights = {c: [n for n in names if _weight_variant(n) is not None] for c, names in by_comp.items()}
    has = {c: {_weight_variant(n) for n in ws} for c, ws in weights.items() if ws}
    plain_everywhere = all("" in v for v in has.values())
    fp16_everywhere = all("fp16" in v for v in has.values())
    variant = "fp16" if has and fp16_everywhere and (half or not plain_everywhere) else ""
    chosen = ["model_index.json"] if "model_index.json" in files else []
    for comp, names in sorted(by_comp.items()):
        for name in names:
            v = _weight_variant(name)
            if v is None and (name.endswith((".json", ".txt", ".model")) or comp.startswith(("tokenizer",
                                                                                               "scheduler"))):
                chosen.append(f"{comp}/{name}")
            elif v is not None and v == variant:
                chosen.append(f"{comp}/{name}")
    return chosen, variant


def _hub_download(repo_id: str, progress: Progress, half: bool) -> Path:
    """Fetch what a diffusers repo needs (one weight variant) into the Hugging Face cache, or find
    it there when offline."""
    from huggingface_hub import HfApi, hf_hub_download, snapshot_download
    from tqdm.auto import tqdm

    class _Bar(tqdm):  # routes huggingface_hub's byte counts to the node's progress
        def update(self, n: float | None = 1) -> bool | None:
            out = super().update(n)
            if self.total:
                progress(0.8 * self.n / self.total, f"downloading {repo_id}")
            return out

    try:
        files = HfApi().list_repo_files(repo_id)
        if "model_index.json" not in files:
            raise ModelError(f"'{repo_id}' on the Hugging Face hub is not a diffusers model (no "
                             "model_index.json): download its .safetensors checkpoint and load the file")
        index = json.loads(Path(hf_hub_download(repo_id, "model_index.json")).read_text(encoding="utf-8"))
        patterns, _variant = hub_files(files, index, half)
        return Path(snapshot_download(repo_id, allow_patterns=patterns, tqdm_class=_Bar))
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - offline, missing repo, auth: one clear line
        try:
            return Path(snapshot_download(repo_id, local_files_only=True))
        except Exception:  # noqa: BLE001
            raise ModelError(f"cannot get '{repo_id}' from the Hugging Face hub ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:160] if str(exc) else ''}) and it is not in the "
                             "local cache") from None


def folder_variant(path: Path) -> str | None:
    """"fp16" when a diffusers folder's components hold only fp16-variant weights (a hub download
    in half precision), else None (plain weights)."""
    files = [f"{p.parent.name}/{p.name}" for p in path.glob("*/*") if p.is_file()]
    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    _chosen, variant = hub_files(["model_index.json", *files], index, half=False)
    return variant or None


def read_pipeline(path: Path, family: Family | str, config: str | None, dtype: Any,
                  parts: Parts | None = None, variant: str | None = None) -> tuple[Any, list[str]]:
    """(pipeline on the CPU in `dtype`, warnings) for a local diffusers folder or single file.

    The one reader of base models: the model manager (shared pipelines) and the trainer (a
    private copy it injects adapters into) both call it, so every rule applies to both: pickle
    folders refused, the fp16 weight variant of a half-precision hub download, and for single
    files the family's reader with the variant's offline configs (and `parts`, ComfyUI's split
    text-encoder and VAE files). Placement is the caller's.
    """
    fam = get_family(family) if isinstance(family, str) else family
    if variant is None:
        found, variant = identify(path)
        if found.name != fam.name:
            raise ModelError(f"{path.name} is a {found.title} model, not {fam.title}")
    warnings: list[str] = []
    try:
        if path.is_dir():
            if parts:
                raise ModelError(f"{path.name} is a diffusers folder: it holds its own text encoders and VAE "
                                 "(leave Load Model's text encoder and VAE inputs empty)")
            refuse_pickle_folder(path)
            kwargs: dict[str, Any] = {"dtype": dtype}
            index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
            if "safety_checker" in index:
                kwargs.update(safety_checker=None, requires_safety_checker=False)
            for name, spec in index.items():  # components saved as absent (SD 3.5 without T5)
                if isinstance(spec, list) and spec and spec[0] is None and name not in kwargs:
                    kwargs[name] = None
            kwargs.update(fam.folder_components(path))
            pipe = fam.base_pipeline(variant).from_pretrained(
                str(path), local_files_only=True, use_safetensors=True, variant=folder_variant(path), **kwargs)
            return pipe, warnings
        folder = config_folder(fam, variant, config)
        pipe, more = fam.read_single_file(path, variant, folder, dtype, parts or Parts(), bool(config))
        return pipe, warnings + more
    except ModelError:
        raise
    except LoadError as exc:
        raise ModelError(str(exc)) from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot load {path.name} as {fam.title}: {first[:200]}") from exc


def resolve_source(source: str, search: list[Path] | None = None) -> tuple[Path | None, str]:
    """(local path or None, hub id): absolute/relative paths, names in the models folders, hub ids."""
    raw = os.path.expanduser(str(source).strip())
    if not raw:
        raise ModelError("no model chosen: pick a checkpoint, a diffusers folder or a hub repo id")
    p = Path(raw)
    candidates = [p] if p.is_absolute() else [Path.cwd() / p, *[d / p for d in search or []]]
    for c in candidates:
        if c.exists():
            return c.resolve(), ""
    if p.suffix.lower() in (".safetensors", *PICKLE_SUFFIXES) or p.is_absolute() or raw.startswith("."):
        from app.library.missing import where_to_get

        raise ModelError(f"model file not found: {source} ({where_to_get(raw, 'checkpoint')})")
    if raw.count("/") == 1:
        return None, raw
    raise ModelError(f"model not found: '{source}' is neither a file, a diffusers folder nor a hub id (owner/name)")


class ModelManager:
    """Loads, shares and evicts pipelines; one per engine (service name "models")."""

    def __init__(self, settings: Any = None) -> None:
        self.settings = settings
        self.device = pick_device(getattr(settings, "device", "auto"))
        self.dtype = pick_dtype(self.device, getattr(settings, "precision", "auto"))
        self.budget = getattr(settings, "model_budget_bytes", None) or self._default_budget()
        self.host_budget = int(free_memory("cpu") * 0.5) if self.device != "cpu" else self.budget
        self.loads = 0  # base pipelines read from disk (tests and benchmarks count these)
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._lock = threading.RLock()  # the entries; never held through a hub download
        self._fetch_guard = threading.Lock()  # only for the two dicts below
        self._fetch_locks: dict[str, threading.Lock] = {}  # hub id -> its own download lock
        self._fetched: dict[str, Path] = {}  # hub id -> its local snapshot folder
        self._controls: OrderedDict[str, ControlEntry] = OrderedDict()
        self._encoders: dict[str, Any] = {}

    def _default_budget(self) -> int:
        return int(free_memory(self.device) * 0.75)

    # keys and handles ----------------------------------------------------------------------
    def key_for(self, path: Path, config: str | None, parts: Parts | None = None, forced: str | None = None) -> str:
        dtype = str(self.dtype).replace("torch.", "")
        forced = forced or self.forced_mode()
        if forced:
            dtype += "/" + forced
        stamp = ""
        if path.is_file():  # a file replaced on disk is a different model
            st = path.stat()
            stamp = f"|{st.st_size}:{st.st_mtime_ns}"
        elif path.is_dir():  # so is a folder whose files changed (stat only)
            stamp = "|" + fingerprint(path)
        if parts:
            stamp += "|" + "|".join(fingerprint(p) for p in (*parts.text_encoders, parts.vae) if p)
        return f"{path}{stamp}|{dtype}|{config or ''}"

    def fetch(self, source: str, progress: Progress | None = None, search: list[Path] | None = None) -> Path:
        """The local file or folder for `source`, downloading a hub repo first if need be.

        Holds no lock shared with other models (Load Model calls it outside the device lock, so a
        multi-GB download blocks no GPU node and no other model lookup); a hub id has a lock of its
        own, so two nodes asking for the same repo download it once.
        """
        return self._fetch(source, progress or (lambda f, t: None), search)[0]

    def _fetch(self, source: str, progress: Progress, search: list[Path] | None) -> tuple[Path, bool]:
        """(local path, whether it came from the hub)."""
        path, hub_id = resolve_source(source, search)
        if path is not None:
            refuse_pickle(path)
            return path, False
        with self._fetch_guard:
            lock = self._fetch_locks.setdefault(hub_id, threading.Lock())
        with lock:
            with self._fetch_guard:
                done = self._fetched.get(hub_id)
            if done is None or not done.is_dir():
                done = _hub_download(hub_id, progress, self.dtype.itemsize == 2)
                with self._fetch_guard:
                    self._fetched[hub_id] = done
            return done, True

    def load(self, source: str, config: str | os.PathLike[str] | None = None,
             progress: Progress | None = None, search: list[Path] | None = None,
             parts: Parts | None = None, memory: str | None = None) -> Entry:
        """The entry for `source`, loading it if it is not in memory (fetching it first: see `fetch`).

        `parts` are ComfyUI split-layout files (text encoders, VAE) beside a denoiser-only file;
        `memory` forces a memory mode for this model (else the Settings' choice, else the plan).
        """
        progress = progress or (lambda f, t: None)
        parts = parts or Parts()
        path, from_hub = self._fetch(source, progress, search)
        cfg = str(Path(config).resolve()) if config else None
        forced = memory if memory and memory != "auto" else self.forced_mode()
        key = self.key_for(path, cfg, parts, forced)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._touch(entry)
                progress(1.0, "model already loaded")
                return entry
            self._drop_stale(path, key)
            family, variant = identify(path)
            title = family.variant(variant).title
            progress(0.8 if from_hub else 0.1, f"loading {title} model {path.name}")
            pipe, warnings = read_pipeline(path, family, cfg, self.dtype, parts, variant)
            self.loads += 1
            plan = self.plan(pipe, family, variant, path, forced)
            progress(0.9, f"moving to {self.device}: {plan.mode}")
            nbytes = _nbytes(pipe)
            pipe, mode = self._place(pipe, family, plan)
            entry = Entry(key, str(path), family.name, pipe, self.device, nbytes, variant=variant)
            entry.state.update(memory_mode=mode, memory_plan=plan.reason, memory=plan.mode, plan=plan)
            if warnings:
                entry.state["warnings"] = warnings
            if parts:
                entry.state["parts"] = parts
            self._entries[key] = entry
            self._touch(entry)
            self._enforce_budget(keep=key)
            progress(1.0, f"loaded {path.name}")
            return entry

    def _drop_stale(self, path: Path, key: str) -> None:
        """Unload the pipelines of an older version of the same file or folder (replaced on disk)."""
        stale = [k for k, e in self._entries.items() if e.source == str(path) and k != key
                 and k.split("|")[-2:] == key.split("|")[-2:]]  # same dtype and config, other stamp
        for k in stale:
            del self._entries[k]
        if stale and self.device != "cpu":
            release_memory(self.device)

    def forced_mode(self) -> str | None:
        """The memory mode the Settings force ("auto": none; the old CPU-offload switch means
        model offload on a GPU)."""
        mode = str(getattr(self.settings, "memory_mode", "auto") or "auto")
        if mode != "auto":
            return mode
        if getattr(self.settings, "cpu_offload", False) and self.device != "cpu":
            return "model_offload"
        return None

    def plan(self, pipe: Any, family: Family, variant: str, path: Path, forced: str | None = None) -> Any:
        """The memory plan for a pipeline read on the CPU: its real component sizes against the
        device's free memory (`app.engine.memory_modes`)."""
        from app.engine import memory_modes

        den = getattr(pipe, family.denoiser)
        den_bytes = memory_modes.resident_weight_bytes(den)
        enc_bytes = max(0, _nbytes(pipe) - den_bytes)
        dtype = str(self.dtype).replace("torch.", "").replace("float", "fp").replace("bfp16", "bf16")
        host = free_memory("cpu")
        free = host if self.device == "cpu" else free_memory(self.device)
        gguf = memory_modes.holds_gguf(den)
        return memory_modes.plan_memory(
            family.variant(variant).title, den_bytes, enc_bytes, self.device, free, host, forced,
            gguf, dtype=dtype, fp8_ratio=memory_modes.fp8_storage_ratio(den, self.dtype.itemsize))

    def _place(self, pipe: Any, family: Family, plan: Any) -> tuple[Any, str]:
        """Put a pipeline read on the CPU where `plan` says; (pipeline, the mode's log text)."""
        from app.engine import memory_modes

        pipe.set_progress_bar_config(disable=True)  # progress goes to the node's events instead
        if plan.mode == "nf4" and not memory_modes.holds_nf4(getattr(pipe, family.denoiser)):
            memory_modes.check_mode("nf4", self.device)
            from app.engine.quantize import quantize_nf4

            memory_modes.nf4_quantization_config(self.dtype, self.device)  # says what is missing, if anything
            quantize_nf4(getattr(pipe, family.denoiser), self.device)
        text = memory_modes.apply_mode(pipe, plan, self.device, family.denoiser, self.dtype)
        if getattr(self.settings, "compile_denoiser", False):
            text += "; " + memory_modes.compile_denoiser(pipe, family.denoiser, self.device)
        return pipe, f"{plan.mode} ({text})"

    def degrade(self, entry: Entry) -> str | None:
        """Move a loaded model to the next cheaper memory mode after an out-of-memory error (fp8
        weights, then offloading); the log text, or None when nothing cheaper is left."""
        from app.engine import memory_modes

        current = entry.state.get("memory", "full")
        nxt = memory_modes.next_cheaper(current, self.device)
        if nxt is None or nxt in ("nf4", "gguf"):  # these need a different load, not a switch
            return None
        fam = get_family(entry.family)
        with entry.lock:
            pipe = entry.pipe
            if getattr(pipe, "_all_hooks", None):
                pipe.remove_all_hooks()
            plan = memory_modes.MemoryPlan(nxt, f"out of memory in {current}: {nxt}", 0, 0,
                                           nxt != "fp8", True, True, stream=self.device.startswith("cuda"))
            pipe.to("cpu")
            release_memory(self.device)
            text = memory_modes.apply_mode(pipe, plan, self.device, fam.denoiser, self.dtype)
            entry.state.update(memory=nxt, memory_mode=f"{nxt} ({text})", plan=plan)
            for derived in entry.derived.values():  # views share the modules; hooks live on the base
                derived.set_progress_bar_config(disable=True)
        return f"{nxt} ({text})"

    # lookup, LRU ---------------------------------------------------------------------------
    def entry(self, model: Any, progress: Progress | None = None) -> Entry:
        """The entry behind a Model handle, reloading it when it was evicted."""
        with self._lock:
            entry = self._entries.get(model.key)
            if entry is not None:
                if entry.device != self.device:
                    entry.pipe, mode = self._place(entry.pipe, get_family(entry.family), entry.state["plan"])
                    entry.state["memory_mode"] = mode
                    entry.device = self.device
                    self._enforce_budget(keep=entry.key)
                self._touch(entry)
                return entry
        parts = Parts(tuple(Path(p) for p in model.extra.get("text_encoders", ())),
                      Path(model.extra["vae"]) if model.extra.get("vae") else None)
        return self.load(model.source, model.extra.get("config"), progress, parts=parts,
                         memory=model.extra.get("memory"))

    def _touch(self, entry: Entry) -> None:
        self._entries.move_to_end(entry.key)

    def _enforce_budget(self, keep: str) -> None:
        """Least recently used first: off the GPU to the CPU, then (over the host budget) out."""
        def used(device: str) -> int:
            return sum(e.nbytes for e in self._entries.values() if e.device == device)

        moved = False
        for key in list(self._entries):
            if used(self.device) <= self.budget:
                break
            e = self._entries[key]
            if key == keep or e.device != self.device:
                continue
            if self.device == "cpu":
                del self._entries[key]
                continue
            with e.lock:
                e.pipe = e.pipe.to("cpu")
                e.device = "cpu"
                moved = True
        if moved:  # hand the freed blocks back, so free-memory readings (slicing/tiling policy) see them
            release_memory(self.device)
        if self.device != "cpu":
            for key in [k for k, e in self._entries.items() if e.device == "cpu" and k != keep]:
                if used("cpu") <= self.host_budget:
                    break
                del self._entries[key]

    def offload_all(self) -> None:
        """Move every loaded pipeline to the CPU and return cached GPU memory (e.g. before training).

        Entries stay loaded, so the next sampling call moves its pipeline back without a disk read.
        No-op on CPU.
        """
        if self.device == "cpu":
            return
        with self._lock:
            for e in self._entries.values():
                if e.device == "cpu":
                    continue
                with e.lock:
                    if getattr(e.pipe, "_all_hooks", None):
                        e.pipe.remove_all_hooks()  # model CPU offload: hooks would pull modules back
                    e.pipe = e.pipe.to("cpu")
                    e.device = "cpu"
            release_memory(self.device)

    # ControlNets -------------------------------------------------------------------------------
    def load_control(self, source: str, progress: Progress | None = None,
                     search: list[Path] | None = None) -> ControlEntry:
        """The ControlNet at `source` (a folder, a single file or a hub id), loaded once and shared."""
        progress = progress or (lambda f, t: None)
        path, _hub = self._fetch(source, progress, search)
        key = "control|" + self.key_for(path, None)
        with self._lock:
            hit = self._controls.get(key)
            if hit is not None:
                self._controls.move_to_end(key)
                return hit
            progress(0.2, f"loading ControlNet {path.name}")
            model = read_controlnet(path, self.dtype)
            fam = next((f for f in all_families() if f.claims_controlnet(model)), None)
            entry = ControlEntry(key, str(path), fam.name if fam else "", model.to(self.device).eval())
            self._controls[key] = entry
            while len(self._controls) > MAX_CONTROLNETS:
                self._controls.popitem(last=False)
            return entry

    def image_encoder(self, folder: str) -> Any:
        """A CLIP vision encoder (transformers folder) for IP-Adapters, loaded once."""
        key = "encoder|" + self.key_for(Path(folder), None)
        with self._lock:
            hit = self._encoders.get(key)
            if hit is None:
                from transformers import CLIPVisionModelWithProjection

                try:
                    hit = CLIPVisionModelWithProjection.from_pretrained(
                        folder, local_files_only=True, use_safetensors=True, dtype=self.dtype).to(self.device).eval()
                except (OSError, ValueError) as exc:
                    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                    raise ModelError(f"cannot load image encoder {Path(folder).name}: {first[:200]}") from None
                self._encoders[key] = hit
                while len(self._encoders) > 2:
                    self._encoders.pop(next(iter(self._encoders)))
            return hit

    def control(self, ref: Any) -> ControlEntry:
        """The entry behind a ControlRef, reloading it when it was evicted."""
        with self._lock:
            hit = self._controls.get(ref.key)
        return hit if hit is not None else self.load_control(ref.source)

    def adapter_pipeline(self, entry: Entry, task: str, adapters: list[ControlEntry]) -> Any:
        """The family's T2I-Adapter pipeline over the base's modules and these adapters."""
        import diffusers

        fam = get_family(entry.family)
        if task not in fam.adapter_pipelines:
            raise ValueError(f"T2I-Adapters steer Text to Image only on {fam.title} (diffusers has no "
                             f"{task} pipeline for them): use a ControlNet there")
        name = ("adapter", task, *(a.key for a in adapters))
        with entry.lock:
            pipe = entry.derived.get(name)
            if pipe is None:
                net = adapters[0].model if len(adapters) == 1 else diffusers.MultiAdapter([a.model for a in adapters])
                pipe = getattr(diffusers, fam.adapter_pipelines[task]).from_pipe(entry.pipe, adapter=net)
                pipe.set_progress_bar_config(disable=True)
                entry.derived[name] = pipe
            return pipe

    def control_pipeline(self, entry: Entry, task: str, controls: list[ControlEntry]) -> Any:
        """The family's ControlNet pipeline for `task` over the base's modules and these nets."""
        import diffusers

        fam = get_family(entry.family)
        unions = [c.is_union for c in controls]
        if any(unions) and not all(unions):
            raise ValueError("a sampling takes Union ControlNets or other ControlNets, not both (diffusers has no "
                             "pipeline for the mix): chain one kind")
        table, multi = (fam.union_pipelines, fam.multi_union) if any(unions) else \
            (fam.control_pipelines, fam.multi_controlnet)
        if task not in table:
            kind = "Union ControlNet" if any(unions) else "ControlNet"
            raise ValueError(f"{fam.variant(entry.variant).title} has no {kind} pipeline for {task}")
        name = ("control", task, *(c.key for c in controls))
        with entry.lock:
            pipe = entry.derived.get(name)
            if pipe is None:
                net = controls[0].model if len(controls) == 1 else _diffusers_class(multi)([c.model for c in controls])
                pipe = getattr(diffusers, table[task]).from_pipe(entry.pipe, controlnet=net)
                pipe.set_progress_bar_config(disable=True)
                entry.derived[name] = pipe
            return pipe

    def loaded(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def held_names(self) -> set[str]:
        """The names a user may give the loaded pipelines by: their paths, file names and the hub
        ids they were fetched from (what an engine pool asks to send work where models are warm)."""
        with self._lock:
            sources = [e.source for e in self._entries.values()]
        names: set[str] = set()
        for source in sources:
            names.update((source, Path(source).name))
        with self._fetch_guard:
            fetched = dict(self._fetched)
        names.update(hub for hub, folder in fetched.items() if str(folder) in names)
        return names

    def derived(self, entry: Entry, task: str) -> Any:
        """The pipeline for `task` sharing the base pipeline's modules (no copy); ValueError when
        the model's variant has no such task (an SD inpainting U-Net asked for txt2img)."""
        fam = get_family(entry.family)
        if task not in fam.variant(entry.variant).tasks:
            fam.pipeline_class(task, entry.variant)  # raises, naming the tasks it offers
        if task == "txt2img":
            return entry.pipe
        with entry.lock:
            if task not in entry.derived:
                cls = get_family(entry.family).pipeline_class(task, entry.variant)
                if isinstance(entry.pipe, cls):
                    return entry.pipe
                derived = cls.from_pipe(entry.pipe)
                derived.set_progress_bar_config(disable=True)
                entry.derived[task] = derived
            return entry.derived[task]


@dataclass
class ControlEntry:
    """One loaded ControlNet: shared by every sampling node that names the same file."""

    key: str
    source: str
    family: str  # the released family its widths match ("" for a net of unusual size)
    model: Any

    @property
    def is_adapter(self) -> bool:
        """A T2I-Adapter (its features are added to the U-Net's down blocks) rather than a ControlNet."""
        return type(self.model).__name__ == "T2IAdapter"

    @property
    def is_union(self) -> bool:
        """A diffusers ControlNetUnionModel (SDXL; Flux's Union nets are plain FluxControlNetModels)."""
        return type(self.model).__name__ == "ControlNetUnionModel"


def _diffusers_class(name: str) -> Any:
    """A diffusers class by name, also those it does not export at the top (MultiControlNetUnionModel)."""
    import diffusers

    found = getattr(diffusers, name, None)
    if found is None:
        from diffusers.models import controlnets

        found = getattr(controlnets, name)
    return found


CONTROL_SD_KEY = "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
"""An original-layout SD ControlNet's first cross-attention key: its width names the family."""


def read_controlnet(path: Path, dtype: Any) -> Any:
    """A ControlNet model from a diffusers folder (any class diffusers has: SD, SDXL, Flux, Union) or
    an original-layout SD 1.x/2.x/XL single file (its config derived from the family's U-Net)."""
    import diffusers

    try:
        if path.is_dir():
            cfg_file = path / "config.json"
            if not cfg_file.is_file():
                raise ModelError(f"{path.name} is not a ControlNet folder (no config.json)")
            name = str(json.loads(cfg_file.read_text(encoding="utf-8")).get("_class_name", ""))
            cls = getattr(diffusers, name, None) if "ControlNet" in name or name == "T2IAdapter" else None
            if cls is None:
                raise ModelError(f"{path.name} holds a {name or 'model of no known class'}, not a ControlNet "
                                 "or T2I-Adapter")
            return cls.from_pretrained(str(path), local_files_only=True, use_safetensors=True, dtype=dtype)
        h = header(path)
        prefix = next((p for p in ("", "control_model.") if p + CONTROL_SD_KEY in h), None)
        if prefix is None:
            raise ModelError(f"{path.name} is not an SD ControlNet single file (no {CONTROL_SD_KEY}): "
                             "load a diffusers ControlNet folder instead")
        width = int(h.shape(prefix + CONTROL_SD_KEY)[1])
        fam = next((f for f in all_families() if getattr(f, "cross_attention", None) == width), None)
        if fam is None:
            raise ModelError(f"{path.name}: a ControlNet for a {width}-wide text encoder, which no family has")
        folder = _control_config(fam)
        return diffusers.ControlNetModel.from_single_file(str(path), config=str(folder), local_files_only=True,
                                                          dtype=dtype)
    except ModelError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot load ControlNet {path.name}: {first[:200]}") from exc


def _control_config(family: Family) -> Path:
    """A ControlNetModel config folder for `family`, derived once from its shipped U-Net config."""
    from app.paths import cache_dir

    folder = cache_dir() / "model_configs" / f"controlnet-{family.name}"
    target = folder / "config.json"
    if not target.is_file():
        import inspect

        import diffusers

        unet = json.loads((shipped_config(family.variant("base").config) / "unet" / "config.json").read_text("utf-8"))
        params = inspect.signature(diffusers.ControlNetModel.__init__).parameters
        cfg = {k: v for k, v in unet.items() if k in params}
        cfg["_class_name"] = "ControlNetModel"
        cfg.pop("in_channels", None)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(cfg, indent=1), encoding="utf-8")
        tmp.replace(target)
    return folder


def manager_factory(engine: Any) -> ModelManager:
    return ModelManager(getattr(engine, "settings", None))


# Motion adapters (AnimateDiff) ------------------------------------------------------------------
def _motion_config(state: dict[str, Any]) -> dict[str, Any]:
    """A MotionAdapter config from a diffusers-named state dict's keys and shapes (the attention
    head count and norm groups, which no shape shows, are AnimateDiff's 8 and the largest of 32,
    16, 8, ... dividing every width)."""
    import re

    widths: dict[int, int] = {}
    modules: dict[int, set[int]] = {}
    layers: set[int] = set()
    mid: set[int] = set()
    max_len = 32
    for k, v in state.items():
        m = re.match(r"down_blocks\.(\d+)\.motion_modules\.(\d+)\.", k)
        if m:
            modules.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
            if k.endswith("proj_in.weight"):
                widths[int(m.group(1))] = int(v.shape[0])
            t = re.match(r"down_blocks\.0\.motion_modules\.0\.transformer_blocks\.(\d+)\.", k)
            if t:
                layers.add(int(t.group(1)))
            if k.endswith("pos_embed.pe"):
                max_len = int(v.shape[1])
        m = re.match(r"mid_block\.motion_modules\.(\d+)\.", k)
        if m:
            mid.add(int(m.group(1)))
    if not widths:
        raise ModelError("not a motion adapter (no down_blocks.N.motion_modules weights)")
    channels = tuple(widths[i] for i in sorted(widths))
    groups = next(g for g in (32, 16, 8, 4, 2, 1) if all(c % g == 0 for c in channels))
    return {"block_out_channels": channels, "motion_layers_per_block": len(modules[0]),
            "motion_transformer_layers_per_block": max(len(layers), 1), "motion_num_attention_heads": 8,
            "motion_norm_num_groups": groups, "motion_max_seq_length": max_len, "use_motion_mid_block": bool(mid),
            "motion_mid_block_layers_per_block": max(len(mid), 1)}


def read_motion_adapter(path: Path, dtype: Any) -> Any:
    """An AnimateDiff MotionAdapter from a diffusers folder or one .safetensors file (diffusers or
    the original AnimateDiff names); pickles (.ckpt) are refused."""
    from diffusers import MotionAdapter

    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise ModelError(f"{path.name} is a pickle motion adapter ({path.suffix}): imagebash loads only "
                         ".safetensors; use the adapter's .safetensors release (or its diffusers folder)")
    try:
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ModelError(f"{path.name} is not a motion adapter folder (no config.json)")
            return MotionAdapter.from_pretrained(str(path), local_files_only=True, use_safetensors=True, dtype=dtype)
        from diffusers.loaders.single_file_utils import convert_animatediff_checkpoint_to_diffusers

        from app.engine.families.loading import fill, read_tensors

        state = read_tensors(path)
        if any(".temporal_transformer." in k or ".attention_blocks." in k for k in state):
            pe = {k: v for k, v in state.items() if k.endswith("pos_encoder.pe")}
            state = convert_animatediff_checkpoint_to_diffusers(state)
            for k, v in pe.items():  # the sinusoidal tables: their length is the adapter's frame limit
                new = (k.replace(".temporal_transformer", "").replace(".attention_blocks.0", ".attn1")
                       .replace(".attention_blocks.1", ".attn2"))
                state.setdefault(new.replace("attn1.pos_encoder.pe", "pos_embed.pe"), v)
        state = {k: v for k, v in state.items() if not k.endswith("pos_encoder.pe")}
        config = _motion_config(state)
        adapter = MotionAdapter(**config)
        own = adapter.state_dict()
        for k in [k for k in own if k.endswith("pos_embed.pe")]:
            state.setdefault(k, own[k])  # fixed sinusoids; files converted without them
            if tuple(state[k].shape) != tuple(own[k].shape):
                state[k] = own[k]
        return fill(adapter, state, dtype, path.name)
    except ModelError:
        raise
    except LoadError as exc:
        raise ModelError(str(exc)) from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot load motion adapter {path.name}: {first[:200]}") from exc


def _plain_unet(unet: Any) -> Any:
    """A copy-free view of a U-Net's base weights as a plain UNet2DConditionModel (LoRA layers an
    SD model carries are left out: the motion U-Net gets the stack itself)."""
    import torch
    from diffusers import UNet2DConditionModel

    state = {k.replace(".base_layer.", "."): v for k, v in unet.state_dict().items() if ".lora_" not in k}
    with torch.device("meta"):
        plain = UNet2DConditionModel.from_config(unet.config)
    plain.load_state_dict(state, strict=True, assign=True)
    return plain


def animatediff_pipeline(manager: ModelManager, entry: Entry, adapter: Path, task: str) -> tuple[Any, Entry]:
    """(the AnimateDiff pipeline for `task` over an SD 1.5 entry's VAE and text encoder and a
    motion U-Net built from its U-Net plus `adapter`, the entry holding that motion U-Net's LoRAs);
    built once per adapter file and kept beside the entry."""
    import types

    import diffusers

    fp = fingerprint(adapter)
    with entry.lock:
        motions = entry.state.setdefault("motion", {})
        if fp not in motions:
            motion = read_motion_adapter(adapter, manager.dtype)
            unet = entry.pipe.unet
            motion_unet = diffusers.UNetMotionModel.from_unet2d(_plain_unet(unet), motion)
            motion_unet = motion_unet.to(device=entry.device, dtype=unet.dtype).eval()
            scheduler = diffusers.DDIMScheduler.from_config(entry.pipe.scheduler.config, beta_schedule="linear",
                                                            clip_sample=False, timestep_spacing="linspace",
                                                            steps_offset=1)
            pipe = diffusers.AnimateDiffPipeline(vae=entry.pipe.vae, text_encoder=entry.pipe.text_encoder,
                                                 tokenizer=entry.pipe.tokenizer, unet=motion_unet,
                                                 motion_adapter=motion, scheduler=scheduler)
            pipe.set_progress_bar_config(disable=True)
            holder = Entry(f"{entry.key}|motion|{fp}", entry.source, entry.family,
                           types.SimpleNamespace(unet=motion_unet), entry.device, 0, variant=entry.variant,
                           lock=entry.lock)
            motions[fp] = {"txt2video": pipe, "entry": holder}
            manager.motion_builds = getattr(manager, "motion_builds", 0) + 1
        built = motions[fp]
        if task not in built:
            built[task] = diffusers.AnimateDiffVideoToVideoPipeline.from_pipe(built["txt2video"])
            built[task].set_progress_bar_config(disable=True)
        return built[task], built["entry"]
