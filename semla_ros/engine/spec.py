"""EngineSpec: everything that decides which engine is built, with the one set of defaults.

The node's parameter table, the CLIs' options and the demo read their defaults from here (model
side) and from `SegmenterSettings` (retrieval and debouncing), so no default is written twice.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..backends.base import PRECISIONS
from ..backends.factory import BACKENDS
from ..core.settings import SegmenterSettings

# Cityscapes' 19 classes: the label space of the driving domains SemLA is evaluated on (ACDC).
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)


@dataclass(frozen=True)
class EngineSpec:
    model_config: str = "vitl14_336"           # CAT-Seg (L), what SemLA's official adapters adapt; or a config JSON
    checkpoint: str = ""                       # CAT-Seg weights; '' needs allow_random_weights
    allow_random_weights: bool = False         # seeded random weights (tests, synthetic demos)
    random_seed: int = 0
    library_path: str = ""                     # SemLA loradb directory; '' = base model only
    navigator: str = "openclip:ViT-L-14/openai"
    navigator_normalize: bool = False
    backend: str = "auto"                      # one of BACKENDS; auto: the fastest that runs here (factory)
    device: str = "auto"                       # auto | cpu | cuda | cuda:N
    precision: str = "fp32"
    engine_cache_dir: str = ""                 # '' = the backend's default under ~/.cache/semla_ros
    sliding_window: bool = False
    classes: tuple[str, ...] = CITYSCAPES_CLASSES
    settings: SegmenterSettings = field(default_factory=SegmenterSettings)

    def replace(self, **changes) -> "EngineSpec":
        """A copy with `changes`; SegmenterSettings fields are accepted by their names too."""
        setting_names = {f.name for f in dataclasses.fields(SegmenterSettings)}
        settings = {k: changes.pop(k) for k in list(changes) if k in setting_names}
        if "classes" in changes:
            changes["classes"] = tuple(changes["classes"])
        spec = dataclasses.replace(self, **changes)
        if settings:
            spec = dataclasses.replace(spec, settings=spec.settings.replace(**settings))
        return spec
