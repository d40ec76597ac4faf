"""`imagebash.comfy.unmapped`: a ComfyUI node that has no imagebash equivalent, kept as data.

The node keeps the ComfyUI class, its custom node pack, its inputs and widget values (JSON) and
its outputs ([name, type] JSON), so nothing the user made is dropped and a later version (or a
user) can replace it. Its linked inputs are ports derived from `inputs`; its outputs are typed
slots (`image_1`, `model_2`, ...: a ComfyUI output takes the next free slot of its wire type, see
`output_port_names`). Running it fails with one line, so only the nodes downstream of it fail.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from nodes.registry import PortSpec, node
from nodes.types import Image, Latent, Mask, Model

UNMAPPED_ID = "imagebash.comfy.unmapped"

#: ComfyUI wire type -> our output slot family. CONDITIONING is text: imagebash folds conditioning
#: into the prompt parameters of the sampler, which a text output can feed.
COMFY_KINDS = {
    "IMAGE": "image", "MASK": "mask", "LATENT": "latent", "MODEL": "model", "CLIP": "model", "VAE": "model",
    "CONDITIONING": "text", "STRING": "text", "INT": "int", "FLOAT": "float",
}
#: How many outputs of each family a placeholder offers; the rest go to `any_N` slots.
SLOTS = {"image": 3, "mask": 2, "latent": 2, "model": 6, "text": 4, "int": 2, "float": 2, "any": 8}


class UnmappedOutputs(NamedTuple):
    image_1: Image
    image_2: Image
    image_3: Image
    mask_1: Mask
    mask_2: Mask
    latent_1: Latent
    latent_2: Latent
    model_1: Model
    model_2: Model
    model_3: Model
    model_4: Model
    model_5: Model
    model_6: Model
    text_1: str
    text_2: str
    text_3: str
    text_4: str
    int_1: int
    int_2: int
    float_1: float
    float_2: float
    any_1: object
    any_2: object
    any_3: object
    any_4: object
    any_5: object
    any_6: object
    any_7: object
    any_8: object


STATIC_PARAMS = ("class_type", "pack", "inputs", "outputs")


def output_port_names(outputs: list[tuple[str, str]]) -> list[str | None]:
    """Our port for each ComfyUI output slot, in order (None when every slot of it is taken)."""
    used = dict.fromkeys(SLOTS, 0)
    names: list[str | None] = []
    for _name, comfy_type in outputs:
        fam = COMFY_KINDS.get(str(comfy_type).upper(), "any")
        if used[fam] >= SLOTS[fam]:
            fam = "any"
        if used[fam] >= SLOTS[fam]:
            names.append(None)
            continue
        used[fam] += 1
        names.append(f"{fam}_{used[fam]}")
    return names


def input_port_name(name: str) -> str:
    """The port a ComfyUI input becomes (prefixed when it would clash with a parameter)."""
    return f"in_{name}" if name in STATIC_PARAMS else name


def _parsed(text: Any, default: Any) -> Any:
    if not isinstance(text, str):
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def linked_inputs(params: dict[str, Any]) -> list[PortSpec]:
    """Ports for the inputs that were links in ComfyUI ({"link": [id, slot]} in `inputs`), untyped."""
    inputs = _parsed(params.get("inputs"), {})
    if not isinstance(inputs, dict):
        return []
    return [PortSpec(name=input_port_name(str(k)), kind="Any", default=None, optional=True)
            for k, v in inputs.items() if isinstance(v, dict) and "link" in v and "folded" not in v]


class UnmappedNodeError(RuntimeError):
    """A ComfyUI node without an imagebash equivalent was asked to run."""


@node(UNMAPPED_ID, title="ComfyUI node (unmapped)", category="comfy", cacheable=False,
      dynamic_inputs=linked_inputs)
def unmapped(class_type: str = "", pack: str = "", inputs: str = "{}", outputs: str = "[]",
             **links: Any) -> UnmappedOutputs:
    """A ComfyUI node with no imagebash equivalent, kept with its inputs, widgets and links.

    Args:
        class_type: The ComfyUI node class.
        pack: The custom node pack it comes from, when the file says.
        inputs: JSON of the original inputs: widget values, and {"link": [node, slot]} for links.
        outputs: JSON list of the ComfyUI outputs as [name, type].
    """
    where = f" (from custom node pack {pack})" if pack else ""
    raise UnmappedNodeError(f"no imagebash equivalent for ComfyUI node {class_type or '?'}{where}")
