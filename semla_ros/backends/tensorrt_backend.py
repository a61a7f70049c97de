"""The CAT-Seg network core (image tower + aggregator) as a TensorRT engine, for the shared engine lifecycle.

Why refit: an adapter swap changes up to a few hundred Linear weights; rebuilding an engine takes minutes,
refitting the changed weights a fraction of a second. The engine is built from the ONNX export with only
the fusion targets marked refittable (`REFIT_INDIVIDUAL`; the rest stays free to be optimised), and the
refitter is asked which of them it really exposes: one it does not is baked in, and the lifecycle rebuilds
when a fusion changes it (PyTorch serves meanwhile). A refit reads the live model's weights on the GPU
(device-side, transposed there when the export stored them transposed), so no host copy is involved.

Correctness before speed: networks are strongly typed (fp16 comes from the fp16 export, not from a
builder flag; required by TensorRT 11, the recommended mode since 10.12), TF32 is off for fp32 engines
(the parity tolerance is 1e-3), and a timing cache per TensorRT version and GPU makes rebuilds cheaper.
Engines are cached under `EngineKey` (graph, TensorRT, GPU, precision, class profile, build options).

Written against the TensorRT 10 and 11 Python APIs; it has not run here (no GPU): `tools/gpu_check.sh`
runs its tests and benchmark on a GPU machine in one call.
"""
from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .engine_cache import EngineCache, EngineKey, OnnxKey
from .engine_lifecycle import EngineRuntime
from .onnx_weights import OnnxWeightRef, WeightMapping

if TYPE_CHECKING:   # an optional runtime, imported where it runs
    import tensorrt as trt

log = logging.getLogger(__name__)

IMAGE_INPUT = "image"
TEXT_INPUT = "text_embeddings"
LOGITS_OUTPUT = "logits"
MAX_VIEWS = 5          # sliding window: 4 crops + the global view
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


def tensorrt_unavailable_reason() -> str | None:
    """None when TensorRT can run here, else every reason why not (said once by the caller, then PyTorch runs)."""
    reasons = []
    try:
        import tensorrt  # noqa: F401
    except ImportError as exc:
        reasons.append(f"the 'tensorrt' Python package is not installed ({exc})")
    try:
        import onnx  # noqa: F401  (the network reaches TensorRT as an ONNX graph)
    except ImportError as exc:
        reasons.append(f"the 'onnx' Python package is not installed ({exc})")
    if not torch.cuda.is_available():
        reasons.append("no CUDA GPU is visible to PyTorch")
    return "; ".join(reasons) or None


def _build_code_digest() -> str:
    """This file configures every build (flags, profile, refittable weights): part of the engine key."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


@dataclass
class TrtEngine:
    engine: trt.ICudaEngine
    context: trt.IExecutionContext
    refs: dict[str, OnnxWeightRef]     # refittable parameter -> its initializer in the engine
    plan_path: Path
    # One execution context: the runs of several inference workers (inference_workers) take it one at a time.
    running: threading.Lock = field(default_factory=threading.Lock)


class TensorRTRuntime(EngineRuntime):
    """Builds/loads refittable engines, runs them on the predictor's CUDA device, refits from device memory."""

    name = "tensorrt"
    profiled = True
    max_views = MAX_VIEWS   # the optimisation profile's batch axis: several frames run in forwards of at most this

    def __init__(self, predictor, precision: str = "fp32", cache_dir: str | Path | None = None,
                 workspace_bytes: int = 4 << 30):
        reason = tensorrt_unavailable_reason()
        if reason:
            raise RuntimeError(f"TensorRT backend unavailable: {reason}")
        if precision not in TORCH_DTYPES:
            raise ValueError(f"precision must be one of {tuple(TORCH_DTYPES)}, got {precision!r}")
        self.device = next(predictor.model.parameters()).device   # with its index (set_device needs one)
        if self.device.type != "cuda":
            raise RuntimeError(f"TensorRT backend needs the model on a CUDA device, it is on '{self.device}' "
                               "(device:=cuda or auto)")
        import tensorrt as trt

        super().__init__(predictor, precision)
        self.trt = trt
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.dtype = TORCH_DTYPES[precision]
        config = predictor.model.config
        self.image_size = int(config.inference.clip_resolution)
        self.embed_dim = int(config.embed_dim)
        self.opt_views = MAX_VIEWS if predictor.sliding_window else 1
        self.workspace_bytes = workspace_bytes
        self.engines = EngineCache(Path(cache_dir) / "engines" if cache_dir else None)
        props = torch.cuda.get_device_properties(self.device)
        self.gpu_name, self.compute_capability = props.name, f"{props.major}.{props.minor}"
        self.timing_cache = self.engines.root.parent / "timing" / (
            f"{trt.__version__}-{self.gpu_name.replace(' ', '_')}-{self.compute_capability}.cache")
        self.build_seconds = 0.0

    # ------------------------------------------------------------------ build / load
    def engine_key(self, onnx_key: OnnxKey, names: list[str], capacity: int, opt_classes: int) -> EngineKey:
        return EngineKey(onnx=onnx_key.digest(), tensorrt_version=self.trt.__version__, gpu_name=self.gpu_name,
                         compute_capability=self.compute_capability, precision=self.precision,
                         image_size=self.image_size, min_classes=1, opt_classes=opt_classes, max_classes=capacity,
                         torch_version=onnx_key.torch_version, opset=onnx_key.opset, build_code=_build_code_digest(),
                         refittable=hashlib.sha256("\n".join(names).encode()).hexdigest()[:16], tf32=False)

    def build(self, onnx_path: Path, onnx_key: OnnxKey, mapping: WeightMapping, capacity: int, opt_classes: int):
        torch.cuda.set_device(self.device)          # this runs on the build worker's thread
        trt = self.trt
        names = sorted({ref.onnx_name for ref in mapping.refs.values()})
        key = self.engine_key(onnx_key, names, capacity, opt_classes)
        plan = self.engines.load(key)
        from_cache = plan is not None
        if plan is None:
            start = time.perf_counter()
            plan = self._build_plan(onnx_path, names, capacity, opt_classes)
            self.build_seconds = time.perf_counter() - start
            self.engines.store_plan(key, plan)
            log.info("built a TensorRT engine in %.1f s (%s)", self.build_seconds,
                     self.engines.path(key, "engine.plan"))
        engine = trt.Runtime(self.logger).deserialize_cuda_engine(plan)
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {self.engines.path(key, 'engine.plan')}")
        exposed = set(trt.Refitter(engine, self.logger).get_all_weights())
        refs = {param: ref for param, ref in mapping.refs.items() if ref.onnx_name in exposed}
        handle = TrtEngine(engine, engine.create_execution_context(), refs, self.engines.path(key, "engine.plan"))
        return handle, set(refs), from_cache

    def _build_plan(self, onnx_path: Path, refittable: list[str], capacity: int, opt_classes: int) -> bytes:
        trt = self.trt
        builder = trt.Builder(self.logger)
        strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)  # implied on 11
        network = builder.create_network(0 if strongly_typed is None else 1 << int(strongly_typed))
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        if hasattr(trt.BuilderFlag, "REFIT_INDIVIDUAL"):
            config.set_flag(trt.BuilderFlag.REFIT_INDIVIDUAL)
            marked = [name for name in refittable if network.mark_weights_refittable(name)]
            if len(marked) < len(refittable):
                log.warning("TensorRT did not accept %d of %d fusion weights as refittable (e.g. %s); a fusion "
                            "changing them rebuilds the engine", len(refittable) - len(marked), len(refittable),
                            sorted(set(refittable) - set(marked))[:3])
        else:
            config.set_flag(trt.BuilderFlag.REFIT)
        if self.precision == "fp32":
            config.clear_flag(trt.BuilderFlag.TF32)   # fp32 parity (1e-3) is not TF32's 10-bit mantissa
        cache = config.create_timing_cache(self.timing_cache.read_bytes() if self.timing_cache.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        profile = builder.create_optimization_profile()
        s = self.image_size
        profile.set_shape(IMAGE_INPUT, (1, 3, s, s), (self.opt_views, 3, s, s), (MAX_VIEWS, 3, s, s))
        profile.set_shape(TEXT_INPUT, (1, self.embed_dim), (opt_classes, self.embed_dim),
                          (capacity, self.embed_dim))
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
        self._save_timing_cache(config.get_timing_cache())
        return bytes(plan)

    def _save_timing_cache(self, cache) -> None:
        self.timing_cache.parent.mkdir(parents=True, exist_ok=True)
        partial = self.timing_cache.with_name(f".{self.timing_cache.name}.{os.getpid()}.partial")
        partial.write_bytes(bytes(cache.serialize()))
        os.replace(partial, self.timing_cache)

    # ------------------------------------------------------------------ frames and weights
    def run(self, handle: TrtEngine, views: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        image = views.to(self.device, self.dtype).contiguous()
        text = text.to(self.device, self.dtype).contiguous()
        ctx = handle.context
        with handle.running:
            ctx.set_input_shape(IMAGE_INPUT, tuple(image.shape))
            ctx.set_input_shape(TEXT_INPUT, tuple(text.shape))
            out = torch.empty(tuple(ctx.get_tensor_shape(LOGITS_OUTPUT)), device=self.device, dtype=self.dtype)
            ctx.set_tensor_address(IMAGE_INPUT, image.data_ptr())
            ctx.set_tensor_address(TEXT_INPUT, text.data_ptr())
            ctx.set_tensor_address(LOGITS_OUTPUT, out.data_ptr())
            stream = torch.cuda.current_stream(self.device)
            if not ctx.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            stream.synchronize()
        return out.float()

    def set_weights(self, handle: TrtEngine, names: list[str]) -> None:
        """Refit `names` from the live model's weights, on the GPU. Raises when TensorRT refuses any."""
        trt = self.trt
        refitter = trt.Refitter(handle.engine, self.logger)
        by_onnx = {ref.onnx_name: param for param, ref in handle.refs.items()}
        keep = []

        def supply(param: str) -> None:
            ref = handle.refs[param]
            weight = self.params[param].detach()
            arr = (weight.t() if ref.transposed else weight).to(self.device, self.dtype).contiguous()
            keep.append(arr)   # alive until the refit has run on the stream
            weights = trt.Weights(trt.float16 if self.dtype == torch.float16 else trt.float32, arr.data_ptr(),
                                  arr.numel())
            if not refitter.set_named_weights(ref.onnx_name, weights, trt.TensorLocation.DEVICE):
                raise RuntimeError(f"TensorRT refused new weights for {param} ({ref.onnx_name})")

        for param in names:
            supply(param)
        for onnx_name in refitter.get_missing_weights():   # combined with a weight we set: supply it too
            if onnx_name not in by_onnx:
                raise RuntimeError(f"TensorRT needs weight {onnx_name} for this refit, which maps to no parameter")
            supply(by_onnx[onnx_name])
        stream = torch.cuda.current_stream(self.device)
        if not refitter.refit_cuda_engine_async(stream.cuda_stream):
            raise RuntimeError("TensorRT refit failed")
        stream.synchronize()

    def release(self, handle: TrtEngine) -> None:
        handle.context = None
        handle.engine = None
