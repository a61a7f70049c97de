"""Build the segmenter (model, predictor, navigator, library) from the node's parameter values.

Why separate from the node: building takes seconds to minutes and can fail for reasons an
operator must fix (a missing checkpoint, an absent library); this module turns each failure into
one sentence that names the file and where it comes from, and degrades where it can (no library
-> base model, no navigator -> base model) instead of raising into rclpy. It imports no ROS.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from semla_ros.ros.parameters import parse_navigator, settings_changes

LOG = logging.getLogger(__name__)

CATSEG_WEIGHTS_HINT = ("official CAT-Seg checkpoints come from the CAT-Seg release "
                       "(github.com/cvlab-kaist/CAT-Seg, e.g. model_base.pth for vitb16_384)")
LIBRARY_HINT = ("a library is a SemLA loradb directory (<name>/adapter_config.json, "
                "adapter_model.safetensors, <name>_statistics.npz), made by SemLA or `semla-library`")


class EngineConfigError(RuntimeError):
    """A configuration the node cannot run with; the message is what the operator reads."""


@dataclass
class EngineBuild:
    segmenter: Any = None               # SemlaSegmenter, or None if the model could not be built
    errors: list[str] = field(default_factory=list)    # ERROR in diagnostics
    warnings: list[str] = field(default_factory=list)  # WARN in diagnostics
    info: dict[str, str] = field(default_factory=dict)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _model_config(value: str):
    """A registry name, or the path of a CatSegConfig JSON (what the demo ships with its weights)."""
    if value.endswith(".json") or Path(value).is_file():
        path = Path(value)
        if not path.is_file():
            raise EngineConfigError(f"model config file {path} not found (parameter model_config)")
        from semla_ros.catseg.config import CatSegConfig

        data = json.loads(path.read_text())
        for constructor in ("from_dict", "from_json"):
            if hasattr(CatSegConfig, constructor):
                return getattr(CatSegConfig, constructor)(data)
        return CatSegConfig.from_fixture(data)
    return value


def build_model(params: Mapping[str, Any], device: str):
    import torch

    from semla_ros.catseg.build import build_catseg

    checkpoint = str(params["checkpoint"])
    if not checkpoint and not params["allow_random_weights"]:
        raise EngineConfigError(
            "parameter 'checkpoint' is empty: set it to CAT-Seg weights (.pth or .safetensors; "
            f"{CATSEG_WEIGHTS_HINT}), or set allow_random_weights:=true for tests and demos")
    if checkpoint and not Path(checkpoint).is_file():
        raise EngineConfigError(f"checkpoint {checkpoint} not found (parameter 'checkpoint'); "
                                f"{CATSEG_WEIGHTS_HINT}")
    torch.manual_seed(int(params["random_seed"]))
    try:
        model = build_catseg(_model_config(str(params["model_config"])))
    except (KeyError, ValueError) as error:
        raise EngineConfigError(f"model_config '{params['model_config']}': {error}") from error
    if checkpoint:
        from semla_ros.catseg.checkpoint import load_catseg_weights

        try:
            load_catseg_weights(model, checkpoint)
        except FileNotFoundError as error:
            raise EngineConfigError(str(error)) from error
    model.eval()
    return model.to(device)


def build_navigator(params: Mapping[str, Any], model, device: str):
    kind, model_name, pretrained = parse_navigator(str(params["navigator"]))
    if kind == "tower":
        from semla_ros.core.navigator import TowerNavigator

        return TowerNavigator(model)
    from semla_ros.core.navigator import OpenClipNavigator

    return OpenClipNavigator(model_name=model_name, pretrained=pretrained,
                             normalize=bool(params["navigator_normalize"]), device=device)


def build_engine(params: Mapping[str, Any]) -> EngineBuild:
    """Everything the inference thread needs; never raises for a configuration problem."""
    build = EngineBuild()
    try:
        device = resolve_device(str(params["device"]))
        build.info["device"] = device
        model = build_model(params, device)
    except EngineConfigError as error:
        build.errors.append(str(error))
        return build
    from semla_ros.backends.factory import make_backend
    from semla_ros.catseg.predictor import CatSegPredictor

    predictor = CatSegPredictor(model, list(params["classes"]), device=device,
                                sliding_window=bool(params["sliding_window"]))
    try:
        # TensorRT without TensorRT or a GPU falls back to PyTorch with a note (logged once by the node).
        backend, note = make_backend(str(params["backend"]), predictor, precision=str(params["precision"]),
                                     cache_dir=str(params["engine_cache_dir"]) or None,
                                     max_classes=max(64, len(params["classes"])), warn=lambda _: None)
    except (ValueError, RuntimeError, OSError) as error:
        build.errors.append(f"backend '{params['backend']}' ({params['precision']} on {device}): {error}")
        return build
    if note:
        build.warnings.append(note)
    build.info["backend"] = type(backend).__name__

    navigator = library = None
    try:
        navigator = build_navigator(params, model, device)
        build.info["navigator"] = str(getattr(navigator, "id", params["navigator"]))
    except (ImportError, OSError, RuntimeError, ValueError) as error:
        build.errors.append(f"navigator '{params['navigator']}' unavailable ({error}); "
                            "running the base model without adaptation")

    root = str(params["library_path"])
    if not root:
        build.warnings.append("no adapter library configured (library_path is ''): base model only")
    elif navigator is not None:
        from semla_ros.core.library import AdapterLibrary

        try:
            library = AdapterLibrary.open(root, navigator_dim=navigator.dim,
                                          navigator_id=getattr(navigator, "id", None), model=model)
        except (OSError, ValueError) as error:
            build.errors.append(f"adapter library {root} could not be opened ({error}; parameter "
                                f"library_path; {LIBRARY_HINT}); running the base model, retry with "
                                "~/reload_library")
        else:
            for name, reason in library.skipped:
                build.warnings.append(f"adapter {name} skipped: {reason}")
            if len(library) == 0:
                build.warnings.append(f"adapter library {root} has no usable entry: base model only")
                library = None
            else:
                build.info["library"] = f"{root} ({len(library)} adapters)"

    from semla_ros.core.segmenter import SegmenterSettings, SemlaSegmenter

    settings = SegmenterSettings(**settings_changes(params))
    # The navigator is kept even without a library, so ~/reload_library can bring one in later.
    build.segmenter = SemlaSegmenter(predictor, library, navigator, settings, backend=backend)
    return build
