"""The image nodes: the imagebashing toolkit (load, save, blend, composite, transform, colour,
filters, masks, layout, generators). Importing this package registers every image node; the
modules import OpenCV inside the functions that use it, so listing nodes stays fast.
"""

from nodes.image import blend, color, composite, filters, generate, grid, io, mask, transform

__all__ = ["blend", "color", "composite", "filters", "generate", "grid", "io", "mask", "transform"]
