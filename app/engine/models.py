"""The model manager: every loaded pipeline lives here, loaded once and shared.

Pipelines are cached by (source, dtype, config) under a memory budget; when a load goes over it
the least recently used pipeline moves to the CPU (on a GPU) and, if still over, is dropped. A
`Model` wire value is only a handle (its key and source), so a handle whose pipeline was dropped
simply reloads it. Two workflows naming the same file get the same pipeline object, and
per-pipeline state (loaded LoRA adapters) lives beside it in the entry.

Sources: a single-file `.safetensors` checkpoint (original LDM layout; the component configs
come from `resources/model_configs/<family>/` or an explicit config folder, so it works
offline), a diffusers folder, or a hub repo id (downloaded with progress when online). Getting a
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
from app.engine.fingerprint import fingerprint
from app.engine.model_configs import shipped_config
from app.engine.probe import Probe, ProbeError, probe

Progress = Callable[[float, str], None]
PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")


class ModelError(ValueError):
    """A model that cannot be loaded, with a message saying what to do about it."""


@dataclass
class Entry:
    """One loaded base pipeline and what hangs off it."""

    key: str
    source: str
    family: str
    pipe: Any
    device: str
    nbytes: int
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


#: Components a pipeline is built without (`safety_checker=None`): their weights are never read.
_UNUSED_COMPONENTS = {"safety_checker", "feature_extractor", "image_encoder"}


def refuse_pickle_folder(path: Path) -> None:
    """A diffusers folder whose weights are only pickles (.bin/.ckpt): refused, like a .ckpt file."""
    index = json.loads((path / "model_index.json").read_text(encoding="utf-8"))
    for comp in sorted(p for p in path.iterdir()
                       if p.is_dir() and p.name in index and p.name not in _UNUSED_COMPONENTS):
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


def unet_in_channels(path: Path) -> int:
    """Input channels of a single-file checkpoint's UNet (9 for inpainting models)."""
    h = header(path)
    key = "model.diffusion_model.input_blocks.0.0.weight"
    return int(h.shape(key)[1]) if key in h else 4


def detect_family(path: Path) -> str:
    """sd1 / sd2 / sdxl, from a diffusers folder's configs or a checkpoint's key layout."""
    if path.is_dir():
        index = path / "model_index.json"
        if not index.is_file():
            raise ModelError(f"{path} is a folder but not a diffusers model (no model_index.json)")
        info = json.loads(index.read_text(encoding="utf-8"))
        if "text_encoder_2" in info or "XL" in str(info.get("_class_name", "")):
            return "sdxl"
        unet_cfg = path / "unet" / "config.json"
        if unet_cfg.is_file() and json.loads(unet_cfg.read_text(encoding="utf-8")).get("cross_attention_dim") == 1024:
            return "sd2"
        return "sd1"
    h = header(path)
    if h.has_prefix("conditioner.embedders.1."):
        return "sdxl"
    if h.has_prefix("cond_stage_model.model."):
        return "sd2"
    if h.has_prefix("cond_stage_model.transformer."):
        return "sd1"
    if h.looks_like_lora():
        raise ModelError(f"{path.name} is a LoRA, not a base model: load it with a LoRA node")
    raise ModelError(f"{path.name} is not a Stable Diffusion 1.x/2.x/XL checkpoint (no UNet/text-encoder "
                     "keys in the original layout)")


def sd2_prediction(path: Path, explicit_config: str | None) -> tuple[str | None, str]:
    """(scheduler prediction type to force or None, warning) for an SD 2.x single file.

    The shipped SD 2.x config is the 768-v model (v-prediction). A checkpoint's SAI model-spec
    metadata (`modelspec.prediction_type`) says which it is when present; the weights themselves
    do not say so reliably, so without metadata the assumption is stated instead of guessed.
    """
    if explicit_config:
        return None, ""
    declared = str(header(path).metadata.get("modelspec.prediction_type", "")).lower()
    if declared in ("v", "v_prediction", "v-prediction"):
        return "v_prediction", ""
    if declared in ("epsilon", "eps"):
        return "epsilon", ""
    return None, (f"{path.name}: SD 2.x checkpoint assumed to be a 768 v-prediction model (like "
                  "stable-diffusion-2-1); for an epsilon model (512-base, most SD 2 fine-tunes at 512) "
                  "set the Load Model node's `config` port to a diffusers folder of that model, "
                  "e.g. stabilityai/stable-diffusion-2-1-base")


def pipeline_class(family: str, task: str = "txt2img") -> Any:
    import diffusers

    names = {
        ("sdxl", "txt2img"): "StableDiffusionXLPipeline",
        ("sdxl", "img2img"): "StableDiffusionXLImg2ImgPipeline",
        ("sdxl", "inpaint"): "StableDiffusionXLInpaintPipeline",
        ("sd", "txt2img"): "StableDiffusionPipeline",
        ("sd", "img2img"): "StableDiffusionImg2ImgPipeline",
        ("sd", "inpaint"): "StableDiffusionInpaintPipeline",
    }
    return getattr(diffusers, names[("sdxl" if family == "sdxl" else "sd", task)])


def config_folder(family: str, explicit: str | os.PathLike[str] | None = None) -> Path:
    """The diffusers config folder for single-file loading: explicit, else the shipped one."""
    if not explicit:
        return shipped_config(family)
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


def read_pipeline(path: Path, family: str, config: str | None, dtype: Any) -> tuple[Any, list[str]]:
    """(pipeline on the CPU in `dtype`, warnings) for a local diffusers folder or single file.

    The one reader of base models: the model manager (shared pipelines) and the trainer (a
    private copy it injects adapters into) both call it, so every rule applies to both: pickle
    folders refused, the fp16 weight variant of a half-precision hub download, the offline
    configs of single files, 9-channel inpainting U-Nets, and the SD 2.x prediction type from the
    file's metadata (or a warning stating the v-prediction assumption). Placement is the caller's.
    """
    cls = pipeline_class(family)
    kwargs: dict[str, Any] = {"dtype": dtype}
    if family != "sdxl":
        kwargs.update(safety_checker=None, requires_safety_checker=False)
    warnings: list[str] = []
    try:
        if path.is_dir():
            refuse_pickle_folder(path)
            pipe = cls.from_pretrained(str(path), local_files_only=True, use_safetensors=True,
                                       variant=folder_variant(path), **kwargs)
            return pipe, warnings
        folder = config_folder(family, config)
        in_channels = unet_in_channels(path)
        if in_channels != 4:  # an inpainting checkpoint (9 channels: latents, mask, masked image)
            from diffusers import UNet2DConditionModel

            kwargs["unet"] = UNet2DConditionModel.from_single_file(
                str(path), config=str(folder), subfolder="unet", local_files_only=True,
                in_channels=in_channels, dtype=dtype)
        pipe = cls.from_single_file(str(path), config=str(folder), local_files_only=True, **kwargs)
        if family == "sd2":
            prediction, warning = sd2_prediction(path, config)
            if prediction and pipe.scheduler.config.get("prediction_type") != prediction:
                pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config,
                                                                  prediction_type=prediction)
            if warning:
                warnings.append(warning)
        return pipe, warnings
    except ModelError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelError(f"cannot load {path.name} as {family}: {first[:200]}") from exc


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
        raise ModelError(f"model file not found: {source}")
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

    def _default_budget(self) -> int:
        return int(free_memory(self.device) * 0.75)

    # keys and handles ----------------------------------------------------------------------
    def key_for(self, path: Path, config: str | None) -> str:
        dtype = str(self.dtype).replace("torch.", "")
        stamp = ""
        if path.is_file():  # a file replaced on disk is a different model
            st = path.stat()
            stamp = f"|{st.st_size}:{st.st_mtime_ns}"
        elif path.is_dir():  # so is a folder whose files changed (stat only)
            stamp = "|" + fingerprint(path)
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
             progress: Progress | None = None, search: list[Path] | None = None) -> Entry:
        """The entry for `source`, loading it if it is not in memory (fetching it first: see `fetch`)."""
        progress = progress or (lambda f, t: None)
        path, from_hub = self._fetch(source, progress, search)
        cfg = str(Path(config).resolve()) if config else None
        key = self.key_for(path, cfg)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._touch(entry)
                progress(1.0, "model already loaded")
                return entry
            self._drop_stale(path, key)
            family = detect_family(path)
            progress(0.8 if from_hub else 0.1, f"loading {family} model {path.name}")
            pipe, warnings = read_pipeline(path, family, cfg, self.dtype)
            self.loads += 1
            progress(0.9, f"moving to {self.device}")
            pipe = self._place(pipe)
            entry = Entry(key, str(path), family, pipe, self.device, _nbytes(pipe))
            if warnings:
                entry.state["warnings"] = warnings
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

    def _place(self, pipe: Any) -> Any:
        pipe.set_progress_bar_config(disable=True)  # progress goes to the node's events instead
        if getattr(self.settings, "cpu_offload", False) and self.device.startswith("cuda"):
            pipe.enable_model_cpu_offload(device=self.device)
            return pipe
        return pipe.to(self.device)

    # lookup, LRU ---------------------------------------------------------------------------
    def entry(self, model: Any, progress: Progress | None = None) -> Entry:
        """The entry behind a Model handle, reloading it when it was evicted."""
        with self._lock:
            entry = self._entries.get(model.key)
            if entry is not None:
                if entry.device != self.device:
                    entry.pipe = self._place(entry.pipe)
                    entry.device = self.device
                    self._enforce_budget(keep=entry.key)
                self._touch(entry)
                return entry
        return self.load(model.source, model.extra.get("config"), progress)

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

    def loaded(self) -> list[str]:
        return list(self._entries)

    def entries(self) -> list[Entry]:
        return list(self._entries.values())

    def derived(self, entry: Entry, task: str) -> Any:
        """An img2img/inpaint pipeline sharing the base pipeline's modules (no copy)."""
        if task == "txt2img":
            return entry.pipe
        with entry.lock:
            if task not in entry.derived:
                derived = pipeline_class(entry.family, task).from_pipe(entry.pipe)
                derived.set_progress_bar_config(disable=True)
                entry.derived[task] = derived
            return entry.derived[task]


def manager_factory(engine: Any) -> ModelManager:
    return ModelManager(getattr(engine, "settings", None))
