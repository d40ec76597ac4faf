"""Online generation on Replicate: a schema-driven Run node and ready-made preset nodes.

Importing this package declares the nodes; the `replicate` client, httpx, PIL and OpenCV are
imported only when a node runs or reads a schema.
"""

from nodes.replicate import nodes, presets

__all__ = ["nodes", "presets"]
