"""A training run as a workflow: the one-node graph the Train LoRA dialog and `imagebash
train-lora --engine URL` submit to an engine (in this process or a remote one).

Every setting travels: the node's own ports carry what they declare, and the whole TrainConfig
(warm-up, noise offset, min-SNR, captions, ...) goes in a TOML file the node reads through its
`config` port, a file like any other input, so a remote engine receives it by hash with the
dataset. Paths that are the client's own (the data folder, the base model, the output file) are
node parameters, never in the TOML, so the remote client can upload or redirect them.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

from app.graph.model import Graph, NodeInstance
from app.paths import cache_dir
from app.training.config import TrainConfig

TRAIN_NODE = "imagebash.training.train_lora"
#: Settings that are node parameters or machine-specific, never written into the TOML file.
_NOT_IN_TOML = {"data", "base", "out", "device", "cache_dir", "checkpoint_dir", "extra"}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def config_toml(cfg: TrainConfig) -> str:
    """The settings of `cfg` as TOML (flat keys under [train], what `load_toml` reads)."""
    lines = ["[train]"]
    for key, value in cfg.to_dict().items():
        if key not in _NOT_IN_TOML:
            lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def write_config(cfg: TrainConfig, folder: pathlib.Path | None = None) -> pathlib.Path:
    """The TOML file of `cfg`, named by its content (a run with the same settings reuses it)."""
    text = config_toml(cfg)
    folder = folder or cache_dir() / "train-configs"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{hashlib.sha256(text.encode()).hexdigest()[:16]}.toml"
    if not path.is_file():
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return path


def training_graph(cfg: TrainConfig, preset: str = "", resume: bool = False) -> Graph:
    """The one-node workflow that trains `cfg` (see the module docstring)."""
    params: dict[str, Any] = {
        "folder": cfg.data, "base": cfg.base, "trigger": cfg.trigger, "network": cfg.network,
        "targets": cfg.targets, "rank": cfg.rank, "alpha": cfg.alpha, "steps": cfg.max_steps,
        "epochs": cfg.epochs, "learning_rate": cfg.learning_rate, "batch_size": cfg.batch_size,
        "resolution": cfg.resolution, "train_text_encoder": cfg.train_text_encoder, "seed": cfg.seed,
        "save_every": cfg.save_every, "sample_every": cfg.sample_every,
        "sample_prompts": "\n".join(cfg.sample_prompts), "sample_steps": cfg.sample_steps,
        "preset": preset, "resume": resume, "config": str(write_config(cfg)),
    }
    if cfg.out:
        params["out"] = cfg.out
    g = Graph()
    g.add_node(NodeInstance("train", TRAIN_NODE, params))
    return g
