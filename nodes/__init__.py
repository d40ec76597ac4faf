"""The imagebash node library: built-in node families plus packs from the `imagebash.nodes` entry points.

Importing this package is cheap (no torch, no Qt): node modules import heavy libraries inside the
functions that need them.
"""

from nodes.registry import NodeSpec, PortSpec, Registry, compatible, default_registry, node
from nodes.types import (
    Cancelled,
    Choices,
    Context,
    FileFilter,
    Help,
    Image,
    Latent,
    LoraRef,
    Mask,
    Model,
    Multiline,
    Range,
    Seed,
    Video,
)

__all__ = [
    "Cancelled",
    "Choices",
    "Context",
    "FileFilter",
    "Help",
    "Image",
    "Latent",
    "LoraRef",
    "Mask",
    "Model",
    "Multiline",
    "NodeSpec",
    "PortSpec",
    "Range",
    "Registry",
    "Seed",
    "Video",
    "compatible",
    "default_registry",
    "node",
]
