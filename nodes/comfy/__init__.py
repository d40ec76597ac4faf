"""ComfyUI compatibility nodes: the placeholder an imported ComfyUI node without an imagebash
equivalent becomes (its class, pack, inputs, widgets and links are kept, and it says why it
cannot run)."""

from nodes.comfy import unmapped

__all__ = ["unmapped"]
