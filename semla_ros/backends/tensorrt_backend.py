"""The CAT-Seg network core (image tower + aggregator) as a TensorRT engine.

Why refit: an adapter swap changes a few hundred Linear weights; rebuilding an engine takes
minutes, refitting the changed weights takes a fraction of a second. The engine is built with
the refit flag from an ONNX export whose initializers we can name (see `onnx_weights`), cached
under a key of everything that invalidates it, and reloaded when valid. If a fused weight
cannot be refitted (TensorRT folded it away), the engine is rebuilt from the fused model in
the background while the old engine keeps serving frames.

Text embeddings are an engine input (class axis dynamic up to `max_classes`), so a vocabulary
change never needs a rebuild; the text tower, pre- and post-processing stay in PyTorch
(`CatSegPredictor`), so both backends produce masks the same way.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
import torch

from .base import PRECISIONS, Backend
from .engine_cache import EngineCache, EngineKey, default_cache_dir, file_sha256
from .onnx_weights import WeightMapping, load_initializers, map_parameters_to_onnx

log = logging.getLogger(__name__)

IMAGE_INPUT = "image"
TEXT_INPUT = "text_embeddings"
LOGITS_OUTPUT = "logits"


def engine_parameter_names(model: torch.nn.Module) -> set[str]:
    """Parameters the engine's graph depends on: those the image path reaches (autograd on one
    probe forward). The text tower stays in PyTorch (text embeddings are an engine input) and
    the dense last block never uses its q/k projections, so their fused weights need no refit."""
    config = model.config
    device = next(model.parameters()).device
    s = config.inference.clip_resolution
    probe_image = torch.zeros(1, 3, s, s, device=device)
    probe_text = torch.nn.functional.normalize(torch.ones(2, config.embed_dim, device=device), dim=-1)
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.dtype.is_floating_point])
    with torch.enable_grad():
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
        try:
            out = model(probe_image, probe_text)
            grads = torch.autograd.grad(out.sum(), params, allow_unused=True)
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad_(flag)
    return {n for n, g in zip(names, grads) if g is not None}


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


@dataclass
class RefitReport:
    refitted: int
    seconds: float
    rebuild_started: bool
    unmapped: list[str]


class TensorRTBackend(Backend):
    """Runs `views (V,3,S,S) normalised, text (T,E) -> logits (V,T,96,96)` through TensorRT.

    `export_onnx(path, precision)` writes the ONNX graph of the network core (`CATSeg.forward`)
    from the model's current weights; the model's parameters give the name mapping for refit.
    V is 1 on the whole-image path and 5 (4 crops + global view) on the sliding-window path.
    """

    name = "tensorrt"

    def __init__(self, predictor, export_onnx: Callable[[Path, str], None], *, model_digest: str,
                 precision: str = "fp32", max_classes: int = 64, opt_classes: int = 20,
                 device: str = "cuda:0", cache_dir: str | Path | None = None, workspace_bytes: int = 4 << 30):
        super().__init__(predictor)
        reason = tensorrt_unavailable_reason()
        if reason:
            raise RuntimeError(f"TensorRT backend unavailable: {reason}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        import tensorrt as trt

        model = predictor.model
        image_size = model.config.inference.clip_resolution
        embed_dim = model.config.embed_dim
        params = lambda: dict(model.named_parameters())  # noqa: E731

        self._trt = trt
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._export_onnx = export_onnx
        self._params = params
        self.precision = precision
        self.image_size = int(image_size)
        self.embed_dim = int(embed_dim)
        self.max_classes = int(max_classes)
        self.opt_classes = int(min(opt_classes, max_classes))
        self.device = torch.device(device)
        self.workspace_bytes = workspace_bytes
        root = Path(cache_dir) if cache_dir else default_cache_dir()
        self.cache = EngineCache(root / "engines")
        self.onnx_path = root / "onnx" / f"{model_digest}-{precision}.onnx"
        self._lock = threading.Lock()          # engine use vs refit/replace
        self._rebuild: threading.Thread | None = None
        self.build_seconds = 0.0
        self.loaded_from_cache = False

        if not self.onnx_path.is_file():
            self.onnx_path.parent.mkdir(parents=True, exist_ok=True)
            partial = self.onnx_path.with_suffix(".partial.onnx")
            self._export_onnx(partial, precision)
            partial.replace(self.onnx_path)
        self._initializers = load_initializers(self.onnx_path)
        self._engine_params = engine_parameter_names(model)
        # Mapped while the model still holds the weights the graph was exported with (a weight
        # found by value would no longer match once fused weights are copied in).
        self._mapping = self.weight_mapping(sorted(self._engine_params))
        self._engine, self._context = self._load_or_build(self.onnx_path)

    # -- engine lifecycle -------------------------------------------------------------
    def _key(self, onnx_path: Path) -> EngineKey:
        props = torch.cuda.get_device_properties(self.device)
        return EngineKey(onnx_sha256=file_sha256(onnx_path), tensorrt_version=self._trt.__version__,
                         gpu_name=props.name, compute_capability=f"{props.major}.{props.minor}",
                         precision=self.precision, image_size=self.image_size, min_classes=1,
                         opt_classes=self.opt_classes, max_classes=self.max_classes, refit=True)

    def _load_or_build(self, onnx_path: Path):
        key = self._key(onnx_path)
        plan = self.cache.load(key)
        self.loaded_from_cache = plan is not None
        if plan is None:
            start = time.perf_counter()
            plan = self._build(onnx_path)
            self.build_seconds = time.perf_counter() - start
            self.cache.store(key, plan)
            log.info("built TensorRT engine in %.1f s (%s)", self.build_seconds, self.cache.path(key))
        runtime = self._trt.Runtime(self._logger)
        engine = runtime.deserialize_cuda_engine(plan)
        if engine is None:
            raise RuntimeError(f"TensorRT could not deserialize the engine at {self.cache.path(key)}")
        return engine, engine.create_execution_context()

    def _build(self, onnx_path: Path) -> bytes:
        trt = self._trt
        builder = trt.Builder(self._logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace_bytes)
        config.set_flag(trt.BuilderFlag.REFIT)
        # TensorRT 11 networks are strongly typed: fp16 comes from the fp16 ONNX export.
        # TensorRT 10 also honours the fp16 flag for any fp32 leftovers.
        if self.precision == "fp16" and hasattr(trt.BuilderFlag, "FP16"):
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        s = self.image_size
        views = 5 if self.predictor.sliding_window else 1
        profile.set_shape(IMAGE_INPUT, (1, 3, s, s), (views, 3, s, s), (5, 3, s, s))
        profile.set_shape(TEXT_INPUT, (1, self.embed_dim), (self.opt_classes, self.embed_dim),
                          (self.max_classes, self.embed_dim))
        config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
        return bytes(plan)

    # -- inference --------------------------------------------------------------------
    def forward(self, clip_images: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """logits (V,T,96,96) float32 on the backend's device."""
        image = clip_images
        t = text_embeddings.shape[0]
        if t > self.max_classes:
            raise ValueError(f"{t} classes exceed the engine's max_classes={self.max_classes}; "
                             "raise the backend's max_classes (needs a rebuild)")
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        image = image.to(self.device, dtype).contiguous()
        text = text_embeddings.to(self.device, dtype).contiguous()
        with self._lock:
            ctx = self._context
            ctx.set_input_shape(IMAGE_INPUT, tuple(image.shape))
            ctx.set_input_shape(TEXT_INPUT, tuple(text.shape))
            out_shape = tuple(ctx.get_tensor_shape(LOGITS_OUTPUT))
            out = torch.empty(out_shape, device=self.device, dtype=dtype)
            ctx.set_tensor_address(IMAGE_INPUT, image.data_ptr())
            ctx.set_tensor_address(TEXT_INPUT, text.data_ptr())
            ctx.set_tensor_address(LOGITS_OUTPUT, out.data_ptr())
            stream = torch.cuda.current_stream(self.device)
            if not ctx.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            stream.synchronize()
        return out.float()

    # -- weights ----------------------------------------------------------------------
    def weight_mapping(self, param_names) -> WeightMapping:
        wanted = set(param_names)
        params = {n: p.detach().float().cpu().numpy() for n, p in self._params().items() if n in wanted}
        return map_parameters_to_onnx(self._initializers, params, param_names)

    def update_weights(self, fused: Mapping[str, torch.Tensor]) -> RefitReport:
        """Refit the changed weights (module name -> full W); rebuild in the background for any
        weight refit cannot reach, while the current engine keeps running."""
        start = time.perf_counter()
        # The predictor's PyTorch model already holds these weights (the text tower runs there,
        # and a rebuild exports from it).
        fused = {f"{module}.weight": w for module, w in fused.items()}
        changed = [n for n in fused if n in self._engine_params]
        mapping = WeightMapping({n: self._mapping.refs[n] for n in changed if n in self._mapping.refs},
                                [n for n in changed if n not in self._mapping.refs])
        trt = self._trt
        refitted = 0
        if mapping.refs:
            keep_alive = []
            with self._lock:
                refitter = trt.Refitter(self._engine, self._logger)
                refittable = set(refitter.get_all_weights())
                for name, ref in mapping.refs.items():
                    if ref.onnx_name not in refittable:
                        mapping.missing.append(name)
                        continue
                    arr = ref.layout(fused[name].detach().float().cpu().numpy())
                    keep_alive.append(arr)
                    if not refitter.set_named_weights(ref.onnx_name, trt.Weights(arr)):
                        mapping.missing.append(name)
                        continue
                    refitted += 1
                # Weights TensorRT combined with a changed one must be supplied too; any that is
                # not a fusion target still has its exported value.
                for onnx_name in refitter.get_missing_weights() if refitted else ():
                    if onnx_name in self._initializers:
                        arr = np.ascontiguousarray(self._initializers[onnx_name])
                        keep_alive.append(arr)
                        refitter.set_named_weights(onnx_name, trt.Weights(arr))
                if refitted and not refitter.refit_cuda_engine():
                    raise RuntimeError("TensorRT refit failed; the previous weights stay active")
        rebuild = bool(mapping.missing)
        if rebuild:
            self._start_rebuild()
        return RefitReport(refitted, time.perf_counter() - start, rebuild, list(mapping.missing))

    def _start_rebuild(self) -> None:
        if self._rebuild is not None and self._rebuild.is_alive():
            return  # the running rebuild exports the model as it is when it starts its export

        def work():
            try:
                path = self.onnx_path.with_name(self.onnx_path.stem + "-fused.onnx")
                self._export_onnx(path, self.precision)
                engine, context = self._load_or_build(path)
                initializers = load_initializers(path)
                with self._lock:
                    self._engine, self._context = engine, context
                    self._initializers = initializers
                    self._mapping = self.weight_mapping(sorted(self._engine_params))
                log.info("TensorRT engine rebuilt with fused weights")
            except Exception:  # the old engine keeps running; the failure is logged, not raised
                log.exception("background TensorRT rebuild failed; the previous engine stays active")

        self._rebuild = threading.Thread(target=work, name="semla-trt-rebuild", daemon=True)
        self._rebuild.start()
