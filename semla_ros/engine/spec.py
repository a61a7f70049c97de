"""EngineSpec: everything that decides which engine is built, with the one set of defaults.

The node's parameter table, the CLIs' options and the demo read their defaults from here (model
side) and from `SegmenterSettings` (retrieval and debouncing), so no default is written twice.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..backends.names import BACKENDS as BACKENDS  # re-exported: the choices beside the spec that takes them
from ..backends.names import PRECISIONS as PRECISIONS  # re-exported, as BACKENDS
from ..backends.names import BackendName, PrecisionName
from ..core import fields
from ..core.fields import setting
from ..core.settings import SegmenterSettings

# What the offline command-line tools (semla-relabel, semla-eval run) default to instead: the CPU and the
# demo's navigator (a real library names its own, e.g. openclip:ViT-L-14/openai).
OFFLINE_DEFAULTS = {"navigator": "tower", "device": "cpu"}

Backend = BackendName
Precision = PrecisionName

# Cityscapes' 19 classes: the label space of the driving domains SemLA is evaluated on (ACDC).
CITYSCAPES_CLASSES = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
)


@dataclass(frozen=True)
class EngineSpec:
    """What the running node cannot change without a restart (live=False), and its vocabulary (live)."""

    model_config: str = setting(
        "vitl14_336", live=False, pattern=r"\s*\S.*", pattern_help="a non-empty registry name or config JSON path",
        help="CAT-Seg configuration: a registry name (tiny, vitb16_384, vitl14_336) or the path of a CatSegConfig "
             "JSON file",
        doc="CAT-Seg configuration: a registry name (tiny, vitb16_384, vitl14_336) or the path of a CatSegConfig "
            "JSON file. vitl14_336 is CAT-Seg (L), the model SemLA's official adapters were trained on (an adapter "
            "made for another model is skipped); vitb16_384 is CAT-Seg (B).")
    checkpoint: str = setting(
        "", live=False, help="CAT-Seg weights (.pth detectron2 or .safetensors). '' needs allow_random_weights",
        doc="CAT-Seg weights: an official detectron2 .pth (CAT-Seg release, github.com/cvlab-kaist/CAT-Seg, e.g. "
            "model_base.pth for vitb16_384, model_large.pth for vitl14_336) or a .safetensors file. A missing file "
            "is one error line in the log and an ERROR in /diagnostics; the node stays up.")
    allow_random_weights: bool = setting(
        False, live=False,
        help="Run with seeded random weights when checkpoint is '' (tests and the synthetic demo only: the masks "
             "mean nothing)",
        doc="Only with checkpoint \"\": run with seeded random weights. For tests and the synthetic demo ONLY - the "
            "masks mean nothing. Without it an empty checkpoint is a configuration error.")
    random_seed: int = setting(0, live=False, low=0, high=2**31 - 1, help="Seed for random weights",
                               doc="Seed of those random weights (same seed, same model).")
    library_path: str = setting(
        "", live=False,
        help="Adapter library directory (SemLA loradb layout). '' = base model only; reload with the "
             "~/reload_library service",
        doc="Adapter library: a SemLA loradb directory (<name>/adapter_config.json, adapter_model.safetensors, "
            "<name>_statistics.npz [+ metadata.json]). \"\" = base model only. After editing the library on disk, "
            "call ~/reload_library (std_srvs/Trigger).")
    navigator: str = setting(
        "openclip:ViT-L-14/openai", live=False,
        help="Domain embedder: 'openclip:MODEL/TAG' (an open_clip pretrained tag found in the local cache, or a "
             "local checkpoint path), 'openclip:MODEL/TAG=PATH' (the weights of tag TAG read from PATH), or 'tower' "
             "(frozen CAT-Seg image tower, demo/tests)",
        doc="Domain embedder. \"openclip:<model>/<pretrained>\" where <pretrained> is an open_clip tag found in the "
            "local cache (never downloaded by the node) or a local checkpoint path "
            "(openclip:ViT-L-14//data/clip/ViT-L-14.pt); \"openclip:<model>/<tag>=<path>\" reads the weights of "
            "tag <tag> from <path> (config/semla_official.yaml). The official SemLA navigator is ViT-L-14/openai. "
            "\"tower\" = a frozen copy of the CAT-Seg image tower's CLS embedding (demo, tests). The library's "
            "centroids must come from the same navigator.")
    navigator_normalize: bool = setting(
        False, live=False, help="L2-normalise navigator embeddings (must match the library)",
        doc="L2-normalise navigator embeddings (must match how the library's centroids were computed).")
    backend: Backend = setting(
        "auto", live=False, help="Inference backend; auto: the fastest that runs here (backends/factory.py)",
        doc="Inference backend. auto picks the fastest that runs here: tensorrt with a CUDA GPU and TensorRT, else "
            "onnxruntime where installed (CPU, about twice as fast as torch there; CUDA with onnxruntime-gpu), else "
            "torch; the choice and why are said once (log and /diagnostics). tensorrt and onnxruntime run the "
            "exported network; where an explicit one cannot run here, the reason is logged once (WARN in "
            "/diagnostics) and PyTorch runs. Their engine builds in the background: PyTorch serves until it is "
            "ready, and whenever the engine cannot hold the announced fusion or vocabulary (rebuilding), each time "
            "said once in the log and /diagnostics.")
    device: str = setting("auto", live=False, pattern=r"auto|cpu|cuda(:\d+)?", pattern_help="auto, cpu, cuda or cuda:N",
                          help="'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'")
    precision: Precision = setting("fp32", live=False, help="Network precision",
                                   doc="Network precision (fp16 needs a GPU; weights stay fp32 so fusion stays exact).")
    engine_cache_dir: str = setting(
        "", live=False,
        help="Where ONNX exports and TensorRT engines are cached ('' = the backend's default under "
             "~/.cache/semla_ros, never /tmp)",
        doc="Cache of exported ONNX files and TensorRT engines (\"\" = ~/.cache/semla_ros, never /tmp). Keyed by "
            "weights, code, torch, opset (and TensorRT, GPU, precision, class profile for engines); rebuilt when "
            "the key changes; entries unused for 30 days, then the least recently used beyond 8 GiB per folder, "
            "are removed.")
    sliding_window: bool = setting(
        False, live=False, help="Sliding-window inference instead of whole image",
        doc="Sliding-window inference (CAT-Seg's official test mode) instead of one whole-image pass.")
    classes: tuple[str, ...] = setting(
        CITYSCAPES_CLASSES, option=False, help="Class names; mask value i is classes[i]. mono8 up to 255 classes, "
                                               "mono16 beyond",
        doc="Mask value i is classes[i]. Changing it re-encodes the text with the active fused text tower. Masks "
            "are mono8 up to 255 classes and mono16 beyond (cv_bridge reads mono8 as intensity; here a pixel is a "
            "class id, as in Isaac ROS and segnet).")
    settings: SegmenterSettings = setting(default_factory=SegmenterSettings, help="retrieval and debouncing")

    def __post_init__(self):
        fields.validate(self)

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
