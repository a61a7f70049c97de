"""The navigator's image tower in ONNX Runtime, exported and cached like the segmentation engine.

Why: on a CPU robot ONNX Runtime runs the segmentation about twice as fast as PyTorch, and the navigator
(SemLA's CLIP ViT-L/14) left in PyTorch is what then competes with it for the same cores. Its tower never
takes adapters, so there is no weight binding or rebuild: it is exported once into the same ONNX cache as
the segmentation (keyed by its weights, the source of its module classes, the exporter, torch and the opset),
its session is built in the background, and the PyTorch tower embeds until then. A build that fails is said
once and PyTorch keeps embedding. Preparation and normalisation stay the navigator's own
(`ImageNavigator.embed(images, forward=...)`), so both paths embed the same inputs the same way.
"""
from __future__ import annotations

import hashlib
import inspect
import logging
import threading
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
import torch

from ..catseg.checkpoint import state_dict_digest
from ..catseg.utils.onnx import EXPORTER, OPSET
from .engine_cache import ArtifactCache, OnnxKey, default_cache_dir
from .engine_lifecycle import EXPORT_LOCK, BuildCancelled, cancel_or_wait
from .onnxruntime_backend import SPIN, onnxruntime_unavailable_reason

if TYPE_CHECKING:   # an optional runtime, imported where it runs
    import onnxruntime as ort

log = logging.getLogger(__name__)

NAVIGATOR_ONNX_FILE = "navigator.onnx"
INPUT_NAME, OUTPUT_NAME = "image", "embedding"


def network_code_digest(network: torch.nn.Module) -> str:
    """Hash of the source of every module class in `network` and of this exporter: part of the cache key,
    so a change to the tower's code (open_clip's or CAT-Seg's) never reuses a stale export."""
    digest = hashlib.sha256(Path(__file__).read_bytes())
    for source in sorted({inspect.getsourcefile(type(m)) or type(m).__qualname__ for m in network.modules()}):
        digest.update(source.encode())
        if Path(source).is_file():
            digest.update(Path(source).read_bytes())
    return digest.hexdigest()[:16]


def export_tower(network: torch.nn.Module, path: str | Path, image_size: int, opset: int = OPSET) -> None:
    """Write the tower's forward as ONNX: image (B,3,S,S) -> embedding (B,D), batch dynamic."""
    device = next(network.parameters()).device
    example = torch.zeros(1, 3, image_size, image_size, device=device)
    # nn.MultiheadAttention's inference fast path (open_clip's towers) is one fused op ONNX has no export for;
    # the regular path computes the same attention. Process-wide switch, so restored at once.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad():
            torch.onnx.export(network, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


class EngineNavigator:
    """A navigator (an `ImageNavigator`) whose tower runs in ONNX Runtime on the CPU once its session is built."""

    name = "onnxruntime"

    def __init__(self, navigator, *, cache_dir: str | Path | None = None, executor: Executor | None = None,
                 threads: int = 0, opset: int = OPSET, say: Callable[[str], None] = log.warning):
        if torch.device(navigator.device).type != "cpu":
            raise ValueError(f"the navigator's ONNX Runtime engine runs on the CPU; the navigator is on "
                             f"{navigator.device}")
        reason = onnxruntime_unavailable_reason("cpu")
        if reason:
            raise RuntimeError(f"ONNX Runtime unavailable for the navigator: {reason}")
        self.navigator = navigator
        self.id, self.dim = navigator.id, navigator.dim
        self.threads, self.opset = int(threads), int(opset)
        self.cache = ArtifactCache(Path(cache_dir or default_cache_dir()) / "onnx")
        self._say = say
        self._session: ort.InferenceSession | None = None
        self._failure: str | None = None
        self._own_executor = executor is None
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="semla-navigator-build")
        self.closing = threading.Event()     # set when close() begins: the build stops at a safe point
        self._pending: Future | None = self._executor.submit(self._build)

    # ------------------------------------------------------------------ build (worker)
    def onnx_key(self) -> OnnxKey:
        network = self.navigator.network
        return OnnxKey(model_digest=state_dict_digest(network), precision="fp32", opset=self.opset,
                       exporter=EXPORTER, export_code=network_code_digest(network), torch_version=torch.__version__)

    def export(self) -> Path:
        """The tower's ONNX file from the cache, or exported now and cached."""
        key = self.onnx_key()
        found = self.cache.find(key, NAVIGATOR_ONNX_FILE)
        if found is not None:
            return found
        with EXPORT_LOCK:
            return self.cache.store(key, NAVIGATOR_ONNX_FILE, lambda partial: export_tower(
                self.navigator.network, partial, self.navigator.image_size, self.opset))

    def _build(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = self.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", SPIN)
        self._stop_if_closing()
        path = self.export()
        self._stop_if_closing()
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def _stop_if_closing(self) -> None:
        if self.closing.is_set():
            raise BuildCancelled("the navigator's engine closed during its build")

    # ------------------------------------------------------------------ state
    def _install_finished(self) -> None:
        future = self._pending
        if future is None or not future.done():
            return
        self._pending = None
        try:
            self._session = future.result()
        except Exception as exc:  # said once; the PyTorch tower keeps embedding
            self._failure = f"building the navigator's ONNX Runtime engine failed ({type(exc).__name__}: {exc})"
            self._say(f"{self._failure}; the PyTorch navigator embeds")

    @property
    def serving(self) -> str:
        """'engine' once the session embeds, else 'pytorch'."""
        self._install_finished()
        return "engine" if self._session is not None else "pytorch"

    def status(self) -> tuple[str, str]:
        if self.serving == "engine":
            return "ok", "navigator tower in ONNX Runtime (CPU)"
        if self._failure is not None:
            return "warn", f"{self._failure}; the PyTorch navigator embeds"
        return "warn", "the navigator's ONNX Runtime engine is being built; the PyTorch navigator embeds meanwhile"

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the build finished (tools and tests; the node never waits); raise if it failed."""
        if self._pending is not None:
            self._pending.exception(timeout)
        if self.serving != "engine":
            raise RuntimeError(self._failure or "no navigator engine was built")

    # ------------------------------------------------------------------ embedding
    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        session = self._session
        if session is None:   # embed() calls this only while the engine serves
            raise RuntimeError("the navigator's ONNX Runtime session is not built (or was closed)")
        x = np.ascontiguousarray(batch.detach().to("cpu", torch.float32).numpy())
        return torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x})[0])

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N,D) float32 embeddings: the engine's once built, the PyTorch tower's until then."""
        if self.serving == "engine":
            return self.navigator.embed(images, forward=self._run)
        return self.navigator.embed(images)

    def close(self) -> None:
        """Cancel the build if it has not started, else stop it at its next safe point (an export in progress
        runs to its end) and wait for it: nothing of the engine runs once this returns."""
        self.closing.set()
        pending, self._pending = self._pending, None
        cancel_or_wait(pending, "navigator's")   # a session built meanwhile is dropped
        if self._own_executor:
            self._executor.shutdown(wait=True, cancel_futures=True)
        self._session = None
