"""CAT-Seg open-vocabulary segmentation network (official numerics), its loader and predictor. No ROS here."""
from .build import build_catseg, get_config
from .checkpoint import (
                         CheckpointFormatError,
                         CheckpointNotFoundError,
                         UntrainedAggregatorWarning,
                         load_catseg_weights,
                         load_open_clip_weights,
)
from .config import AggregatorConfig, CatSegConfig, InferenceConfig, TextConfig, VisionConfig
from .modeling.catseg import CATSeg
from .predictor import CatSegPredictor, Prediction

__all__ = [
    "AggregatorConfig", "CATSeg", "CatSegConfig", "CatSegPredictor", "CheckpointFormatError",
    "CheckpointNotFoundError", "InferenceConfig", "Prediction", "TextConfig", "UntrainedAggregatorWarning",
    "VisionConfig", "build_catseg", "get_config", "load_catseg_weights", "load_open_clip_weights",
]
