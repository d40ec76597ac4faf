"""Guidance: ControlNet stacks on the model handle (and, with preprocess, the control images).

Importing this package declares the nodes; torch and diffusers load when a node first runs.
"""

from nodes.guidance import controlnet

__all__ = ["controlnet"]
