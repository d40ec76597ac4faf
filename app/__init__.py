"""imagebash: a node-graph editor for imagebashing with local diffusion, LoRAs and online APIs."""

__version__ = "0.1.0"
