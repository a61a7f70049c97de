"""The exported CAT-Seg network core in ONNX Runtime: about twice as fast as PyTorch eager on a CPU robot.

Why weights as inputs: the fusion targets become graph inputs in our own layout, bound at every run to
the predictor's live PyTorch parameters (no copy: ONNX Runtime reads their memory through IOBinding).
So an adapter swap costs nothing here: once `CatSegPredictor.load_weights` has written the fused weights,
the next run reads them, and the engine holds exactly the announced fusion by construction. Where the
exporter transposed a Linear weight, a Transpose node restores its layout; ONNX Runtime's optimizer fuses
it into the MatMul (FusedMatMul with transB), so frames cost what the plain export costs. Weights that
are not inputs (a fusion target the mapping could not find) are baked in; the shared lifecycle
(`engine_lifecycle`) rebuilds when a fusion changes one of them.

CPU provider by default; CUDA where `onnxruntime-gpu` is installed and the model runs on CUDA. fp32 only
(fp16 runs on TensorRT, or PyTorch autocast on CUDA).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

import numpy as np
import torch

from ..catseg.utils.onnx import INPUT_NAMES, OUTPUT_NAME
from .engine_cache import OnnxKey
from .engine_lifecycle import EngineRuntime
from .onnx_weights import OnnxWeightRef, WeightMapping

if TYPE_CHECKING:   # an optional runtime, imported where it runs
    import onnxruntime as ort

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
# ONNX Runtime's worker threads spin after each run by default, taking the cores PyTorch (text tower, fusion,
# pre/post-processing) and the other session (navigator / segmentation) need next; off where they share them.
SPIN = os.environ.get("SEMLA_ORT_SPINNING", "0")


def onnxruntime_unavailable_reason(device: str | torch.device = "cpu") -> str | None:
    """None when ONNX Runtime can run on `device` here, else why not (said once by the caller)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
    except ImportError as exc:
        return f"the 'onnxruntime' and 'onnx' Python packages are needed ({exc})"
    kind = torch.device(device).type
    provider = PROVIDERS.get(kind)
    if provider is None or provider not in ort.get_available_providers():
        return (f"ONNX Runtime {ort.__version__} has no provider for device '{device}' (available: "
                f"{', '.join(ort.get_available_providers())}; CUDA needs the onnxruntime-gpu package)")
    return None


def weights_as_inputs(model, refs: Mapping[str, OnnxWeightRef],
                      shapes: Mapping[str, tuple[int, ...]]) -> list[tuple[str, str]]:
    """Turn the initializers (or Constant nodes) holding `refs` into graph inputs named after our parameters,
    in our layout (`shapes`). Returns (parameter, input name) of the weights now fed at run time; an
    initializer two parameters map to is left alone (it cannot follow both)."""
    from onnx import TensorProto, helper

    graph = model.graph
    owners: dict[str, list[str]] = {}
    for param, ref in refs.items():
        owners.setdefault(ref.onnx_name, []).append(param)
    fed = {names[0]: refs[names[0]] for names in owners.values() if len(names) == 1
           and refs[names[0]].dtype == "float32"}
    taken = {ref.onnx_name for ref in fed.values()}
    kept = [init for init in graph.initializer if init.name not in taken]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = [n for n in graph.node if not (n.op_type == "Constant" and n.output[0] in taken)]
    existing = ({i.name for i in graph.input} | {i.name for i in graph.initializer}
                | {o for n in nodes for o in n.output})
    feeds = []
    for param, ref in fed.items():
        name = param if param not in existing else f"semla_weight:{param}"
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shapes[param])))
        if name != ref.onnx_name:
            if ref.transposed:
                feed = helper.make_node("Transpose", [name], [ref.onnx_name], name=f"semla_feed:{param}", perm=[1, 0])
            else:
                feed = helper.make_node("Identity", [name], [ref.onnx_name], name=f"semla_feed:{param}")
            nodes.insert(0, feed)
        feeds.append((param, name))
    del graph.node[:]
    graph.node.extend(nodes)
    return feeds


@dataclass
class OrtEngine:
    session: ort.InferenceSession
    feeds: tuple[tuple[str, str], ...]   # (parameter name, graph input name)


class OnnxRuntime(EngineRuntime):
    """ONNX Runtime session per build; weights bound from the live model at every run."""

    name = "onnxruntime"
    profiled = False

    def __init__(self, predictor, precision: str = "fp32", threads: int = 0):
        if precision != "fp32":
            raise ValueError(f"the onnxruntime backend runs fp32, got precision {precision!r} "
                             "(fp16: backend tensorrt, or torch on CUDA)")
        reason = onnxruntime_unavailable_reason(predictor.device)
        if reason:
            raise RuntimeError(f"ONNX Runtime backend unavailable: {reason}")
        super().__init__(predictor, precision)
        self.device = next(predictor.model.parameters()).device   # with its index: what the bindings point into
        self.provider = PROVIDERS[self.device.type]
        self.threads = int(threads)
        config = predictor.model.config
        self.logit_size = 4 * (config.inference.clip_resolution // config.vision.patch_size)

    def build(self, onnx_path: Path, onnx_key: OnnxKey, mapping: WeightMapping, capacity: int,
              opt_classes: int):
        import onnx
        import onnxruntime as ort

        model = onnx.load(str(onnx_path))
        feeds = weights_as_inputs(model, mapping.refs, {n: tuple(p.shape) for n, p in self.params.items()})
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = self.threads
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.add_session_config_entry("session.intra_op.allow_spinning", SPIN)
        provider = (self.provider, {"device_id": self.device.index or 0}) if self.device.type == "cuda" \
            else self.provider
        session = ort.InferenceSession(model.SerializeToString(), options, providers=[provider])
        return OrtEngine(session, tuple(feeds)), {param for param, _ in feeds}, False

    def run(self, handle: OrtEngine, views: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        device_type, device_id = self.device.type, self.device.index or 0
        binding = handle.session.io_binding()
        keep = [views.to(self.device, torch.float32).contiguous(), text.to(self.device, torch.float32).contiguous()]
        for name, tensor in zip(INPUT_NAMES, keep, strict=True):
            binding.bind_input(name, device_type, device_id, np.float32, list(tensor.shape), tensor.data_ptr())
        for param, name in handle.feeds:
            weight = self.params[param].detach()
            binding.bind_input(name, device_type, device_id, np.float32, list(weight.shape), weight.data_ptr())
        out = torch.empty((views.shape[0], text.shape[0], self.logit_size, self.logit_size), device=self.device)
        binding.bind_output(OUTPUT_NAME, device_type, device_id, np.float32, list(out.shape), out.data_ptr())
        if device_type == "cuda":   # ONNX Runtime reads on its own stream: torch's writes must be done
            torch.cuda.current_stream(self.device).synchronize()
        handle.session.run_with_iobinding(binding)
        return out

    def set_weights(self, handle: OrtEngine, names: list[str]) -> None:
        """Nothing to copy: every run binds the live parameters. Checked, since a fed parameter must stay the
        contiguous float32 tensor the binding reads."""
        for param in names:
            weight = self.params[param]
            if weight.dtype != torch.float32 or not weight.is_contiguous() or weight.device != self.device:
                raise ValueError(f"{param} is not a contiguous float32 tensor on {self.device}")

    def release(self, handle: OrtEngine) -> None:
        handle.session = None
