"""The one ROS-free place that builds the engine from a description: `EngineSpec` -> model,
predictor, backend, navigator, library and SemlaSegmenter. Used by the node, the CLIs, the
evaluation protocol and the demo."""
from .build import EngineBuild, EngineConfigError, build_engine, build_predictor, open_library, resolve_device
from .spec import CITYSCAPES_CLASSES, EngineSpec

__all__ = ["CITYSCAPES_CLASSES", "EngineBuild", "EngineConfigError", "EngineSpec", "build_engine", "build_predictor",
           "open_library", "resolve_device"]
