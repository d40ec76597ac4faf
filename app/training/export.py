"""Write a trained adapter as kohya/A1111/ComfyUI `.safetensors` and as a diffusers/peft file.

Our own exporter, because diffusers' `convert_state_dict_to_kohya` writes alpha = rank whatever
`lora_alpha` was, uses the SDXL prefix `lora_te1_` for SD 1.5 and never reaches its DoRA branch.
Here:
- U-Net keys for SD 1.x are kohya's diffusers-style names (`lora_unet_down_blocks_0_attentions_0_...`),
  for SDXL the SGM names kohya, A1111 and ComfyUI expect (`lora_unet_input_blocks_4_1_...`,
  `middle_block_1`, `output_blocks_0_1`);
- text encoders are `lora_te_` (SD 1.x) or `lora_te1_` / `lora_te2_` (SDXL), always with the
  `text_model_` level that transformers 5 no longer has but every loader looks for;
- `.alpha` is the real lora_alpha, DoRA magnitudes are `dora_scale` of shape (1, in);
- metadata: kohya `ss_*`, `modelspec.*`, all strings, and `sshs_model_hash` (sha256 of the tensor
  data, as kohya computes it).
The peft file keeps peft names (`unet.<module>.lora_A.weight`) with diffusers' adapter metadata.
Its alpha/rank scale is folded into `lora_B` and `lora_alpha` written as the rank, so every
loader gives the same weights whether it reads diffusers' metadata or, like many, assumes
alpha = rank when a peft file has no alpha.

A DoRA gets no peft file. The trainer's DoRA is input-axis, W' = (W + dW) * (m / ||W + dW||_col)
with a magnitude per input channel (what kohya, LyCORIS and ComfyUI use); peft's and diffusers'
DoRA is output-axis, W' = (m / ||W + dW||_row) * (W + dW). To match, peft would need a dW' with
W + dW' = D1 (W + dW) D2 for diagonal D1, D2: full-rank in general, not the rank r of a LoRA.
Written with (1, in) magnitudes, diffusers' `load_lora_weights` refuses the file with a size
mismatch; written as output-axis magnitudes it would load a different model. So the export
says why in its log and writes the kohya file only, which imagebash and ComfyUI load exactly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pathlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.engine.families import get_family
from app.training.adapters import LayerWeights
from nodes.diffusion.unet_names import ldm_prefixes, to_ldm_name

_log = logging.getLogger(__name__)

NO_DORA_TWIN = ("this DoRA scales input channels (kohya/LyCORIS/ComfyUI form), which diffusers/peft DoRA "
                "(output channels) cannot express, so there is no diffusers/peft file; load the kohya "
                ".safetensors file itself (imagebash, ComfyUI).")
"""Why an input-axis DoRA gets no diffusers/peft twin: the reason the export logs."""


@dataclass
class AdapterExport:
    """What the exporter needs: the family, the adapted layers per model and the U-Net layout."""

    family: str  # the family's name (app.engine.families), one with a TrainingSpec
    unet: dict[str, LayerWeights]
    text_encoders: list[dict[str, LayerWeights]] = field(default_factory=list)
    layers_per_block: int = 2
    up_block_types: tuple[str, ...] = ()
    targets: dict[str, list[str]] = field(default_factory=dict)  # "unet"/"te" -> peft target names

    @property
    def is_dora(self) -> bool:
        """Whether any adapted layer, U-Net or text encoder, carries a DoRA magnitude."""
        return any(w.magnitude is not None for layers in (self.unet, *self.text_encoders) for w in layers.values())


# U-Net names -------------------------------------------------------------------------------------
def sgm_unet_name(name: str, layers_per_block: int, up_block_types: tuple[str, ...] = ()) -> str:
    """A diffusers U-Net module name in SGM/LDM naming (as SDXL checkpoints and kohya use).

    Through `nodes.diffusion.unet_names`, the table the LoRA reader resolves such keys with, so
    every key written here reads back to the module it came from.
    """
    sgm = to_ldm_name(name, ldm_prefixes(int(layers_per_block), tuple(up_block_types)))
    if sgm is None:
        raise ValueError(f"cannot name U-Net layer '{name}' in SGM form")
    return sgm


def kohya_unet_key(name: str, family: str, layers_per_block: int = 2, up_block_types: tuple[str, ...] = ()) -> str:
    if get_family(family).training.sgm_lora_names:
        name = sgm_unet_name(name, layers_per_block, up_block_types)
    return "lora_unet_" + name.replace(".", "_")


def kohya_te_key(name: str, family: str, index: int) -> str:
    """`lora_te_` (one encoder) or `lora_te{index+1}_` (SDXL's two) + the name with its `text_model_` level."""
    if name.startswith("text_model."):
        name = name[len("text_model."):]
    prefix = f"lora_te{index + 1}_" if get_family(family).training.numbered_te_prefixes else "lora_te_"
    return prefix + "text_model_" + name.replace(".", "_")


# state dicts -------------------------------------------------------------------------------------
def kohya_state_dict(a: AdapterExport) -> dict[str, Any]:
    """Tensors in kohya form: `<key>.lora_down.weight`, `.lora_up.weight`, `.alpha`, `.dora_scale`."""
    import torch

    out: dict[str, Any] = {}

    def put(key: str, w: LayerWeights) -> None:
        if key + ".lora_down.weight" in out:
            raise ValueError(f"two layers map to the same kohya key {key}")
        out[key + ".lora_down.weight"] = w.down.contiguous()
        out[key + ".lora_up.weight"] = w.up.contiguous()
        out[key + ".alpha"] = torch.tensor(float(w.alpha), dtype=torch.float32)
        if w.magnitude is not None:
            out[key + ".dora_scale"] = w.magnitude.reshape(1, -1).contiguous()

    for name, w in a.unet.items():
        put(kohya_unet_key(name, a.family, a.layers_per_block, a.up_block_types), w)
    for i, te in enumerate(a.text_encoders):
        for name, w in te.items():
            put(kohya_te_key(name, a.family, i), w)
    return out


def _te_prefix(i: int) -> str:
    return "text_encoder" if i == 0 else f"text_encoder_{i + 1}"


def peft_state_dict(a: AdapterExport) -> dict[str, Any]:
    """Tensors in diffusers' peft form: `unet.<module>.lora_A.weight` and so on (scale in lora_B).

    Plain LoRA only: an input-axis DoRA has no peft form (see the module docstring).
    """
    if a.is_dora:
        raise ValueError(NO_DORA_TWIN)
    out: dict[str, Any] = {}
    groups = [("unet", a.unet)] + [(_te_prefix(i), te) for i, te in enumerate(a.text_encoders)]
    for prefix, layers in groups:
        for name, w in layers.items():
            out[f"{prefix}.{name}.lora_A.weight"] = w.down.contiguous()
            out[f"{prefix}.{name}.lora_B.weight"] = (w.up * (w.alpha / w.rank)).contiguous()
    return out


def peft_adapter_metadata(a: AdapterExport) -> dict[str, Any]:
    """diffusers' `lora_adapter_metadata`: the LoraConfig of each part, keys prefixed by the part."""
    out: dict[str, Any] = {}
    groups = [("unet", a.unet, a.targets.get("unet", []))]
    groups += [(_te_prefix(i), te, a.targets.get("te", [])) for i, te in enumerate(a.text_encoders)]
    for prefix, layers, targets in groups:
        if not layers:
            continue
        first = next(iter(layers.values()))
        for k, v in (("r", first.rank), ("lora_alpha", first.rank), ("target_modules", sorted(targets)),
                     ("use_dora", first.magnitude is not None), ("init_lora_weights", True)):
            out[f"{prefix}.{k}"] = v
    return out


# files -------------------------------------------------------------------------------------------
def tensor_hash(tensors: Mapping[str, Any]) -> str:
    """sha256 of the tensor data as safetensors lays it out (kohya's `sshs_model_hash`)."""
    from safetensors.torch import save

    blob = save(dict(tensors))
    n = int.from_bytes(blob[:8], "little")
    return hashlib.sha256(blob[8 + n:]).hexdigest()


def write_safetensors(path: str | pathlib.Path, tensors: Mapping[str, Any], metadata: Mapping[str, Any]) -> str:
    """Write atomically with every metadata value as a string; returns the content hash."""
    from safetensors.torch import save_file

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = tensor_hash(tensors)
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(dict(tensors), str(tmp), metadata=meta | {"sshs_model_hash": digest,
                                                          "sshs_legacy_hash": digest[:8],
                                                          "modelspec.hash_sha256": "0x" + digest})
    tmp.replace(path)
    return digest


def peft_path_for(path: str | pathlib.Path) -> pathlib.Path:
    """Where the diffusers/peft twin of a kohya file goes: `name.peft.safetensors` beside it."""
    p = pathlib.Path(path)
    return p.with_name(p.stem + ".peft.safetensors")


def forms_for(a: Any) -> tuple[Callable[[Any], dict[str, Any]], Callable[[Any], dict[str, Any]],
                               Callable[[Any], dict[str, Any]]]:
    """(kohya state dict, peft state dict, peft metadata) writers for an export: the U-Net ones
    here, the transformer families' ones in `app.training.export_dit`."""
    if isinstance(a, AdapterExport):
        return kohya_state_dict, peft_state_dict, peft_adapter_metadata
    from app.training import export_dit

    return export_dit.kohya_state_dict, export_dit.peft_state_dict, export_dit.peft_adapter_metadata


def export_lora(a: AdapterExport, path: str | pathlib.Path, metadata: Mapping[str, str],
                log: Callable[[str], None] | None = None) -> tuple[pathlib.Path, pathlib.Path | None]:
    """Write the kohya file at `path` and, for a plain LoRA, the peft twin beside it.

    Returns (kohya path, twin path or None). For a DoRA `log` (default: this module's logger)
    gets one line saying why there is no twin, and a twin left by an earlier export of the same
    name is deleted: it would load as a different adapter.
    """
    kohya, peft, peft_meta_of = forms_for(a)
    path = pathlib.Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    write_safetensors(path, kohya(a), metadata)
    twin = peft_path_for(path)
    if a.is_dora:
        stale = twin.is_file()
        twin.unlink(missing_ok=True)
        (log or _log.warning)(f"{path.name}: no {twin.name} written{' (old one deleted)' if stale else ''}: "
                              + NO_DORA_TWIN)
        return path, None
    peft_meta = {"format": "pt", "lora_adapter_metadata": json.dumps(peft_meta_of(a), sort_keys=True)}
    peft_meta |= {k: v for k, v in metadata.items() if k.startswith(("modelspec.", "imagebash."))}
    write_safetensors(twin, peft(a), peft_meta)
    return path, twin
