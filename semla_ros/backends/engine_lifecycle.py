"""The lifecycle every compiled engine shares (TensorRT, ONNX Runtime): export -> build/load -> weight
update -> maybe rebuild in the background -> swap. Written once, so its logic runs and is tested on CPU.

The guarantee: a frame runs on the engine only when the engine holds exactly the weights the predictor's
PyTorch model holds (the announced fusion) and the vocabulary fits the engine's class profile. Otherwise
the frame runs on the predictor's own model, which always holds the announced fusion, and the reason is
said once (`status()`, and the `say` callback). How:
- `update_weights` runs on the inference thread right after `CatSegPredictor.load_weights`. Weights the
  runtime can reach (TensorRT refit, ONNX Runtime weight inputs) are updated before it returns. A fused
  weight it cannot reach is compared with the value baked into the engine; if it differs, the engine is
  stale (PyTorch serves) and a rebuild starts. A failed update marks the engine broken: same path.
- A rebuild runs on a worker: it snapshots the model between two weight loads, exports it (cached under
  `OnnxKey`), builds, and replaces nothing. The next `forward`/`update_weights` (inference thread, between
  frames) re-checks the finished engine against the weights announced by then: baked weights that changed
  since the snapshot discard it (another rebuild starts unless the engine in use fits again); reachable
  weights are set to the current ones; then it swaps in.
- A vocabulary above the engine's class profile runs on PyTorch while an engine with a bigger profile
  builds; above the export's class limit (pad_len: CAT-Seg then selects classes per image, which the
  export cannot represent) PyTorch serves it for good. A failed build is not retried: PyTorch serves,
  and the status says why.
"""
from __future__ import annotations

import hashlib
import logging
import threading
import time
from abc import ABC, abstractmethod
from concurrent.futures import CancelledError, Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..catseg.checkpoint import state_dict_digest
from ..catseg.modeling.catseg import CATSeg
from ..catseg.utils.onnx import EXPORTER, OPSET, export_class_limit, export_code_digest, export_onnx
from ..core.targets import semla_target_modules
from .base import Backend, WeightUpdate
from .engine_cache import ArtifactCache, OnnxKey, default_cache_dir
from .engine_params import cached_engine_parameter_names, engine_parameter_names  # noqa: F401  (its old home)
from .onnx_weights import WeightMapping, load_initializers, map_parameters_to_onnx

log = logging.getLogger(__name__)

# torch.onnx.export keeps process-wide state (GLOBALS.in_onnx_export): two exports on two build workers (the
# segmentation's and the navigator's) would collide, so every export in the process takes this lock.
EXPORT_LOCK = threading.Lock()
ONNX_FILE = "model.onnx"
MIN_PROFILE = 64
MAX_CLASSES = 65535      # what a mono16 mask can index: the capacity of an engine without class profile


class BuildCancelled(Exception):
    """A build stopped at a safe point because its backend is closing."""


def cancel_or_wait(pending: Future | None, what: str) -> Any:
    """Cancel a build that has not started, else wait for it to end: its result, or None when it was
    cancelled, stopped at a safe point or failed (closing: said at debug level only)."""
    if pending is None or pending.cancel():
        return None
    try:
        return pending.result()
    except (BuildCancelled, CancelledError):
        return None
    except Exception as exc:   # a build failing while closing changes nothing
        log.debug("the %s build ended with %s while closing", what, exc)
        return None


def class_profile(num_classes: int, limit: int | None) -> int:
    """The class capacity an engine is built for: a power of two >= num_classes (at least 64), at most the
    export's class limit."""
    return min(limit or MAX_CLASSES, max(MIN_PROFILE, 1 << max(0, int(num_classes) - 1).bit_length()))


def tensor_digest(tensor: torch.Tensor) -> str:
    t = tensor.detach().to("cpu", torch.float32).contiguous()
    return hashlib.sha1(t.numpy().tobytes()).hexdigest()


@dataclass
class BuiltEngine:
    """An engine and what it holds."""

    handle: Any                    # the runtime's engine (TensorRT engine + context, ONNX Runtime session)
    reachable: frozenset[str]      # parameters the runtime updates in place
    baked: dict[str, str]          # digest of every other Linear weight on the engine path, as built
    capacity: int                  # most classes its profile takes
    onnx_path: Path
    from_cache: bool = False
    stale: set[str] = field(default_factory=set)   # baked weights that differ from the announced ones
    broken: str | None = None      # why its weights are unknown (a failed update or run)


class EngineRuntime(ABC):
    """One engine technology: builds from an ONNX file, runs a frame, updates reachable weights in place."""

    name = "engine"
    profiled = True                # builds are tied to a class profile (TensorRT); else the export limit
    max_views: int | None = None   # most views one run takes (the engine's batch profile); None: any number

    def __init__(self, predictor, precision: str = "fp32"):
        self.precision = precision
        self.params = dict(predictor.model.named_parameters())   # the live model: what update reads

    @abstractmethod
    def build(self, onnx_path: Path, onnx_key: OnnxKey, mapping: WeightMapping, capacity: int,
              opt_classes: int) -> tuple[Any, set[str], bool]:
        """(handle, parameters it can update in place, loaded from a cache) for the graph at onnx_path.
        Runs on the build worker: must not touch an engine in use."""

    @abstractmethod
    def run(self, handle, views: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        """(V,3,S,S) views + (T,E) text -> (V,T,h,w) float32 logits."""

    @abstractmethod
    def set_weights(self, handle, names: list[str]) -> None:
        """Make the engine hold the live model's current values of `names` (all reachable); raise on failure."""

    @abstractmethod
    def release(self, handle) -> None:
        """Free what the engine holds."""


class EngineBackend(Backend):
    """A Backend whose network call is a compiled engine, kept in step with the predictor's weights."""

    def __init__(self, predictor, runtime: EngineRuntime, *, cache_dir: str | Path | None = None,
                 max_classes: int | None = None, opset: int = OPSET, executor: Executor | None = None,
                 say: Callable[[str], None] = log.warning):
        super().__init__(predictor)
        self.runtime = runtime
        self.name = runtime.name
        self.max_batch = runtime.max_views   # the engine's batch profile (PyTorch, serving meanwhile, takes any)
        self.precision = runtime.precision
        model = predictor.model
        self.class_limit = export_class_limit(model.config)
        root = Path(cache_dir) if cache_dir else default_cache_dir()
        self.onnx_cache = ArtifactCache(root / "onnx")
        self.engine_params = frozenset(cached_engine_parameter_names(model, ArtifactCache(root / "engine_params")))
        linear = {f"{name}.weight" for name, module in model.named_modules() if isinstance(module, nn.Linear)}
        self.tracked = frozenset(linear & self.engine_params)          # weights a fusion can change
        self.targets = sorted({f"{m}.weight" for m in semla_target_modules(model)} & self.engine_params)
        self.opset = int(opset)
        if max_classes is not None:
            self.capacity = min(self.class_limit or MAX_CLASSES, int(max_classes))
        elif runtime.profiled:
            self.capacity = class_profile(len(predictor.class_names), self.class_limit)
        else:
            self.capacity = self.class_limit or MAX_CLASSES
        self._say = say
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix=f"semla-{self.name}-build")
        self.closing = threading.Event()     # set when close() begins: a build in flight stops at a safe point
        self._served: BuiltEngine | None = None
        self._pending: Future | None = None
        self._failure: str | None = None     # a build failed: not retried
        self._note: str | None = None        # why PyTorch serves right now (None: the engine serves)
        self._touched: set[str] = set()      # tracked weights a fusion has written since the model was loaded
        self.builds = self.installs = self.discarded = 0
        self._request_build(self.capacity)

    # ------------------------------------------------------------------ state
    @property
    def engine(self) -> BuiltEngine | None:
        """The engine in use (None until the first build is installed)."""
        return self._served

    @property
    def serving(self) -> str:
        """'engine' when the last frame ran on the engine, else 'pytorch'."""
        return "engine" if self._note is None and self._served is not None else "pytorch"

    def status(self) -> tuple[str, str]:
        if self._failure is not None:
            return "warn", f"{self._failure}; PyTorch serves"
        if self._served is None:
            return "warn", f"{self.name} engine is being built; PyTorch serves meanwhile"
        if self._note is not None:
            return "warn", f"{self._note}; PyTorch serves meanwhile"
        return "ok", f"{self.name} {self.precision} engine serving (up to {self._served.capacity} classes)"

    def wait_ready(self, timeout: float | None = None) -> BuiltEngine:
        """Block until the pending build is installed (tools and tests; the node never waits)."""
        while self._pending is not None:
            self._pending.exception(timeout)
            self._install_finished()
        if self._served is None:
            raise RuntimeError(self._failure or f"no {self.name} engine was built")
        return self._served

    # ------------------------------------------------------------------ the frame
    def forward(self, clip_images: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        self._install_finished()
        engine = self._served
        reason = self._unfit(engine, int(text_embeddings.shape[0]))
        if reason is None and engine is not None:   # _unfit gives a reason when there is no engine
            try:
                logits = self.runtime.run(engine.handle, clip_images, text_embeddings)
            except Exception as exc:  # an engine that cannot run a frame is not trusted again
                engine.broken = f"the {self.name} engine failed to run a frame ({type(exc).__name__}: {exc})"
                reason = engine.broken
            else:
                self._set_note(None)
                return logits
        self._set_note(reason)
        return self.predictor.forward(clip_images, text_embeddings)

    def _unfit(self, engine: BuiltEngine | None, num_classes: int) -> str | None:
        """Why the engine may not run this frame, or None."""
        if self._failure is not None:
            return self._failure
        if engine is None:
            return f"the {self.name} engine is being built"
        if engine.broken:
            return engine.broken
        if engine.stale:
            return (f"{len(engine.stale)} fused weight(s) the {self.name} engine cannot update in place "
                    f"({sorted(engine.stale)[0]}, ...) differ from its built-in values; it is being rebuilt")
        if num_classes > engine.capacity:
            if self.class_limit is not None and num_classes > self.class_limit:
                return (f"{num_classes} classes exceed the {self.class_limit} the exported network represents "
                        "(above it CAT-Seg picks classes per image, which is not exported)")
            wanted = class_profile(num_classes, self.class_limit)
            self._request_build(wanted)
            return (f"{num_classes} classes exceed the {self.name} engine's class profile ({engine.capacity}); "
                    f"an engine for {wanted} classes is being built")
        return None

    def _set_note(self, reason: str | None) -> None:
        if reason != self._note:
            self._note = reason
            if reason is not None:
                self._say(f"{reason}; PyTorch serves" + ("" if reason == self._failure else " meanwhile"))
            else:
                log.info("%s engine serving", self.name)

    # ------------------------------------------------------------------ weights
    def update_weights(self, fused: Mapping[str, torch.Tensor]) -> WeightUpdate:
        """Called after the predictor's model holds `fused` (module name -> W): the engine holds the same
        weights when this returns, or is marked stale/broken (PyTorch serves) with a rebuild started."""
        start = time.perf_counter()
        names = [f"{module}.weight" for module in fused if f"{module}.weight" in self.engine_params]
        self._touched.update(n for n in names if n in self.tracked)
        engine = self._served
        if engine is not None:
            for name in names:
                if name in engine.reachable:
                    continue
                if tensor_digest(self.runtime.params[name]) == engine.baked.get(name):
                    engine.stale.discard(name)
                else:
                    engine.stale.add(name)
            reached = [n for n in names if n in engine.reachable]
            if reached and not engine.broken:
                try:
                    self.runtime.set_weights(engine.handle, reached)
                except Exception as exc:  # its weights are now unknown: rebuilt, PyTorch serves meanwhile
                    engine.broken = f"updating the {self.name} engine's weights failed ({type(exc).__name__}: {exc})"
        self._install_finished()   # between frames too: a finished build is checked against these weights
        engine = self._served
        if engine is None:   # the pending build is re-checked against these weights when it finishes
            return WeightUpdate(0, time.perf_counter() - start, self._pending is not None, tuple(names))
        if engine.stale or engine.broken:
            self._request_build(engine.capacity)
        updated = 0 if engine.broken else len([n for n in names if n in engine.reachable])
        return WeightUpdate(updated, time.perf_counter() - start, self._pending is not None,
                            tuple(sorted(engine.stale)))

    # ------------------------------------------------------------------ builds
    def _request_build(self, capacity: int) -> None:
        """Start a build unless one is pending (its result is re-checked anyway) or a build failed."""
        if self._pending is not None or self._failure is not None or self.closing.is_set():
            return
        self.builds += 1
        # The profile's optimum: the vocabulary rounded up to a power of two, so a restart with a vocabulary
        # of about the same size finds the cached engine.
        opt_classes = min(capacity, 1 << max(0, len(self.predictor.class_names) - 1).bit_length())
        self._pending = self._executor.submit(self._build, capacity, opt_classes)

    def _stop_if_closing(self) -> None:
        if self.closing.is_set():
            raise BuildCancelled(f"the {self.name} backend closed during the build")

    def _build(self, capacity: int, opt_classes: int) -> BuiltEngine:
        """On the worker: snapshot, export (or reuse the cached export), build. Replaces nothing. Stops between
        these steps once the backend is closing (the export and the runtime's build themselves run to their end)."""
        self._stop_if_closing()
        model = self.predictor.model_snapshot(copied=lambda name: name in self.engine_params)
        self._stop_if_closing()
        onnx_path, onnx_key = self.export(model)
        self._stop_if_closing()
        params = dict(model.named_parameters())
        values = {n: params[n].detach().float().cpu().numpy() for n in self.targets}
        mapping = map_parameters_to_onnx(load_initializers(onnx_path), values, self.targets)
        self._stop_if_closing()
        handle, reachable, from_cache = self.runtime.build(onnx_path, onnx_key, mapping, capacity, opt_classes)
        if self.closing.is_set():
            self.runtime.release(handle)
            self._stop_if_closing()
        baked = {n: tensor_digest(params[n]) for n in self.tracked - set(reachable)}
        return BuiltEngine(handle, frozenset(reachable), baked, capacity, onnx_path, from_cache)

    def onnx_key(self, model: torch.nn.Module) -> OnnxKey:
        return OnnxKey(model_digest=state_dict_digest(model), precision=self.precision, opset=self.opset,
                       exporter=EXPORTER, export_code=export_code_digest(), torch_version=torch.__version__)

    def export(self, model: CATSeg) -> tuple[Path, OnnxKey]:
        """The ONNX export of `model` from the cache, or exported now and cached."""
        key = self.onnx_key(model)
        path = self.onnx_cache.find(key, ONNX_FILE)
        if path is None:
            with EXPORT_LOCK:
                path = self.onnx_cache.store(key, ONNX_FILE, lambda partial: export_onnx(
                    model, partial, precision=self.precision, opset=self.opset))
        return path, key

    def _install_finished(self) -> None:
        """Between frames: swap in a finished build if it still matches the announced weights."""
        for _ in range(4):   # an inline executor finishes a follow-up build at once
            future = self._pending
            if future is None or not future.done():
                return
            self._pending = None
            try:
                candidate = future.result()
            except Exception as exc:
                self._failure = f"building the {self.name} engine failed ({type(exc).__name__}: {exc})"
                return   # said by the next frame, which runs on PyTorch
            changed = sorted(n for n in self._touched & candidate.baked.keys()
                             if tensor_digest(self.runtime.params[n]) != candidate.baked[n])
            if changed:   # built from weights that were replaced while it built
                self.discarded += 1
                log.info("discarded a %s build: %d baked weight(s) changed since its snapshot", self.name,
                         len(changed))
                self.runtime.release(candidate.handle)
                served = self._served
                if served is None or served.stale or served.broken:
                    self._request_build(candidate.capacity)
                continue
            try:
                self.runtime.set_weights(candidate.handle, sorted(candidate.reachable))
            except Exception as exc:
                self.runtime.release(candidate.handle)
                self._failure = f"the rebuilt {self.name} engine took no weights ({type(exc).__name__}: {exc})"
                return
            previous, self._served = self._served, candidate
            self.installs += 1
            if previous is not None:
                self.runtime.release(previous.handle)
            return

    def close(self) -> None:
        """Cancel a build that has not started, stop a running one at its next safe point (between snapshot,
        export and build; an export or a TensorRT build in progress runs to its end) and wait for it, then free
        the engine: nothing of the backend runs once this returns."""
        self.closing.set()
        pending, self._pending = self._pending, None
        candidate = cancel_or_wait(pending, self.name)
        if candidate is not None:   # it finished before a safe point after close() began: never installed
            self.runtime.release(candidate.handle)
        if self._own_executor:
            self._executor.shutdown(wait=True, cancel_futures=True)
        if self._served is not None:
            self.runtime.release(self._served.handle)
            self._served = None
