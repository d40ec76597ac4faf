"""Training settings: one dataclass, filled from defaults, a preset, a TOML file and the command line.

Order of precedence (later wins): dataclass defaults < preset < `--config file.toml` < explicit
options. Unknown TOML keys are an error naming the key, so a typo never silently trains with a
default. Presets live in `resources/presets/*.toml` and use the same keys.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import sys
from dataclasses import dataclass, field
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib

from app.paths import resource
from nodes.registry import parse_bool

NETWORKS = ("lora", "dora")
TARGETS = ("attention", "attention+ff")
OPTIMIZERS = ("adamw", "adamw8bit")
PRECISIONS = ("auto", "no", "fp16", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
TIMESTEP_SAMPLING = ("auto", "uniform", "sigmoid", "logit_normal")
WEIGHTINGS = ("auto", "none", "sigma_sqrt", "cosmap")
BASE_PRECISIONS = ("auto", "full", "fp8", "nf4")
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial")


_BLOCKS = re.compile(r"\w+:\d+(-\d+)?(\+\d+(-\d+)?)*")
_SPANS = re.compile(r"(\d+)-(\d+)")


class ConfigError(ValueError):
    """A setting is missing, unknown or out of range; the message names it."""


@dataclass
class TrainConfig:
    """Everything one training run needs; the defaults suit a style LoRA on SD 1.5."""

    data: str = ""
    base: str = ""
    out: str = ""
    trigger: str = ""
    default_caption: str = ""
    caption_extensions: tuple[str, ...] = (".txt", ".caption")
    resolution: int = 512
    min_image_size: int = 64
    network: str = "lora"
    rank: int = 16
    alpha: float = 16.0
    targets: str = "attention"
    train_text_encoder: bool = False
    learning_rate: float = 1e-4
    text_encoder_lr: float = 5e-5
    lr_scheduler: str = "cosine"
    warmup_steps: int = 0
    optimizer: str = "adamw"
    weight_decay: float = 1e-2
    max_grad_norm: float = 1.0
    max_steps: int = 0  # 0: derived from epochs
    epochs: int = 10
    batch_size: int = 1  # per process: the global batch is batch_size x gpus
    grad_accum: int = 1
    gpus: int = 1  # data-parallel processes (`app.training.distributed`); 1: this process alone
    gradient_checkpointing: bool = False
    mixed_precision: str = "auto"
    device: str = "auto"  # auto: cuda, then mps, then cpu
    caption_dropout: float = 0.0
    noise_offset: float = 0.0
    min_snr_gamma: float = 0.0  # 0: off (5 is the usual value)
    # flow matching (Flux.1, SD 3.5, Qwen-Image); "auto"/0 take the family's reference settings
    timestep_sampling: str = "auto"
    shift: float = 0.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    weighting: str = "auto"
    guidance: float = 0.0  # Flux dev's distilled guidance while training; 0: the family's (1.0)
    blocks: str = ""  # limit training to block ranges, e.g. "double:0-9, single:20-37"; "": all
    base_precision: str = "auto"  # how the frozen base is stored: full, fp8 (weights), nf4 (CUDA)
    family: str = ""  # a preset's family: training another family's base with it is an error
    seed: int = 42
    save_every: int = 0  # steps between checkpoints; 0: only at the end and on stop
    sample_every: int = 0  # steps between sample images; 0: none
    sample_prompts: tuple[str, ...] = ()
    sample_seed: int = 1234
    sample_steps: int = 20
    sample_size: int = 0  # 0: the training resolution
    cache_latents: bool = True
    cache_dir: str = ""  # "" : the user cache folder
    checkpoint_dir: str = ""  # "" : beside the output file, <stem>_checkpoints
    title: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def scale(self) -> float:
        """The effective LoRA scale alpha / rank: learning rates transfer between tools only with it."""
        return self.alpha / self.rank

    def validate(self) -> TrainConfig:
        """Raise ConfigError naming the first bad setting; returns self for chaining."""
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)

        need(self.network in NETWORKS, f"network must be one of {', '.join(NETWORKS)}, got {self.network!r}")
        need(self.targets in TARGETS, f"targets must be one of {', '.join(TARGETS)}, got {self.targets!r}")
        need(self.optimizer in OPTIMIZERS, f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        need(self.mixed_precision in PRECISIONS,
             f"mixed_precision must be one of {', '.join(PRECISIONS)}, got {self.mixed_precision!r}")
        need(self.device in DEVICES or self.device.startswith("cuda:"),
             f"device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        need(self.lr_scheduler in SCHEDULERS,
             f"lr_scheduler must be one of {', '.join(SCHEDULERS)}, got {self.lr_scheduler!r}")
        need(self.rank >= 1, f"rank must be at least 1, got {self.rank}")
        need(self.alpha > 0, f"alpha must be positive, got {self.alpha}")
        need(self.resolution >= 64 and self.resolution % 64 == 0,
             f"resolution must be a multiple of 64 (at least 64), got {self.resolution}")
        need(self.learning_rate > 0, f"learning_rate must be positive, got {self.learning_rate}")
        need(self.batch_size >= 1, f"batch_size must be at least 1, got {self.batch_size}")
        need(self.grad_accum >= 1, f"grad_accum must be at least 1, got {self.grad_accum}")
        need(self.gpus >= 1, f"gpus must be at least 1, got {self.gpus}")
        need(self.max_steps > 0 or self.epochs > 0, "set max_steps or epochs to more than 0")
        need(self.max_steps >= 0 and self.epochs >= 0, "max_steps and epochs cannot be negative")
        need(0.0 <= self.caption_dropout < 1.0, f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        need(self.noise_offset >= 0, f"noise_offset cannot be negative, got {self.noise_offset}")
        need(self.min_snr_gamma >= 0, f"min_snr_gamma cannot be negative, got {self.min_snr_gamma}")
        need(self.warmup_steps >= 0, f"warmup_steps cannot be negative, got {self.warmup_steps}")
        need(self.timestep_sampling in TIMESTEP_SAMPLING,
             f"timestep_sampling must be one of {', '.join(TIMESTEP_SAMPLING)}, got {self.timestep_sampling!r}")
        need(self.weighting in WEIGHTINGS, f"weighting must be one of {', '.join(WEIGHTINGS)}, got {self.weighting!r}")
        need(self.base_precision in BASE_PRECISIONS,
             f"base_precision must be one of {', '.join(BASE_PRECISIONS)}, got {self.base_precision!r}")
        need(self.shift >= 0 and self.guidance >= 0 and self.logit_std > 0,
             "shift and guidance cannot be negative, logit_std must be positive")
        bad = [b.strip() for b in self.blocks.split(",") if (b.strip() and not _BLOCKS.fullmatch(b.strip()))
               or any(int(lo) > int(hi) for lo, hi in _SPANS.findall(b))]
        need(not bad, f"blocks: {bad[0] if bad else ''!r} is not group:first-last (e.g. \"double:0-9, single:20-37\")")
        need(self.save_every >= 0 and self.sample_every >= 0, "save_every and sample_every cannot be negative")
        need(all(e.startswith(".") for e in self.caption_extensions),
             f"caption_extensions must start with a dot, got {list(self.caption_extensions)}")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["caption_extensions"] = list(self.caption_extensions)
        d["sample_prompts"] = list(self.sample_prompts)
        return d

    def replace(self, **changes: Any) -> TrainConfig:
        return apply(self, changes, source="options")


_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TUPLE_FIELDS = {"caption_extensions", "sample_prompts"}


def apply(cfg: TrainConfig, values: dict[str, Any], source: str) -> TrainConfig:
    """A copy of `cfg` with `values` set; unknown keys or wrong types raise ConfigError naming `source`."""
    changes: dict[str, Any] = {}
    for key, value in values.items():
        name = key.replace("-", "_")
        if name not in _FIELDS or name == "extra":
            raise ConfigError(f"{source}: unknown setting '{key}' (known: {', '.join(sorted(_FIELDS))})")
        changes[name] = _coerce(name, value, source)
    res = changes.get("resolution")
    if res is not None and "min_image_size" not in changes and res < cfg.min_image_size:
        changes["min_image_size"] = res  # a 1024 px preset trained at 512 takes 512 px images
    return dataclasses.replace(cfg, **changes)


def _coerce(name: str, value: Any, source: str) -> Any:
    default = _FIELDS[name].default
    try:
        if name in _TUPLE_FIELDS:
            if isinstance(value, str):
                value = [value]
            return tuple(str(v) for v in value)
        if isinstance(default, bool):
            return parse_bool(value)
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if isinstance(default, float):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if isinstance(default, str):
            if not isinstance(value, (str, pathlib.PurePath)):
                raise ValueError
            return str(value)
    except (TypeError, ValueError):
        kind = type(default).__name__ if name not in _TUPLE_FIELDS else "list of strings"
        raise ConfigError(f"{source}: '{name}' expects {kind}, got {value!r}") from None
    return value


def load_toml(path: str | pathlib.Path, base: TrainConfig | None = None) -> TrainConfig:
    """Settings from a TOML file (flat keys, or under a [train] table) on top of `base`."""
    path = pathlib.Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if isinstance(data.get("train"), dict):
        data = {**{k: v for k, v in data.items() if k != "train"}, **data["train"]}
    data.pop("name", None)
    data.pop("description", None)
    return apply(base or TrainConfig(), data, source=str(path))


def preset_dir() -> pathlib.Path:
    return resource("presets")


def lora_out_path(cfg: TrainConfig) -> pathlib.Path:
    """Where the trained LoRA goes: `out`, else the models folder's loras/ (so the LoRA dropdowns
    list it), named after the data folder. One rule for the CLI, the node and the dialog."""
    from app.paths import models_dirs

    if cfg.out:
        p = pathlib.Path(cfg.out).expanduser()
        return p if p.suffix == ".safetensors" else p.with_suffix(".safetensors")
    return models_dirs()[0] / "loras" / f"{pathlib.Path(cfg.data).name or 'lora'}.safetensors"


def checkpoint_root(cfg: TrainConfig) -> pathlib.Path:
    """The folder of a run's checkpoints and samples: `checkpoint_dir`, else `<out stem>_checkpoints`."""
    if cfg.checkpoint_dir:
        return pathlib.Path(cfg.checkpoint_dir).expanduser()
    out = lora_out_path(cfg)
    return out.with_name(out.stem + "_checkpoints")


def preset_names() -> list[str]:
    """Preset file stems, e.g. 'style-sd15', 'style-sdxl'."""
    d = preset_dir()
    return sorted(p.stem for p in d.glob("*.toml")) if d.is_dir() else []


def load_preset(name: str, base: TrainConfig | None = None) -> TrainConfig:
    """A preset by file stem (or a path to a TOML file)."""
    p = pathlib.Path(name)
    if p.suffix != ".toml" or not p.is_file():
        p = preset_dir() / f"{name}.toml"
    if not p.is_file():
        raise ConfigError(f"unknown preset '{name}' (presets: {', '.join(preset_names()) or 'none'})")
    return load_toml(p, base)
