"""Guidance: ControlNet and IP-Adapter stacks on the model handle, and the preprocessors that make
control images.

Importing this package declares the nodes; torch, diffusers and transformers load when a node
first runs.
"""

from nodes.guidance import controlnet, ip_adapter, preprocess, regions

__all__ = ["controlnet", "ip_adapter", "preprocess", "regions"]
