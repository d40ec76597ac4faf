"""Guidance: ControlNet stacks on the model handle, and the preprocessors that make control images.

Importing this package declares the nodes; torch, diffusers and transformers load when a node
first runs.
"""

from nodes.guidance import controlnet, preprocess

__all__ = ["controlnet", "preprocess"]
