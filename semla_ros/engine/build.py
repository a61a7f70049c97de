"""Build the engine (model, predictor, backend, navigator, library, segmenter) from an EngineSpec.

Why one builder: the node, the CLIs, the evaluation protocol and the demo all need the same
engine; building it in one place is what keeps them running the same code. Building can fail for
reasons an operator must fix (a missing checkpoint, an absent library); each failure becomes one
sentence naming the file and where it comes from, filed under the part it concerns (`health`),
and the build degrades where it can (no library -> base model, no navigator -> base model, a
backend or device that is not available -> PyTorch on the CPU, said once). `raise_for_errors()`
turns the collected errors into an exception for tools that must not run degraded.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Callable, Final, Literal

from ..catseg.build import load_catseg
from ..catseg.predictor import CatSegPredictor
from ..core.library import AdapterLibrary
from ..core.navigator import ImageNavigator, build_navigator
from ..core.segmenter import SemlaSegmenter
from .spec import EngineSpec

# A part's health, worst last (the levels of /diagnostics: OK, WARN, ERROR).
HealthLevel = Literal["ok", "warn", "error"]

LOG = logging.getLogger(__name__)

LIBRARY_HINT = ("a library is a SemLA loradb directory (<name>/adapter_config.json, "
                "adapter_model.safetensors, <name>_statistics.npz), made by SemLA or `semla-library`")
SOURCES = ("model", "backend", "navigator", "library")
OK: Final[HealthLevel] = "ok"
WARN: Final[HealthLevel] = "warn"
ERROR: Final[HealthLevel] = "error"


class EngineConfigError(ValueError):
    """A configuration the engine cannot run with (missing checkpoint, bad library path, ...): bad input, not a
    failed run; the message is what the operator reads."""


@dataclass
class EngineBuild:
    """What was built, and per part (model, backend, navigator, library) its health: (level, message)."""

    spec: EngineSpec
    segmenter: SemlaSegmenter | None = None    # None when the model could not be built
    predictor: CatSegPredictor | None = None
    navigator: Any = None
    library: AdapterLibrary | None = None
    backend: Any = None
    device: str = "cpu"
    health: dict[str, tuple[HealthLevel, str]] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
    notes: list[tuple[str, str, str]] = field(default_factory=list)   # (source, level, message), in order

    def report(self, source: str, level: HealthLevel, message: str) -> None:
        """Record a part's state; the worst level stays the part's health (error > warn > ok)."""
        order = (OK, WARN, ERROR)
        current = self.health.get(source)
        if current is None or order.index(level) >= order.index(current[0]):
            self.health[source] = (level, message)
        self.notes.append((source, level, message))

    @property
    def errors(self) -> list[str]:
        return [m for _, level, m in self.notes if level == ERROR]

    @property
    def warnings(self) -> list[str]:
        return [m for _, level, m in self.notes if level == WARN]

    def raise_for_errors(self) -> "EngineBuild":
        if self.errors:
            raise EngineConfigError("; ".join(self.errors))
        return self


def resolve_device(device: str) -> tuple[str, str | None]:
    """(device to use, note): 'auto' is cuda when available; cuda without a usable GPU runs on the CPU."""
    import torch

    if device == "auto":
        return ("cuda" if torch.cuda.is_available() else "cpu"), None
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available():
            return "cpu", (f"device '{device}' requested but no CUDA GPU is usable here (torch "
                           f"{torch.__version__}, CUDA build {torch.version.cuda or 'none'}); running on the CPU")
        if index >= torch.cuda.device_count():
            return "cpu", (f"device '{device}' requested but only {torch.cuda.device_count()} CUDA device(s) "
                           "exist; running on the CPU")
    return device, None


def build_predictor(spec: EngineSpec, device: str = "cpu", model=None) -> CatSegPredictor:
    """The model of `spec` (checkpoint loaded, or seeded random weights when allowed) in a predictor."""
    if model is None:
        model = load_catseg(spec.model_config, spec.checkpoint or None,
                            allow_random_weights=spec.allow_random_weights, seed=spec.random_seed, device=device)
    return CatSegPredictor(model, list(spec.classes), device=device, sliding_window=spec.sliding_window)


def open_library(path, navigator, model) -> AdapterLibrary:
    """Every valid entry under `path`, checked against the navigator and the model."""
    return AdapterLibrary.open(path, navigator_dim=getattr(navigator, "dim", None),
                               navigator_id=getattr(navigator, "id", None), model=model)


def navigator_on_engine(navigator, cache_dir: str = "", executor: Executor | None = None) -> tuple[Any, str]:
    """(navigator, what to say): with the ONNX Runtime backend on a CPU the navigator's tower runs there too,
    built in the background (PyTorch embeds meanwhile); a navigator without a tower stays as it is."""
    from ..backends.navigator_engine import EngineNavigator

    if not isinstance(navigator, ImageNavigator):
        return navigator, " (PyTorch: no exportable tower)"
    return (EngineNavigator(navigator, cache_dir=cache_dir or None, executor=executor),
            " (tower in ONNX Runtime on the CPU once built; PyTorch embeds meanwhile)")


def build_engine(spec: EngineSpec, *, model=None, executor: Executor | None = None,
                 onnxruntime_builds: Executor | None = None,
                 clock: Callable[[], float] = time.monotonic) -> EngineBuild:
    """Everything the inference thread needs; never raises for a configuration problem (see `health`).

    `model` reuses an already loaded CATSeg instead of loading spec.model_config/checkpoint. `executor` runs
    the segmenter's adaptations; `onnxruntime_builds` the ONNX Runtime builds (the segmentation engine's and the
    navigator tower's; default: a one-thread pool each, started at once). The node passes a `HeldExecutor` it
    releases after its first mask. TensorRT builds always start at once: they take minutes on a GPU, and a
    managed node configured ahead of its activation should have its engine by then.
    """
    from ..backends.factory import AUTO, auto_backend, make_backend

    build = EngineBuild(spec)
    device, note = resolve_device(spec.device)
    build.device = build.info["device"] = device
    try:
        build.predictor = build_predictor(spec, device, model)
    except (OSError, ValueError, RuntimeError) as error:
        hint = "" if spec.checkpoint else " Set checkpoint, or allow_random_weights for tests and demos."
        build.report("model", ERROR, f"model '{spec.model_config}' with checkpoint '{spec.checkpoint}' could not "
                                     f"be loaded: {error}{hint}")
        return build
    build.report("model", WARN if note else OK, note or f"{spec.model_config} on {device}")
    model = build.predictor.model

    kind, chosen = spec.backend, ""
    if kind == AUTO:   # the fastest backend that runs here; the choice and its reason said once (log, diagnostics)
        choice = auto_backend(device, spec.precision)
        kind, chosen = choice.kind, f" ({choice})"
        build.info["backend_choice"] = str(choice)
    try:
        # An engine that cannot run here falls back to PyTorch with a note; one that can builds in the
        # background (its class profile follows the vocabulary) and reports through backend.status().
        build.backend, fallback = make_backend(kind, build.predictor, precision=spec.precision,
                                               cache_dir=spec.engine_cache_dir or None,
                                               executor=onnxruntime_builds if kind == "onnxruntime" else None,
                                               warn=lambda _: None)
    except (ValueError, RuntimeError, OSError, ImportError) as error:
        build.report("backend", ERROR, f"backend '{kind}' ({spec.precision} on {device}): {error}")
        return build
    build.report("backend", WARN if fallback else OK, (fallback or f"{kind} {spec.precision}") + chosen)
    build.info["backend"] = type(build.backend).__name__

    try:
        build.navigator = build_navigator(spec.navigator, model, device=device, normalize=spec.navigator_normalize)
        build.info["navigator"] = str(build.navigator.id)
    except (ImportError, OSError, RuntimeError, ValueError) as error:
        build.report("navigator", ERROR, f"navigator '{spec.navigator}' unavailable ({error}); "
                                         "running the base model without adaptation")
    else:
        on_engine = kind == "onnxruntime" and fallback is None and device == "cpu"
        build.navigator, how = navigator_on_engine(build.navigator, spec.engine_cache_dir, onnxruntime_builds) \
            if on_engine else (build.navigator, "")
        build.report("navigator", OK, build.navigator.id + how)

    root = spec.library_path
    if not root:
        build.report("library", WARN, "no adapter library configured (library_path is ''): base model only")
    elif build.navigator is not None:
        try:
            library = open_library(root, build.navigator, model)
        except (OSError, ValueError) as error:
            build.report("library", ERROR, f"adapter library {root} could not be opened ({error}; parameter "
                                           f"library_path; {LIBRARY_HINT}); running the base model until the "
                                           "library is reloaded")
        else:
            for name, reason in library.skipped:
                build.report("library", WARN, f"adapter {name} skipped: {reason}")
            if len(library) == 0:
                build.report("library", WARN, f"adapter library {root} has no usable entry: base model only")
            else:
                build.library = library
                build.info["library"] = f"{root} ({len(library)} adapters)"
                if not library.skipped:
                    build.report("library", OK, build.info["library"])

    # The navigator is kept even without a library, so a reload can bring one in later.
    build.segmenter = SemlaSegmenter(build.predictor, build.library, build.navigator, spec.settings,
                                     backend=build.backend, executor=executor, clock=clock)
    return build


def close_engine(segmenter: SemlaSegmenter) -> None:
    """Close what `build_engine` made for `segmenter`: its workers, then the engines it was given (the network's
    backend, the navigator's session). An engine export in flight is told to stop at its next safe point and is
    waited for, so this may take as long as that step; never installed, its engine is freed."""
    segmenter.close()
    for part in (segmenter.backend, segmenter.navigator):
        close = getattr(part, "close", None)
        if callable(close):
            close()
