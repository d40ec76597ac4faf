"""Local diffusion: Load Model, LoRA, Text to Image, Image to Image, Inpaint, latent nodes.

Importing this package registers the nodes and the "models" service (the model manager) and
nothing heavier: torch and diffusers load when a node first runs.
"""

from app.engine.models import manager_factory
from app.engine.services import register_service
from nodes.diffusion import generate, latent_nodes, model_nodes

register_service("models", manager_factory)

__all__ = ["generate", "latent_nodes", "model_nodes"]
