"""CAT-Seg network components, one file each; `catseg.CATSeg` assembles them with the official key names."""
from .catseg import CATSeg
from .image_encoder import DenseImageFeatures

__all__ = ["CATSeg", "DenseImageFeatures"]
