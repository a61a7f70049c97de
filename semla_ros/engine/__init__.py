"""The one ROS-free place that builds the engine from a description: `EngineSpec` -> model,
predictor, backend, navigator, library and SemlaSegmenter. Used by the node, the CLIs, the
evaluation protocol and the demo.

`build.py` (and with it torch) is imported on first use of one of its names, so `engine.spec` (the node's
parameter table, `--help`) stays light."""
from __future__ import annotations

import importlib

from .spec import CITYSCAPES_CLASSES, EngineSpec

_FROM_BUILD = ("EngineBuild", "EngineConfigError", "build_engine", "build_predictor", "close_engine", "open_library",
               "resolve_device")
__all__ = ["CITYSCAPES_CLASSES", "EngineSpec", *_FROM_BUILD]


def __getattr__(name: str):
    if name in _FROM_BUILD:
        return getattr(importlib.import_module(".build", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
