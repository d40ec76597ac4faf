"""Local diffusion: Load Model, LoRA, Text to Image, Image to Image, Inpaint, latent nodes.

Importing this package declares the nodes and the "models" service (the model manager) and
nothing heavier: torch and diffusers load when a node first runs.
"""

from app.engine.models import manager_factory
from nodes.diffusion import generate, latent_nodes, model_nodes, video_models

#: Services this pack's nodes ask for (`ctx.service("models")`); the registry collects them.
SERVICES = {"models": manager_factory}

__all__ = ["generate", "latent_nodes", "model_nodes", "video_models"]
