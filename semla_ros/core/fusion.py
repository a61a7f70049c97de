"""Weighted LoRA fusion into plain weights: W_m = W_base,m + sum_i w_i (alpha_i/r_i) B_i A_i.

This equals PEFT's `add_weighted_adapter(..., combination_type="cat")` activated unmerged
(SemLA's fusion), but folded into the weights so the steady state runs at the speed of the
plain model. Each delta is ONE matrix product over the concatenated factors, in PEFT's
exact arithmetic (A_i * w_i * scaling_i in the factor dtype), so it matches PEFT's merged
delta bit for bit.

Weights are always staged as W_base + dW from a pristine clone of W_base, never
accumulated, so any number of swaps leaves exactly the bits of one fresh fusion. Staging
touches no model: the segmenter hands the staged weights to the predictor and the backend.

A staged delta must be finite and sane: |dW|_F <= MAX_DELTA_RATIO |W_base|_F per module, or
staging fails and the previous model stays. `check_adapter` applies the same bound to one
adapter from its r x r Gram matrices (no delta formed), so a broken adapter can be skipped
before it spoils a fusion of good ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

# Trained LoRA deltas change a layer by a few percent of its norm. Ten times the layer's own norm
# is no longer an adaptation: the adapter replaces the pretrained layer (lora_alpha 1e30 collapses
# every mask to one class). A layer whose weights are ~0 is measured against an RMS of MIN_BASE_RMS.
MAX_DELTA_RATIO = 10.0
MIN_BASE_RMS = 1e-3


def _resolve(entries, weights) -> list[tuple[Mapping, float, float]]:
    """(factors, weight, scaling) per entry; each entry's factors are fetched once (a lazy entry
    reads its file here, so a fusion never sees two versions of one adapter)."""
    if len(entries) != len(weights):
        raise ValueError(f"{len(entries)} entries but {len(weights)} weights")
    return [(e.factors, float(w), float(e.scaling)) for e, w in zip(entries, weights, strict=True)]


def _concat_factors(resolved, module, device, dtype):
    """(B_cat [out, sum r], A_cat [sum r, in]) of the entries that adapt `module`, or None.

    Same arithmetic as PEFT's cat merge: A * w * scaling with python floats, in `dtype`.
    """
    rows, cols = [], []
    for factors, weight, scaling in resolved:
        pair = factors.get(module)
        if pair is None:
            continue
        a, b = pair
        rows.append(a.to(device=device, dtype=dtype) * weight * scaling)
        cols.append(b.to(device=device, dtype=dtype))
    if not rows:
        return None
    return torch.cat(cols, dim=1), torch.cat(rows, dim=0)


def fuse_deltas(entries: Sequence, weights: Sequence[float], *, device=None,
                dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """dW per target module for `entries` (AdapterEntry-like) fused with `weights`, in entry order."""
    resolved = _resolve(entries, weights)
    modules = dict.fromkeys(m for factors, _, _ in resolved for m in factors)
    deltas = {}
    with torch.no_grad():
        for module in modules:
            b_cat, a_cat = _concat_factors(resolved, module, device, dtype)
            deltas[module] = b_cat @ a_cat
    return deltas


@dataclass(frozen=True)
class FusedWeights:
    """Complete target weights (W_base + dW, or W_base) staged for a swap.

    From `WeightApplier.stage_fusion` the tensors are the applier's staging buffers: valid
    until its next stage_fusion() call (copy them into the model before staging again).
    """

    weights: Mapping[str, torch.Tensor]   # module name -> weight tensor (param dtype/device)

    def parameter_overrides(self) -> dict[str, torch.Tensor]:
        """The same tensors keyed by parameter name ("<module>.weight")."""
        return {f"{m}.weight": w for m, w in self.weights.items()}


class WeightStager:
    """Owns pristine clones of every target weight of `model` and stages fusions off the inference path."""

    def __init__(self, model: torch.nn.Module, targets: Iterable[str], *, max_delta_ratio: float = MAX_DELTA_RATIO):
        self.model = model
        self.max_delta_ratio = float(max_delta_ratio)
        self._base: dict[str, torch.Tensor] = {}
        self._limit: dict[str, float] = {}      # largest sane |dW|_F per target
        self._buffers: dict[str, torch.Tensor] = {}
        self.add_targets(targets)

    def add_targets(self, targets: Iterable[str]) -> None:
        """Clone the base weights of new targets (they must still be unfused in the model).

        Copy-on-write, so a stage() running on another thread keeps a consistent view.
        """
        base = dict(self._base)
        for name in dict.fromkeys(targets):
            if name in base:
                continue
            try:
                weight = self.model.get_submodule(name).weight
            except AttributeError:
                raise ValueError(f"fusion target {name} is not a module with a weight in the model") from None
            if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
                raise ValueError(f"fusion target {name} does not have a 2-d weight (expected a Linear)")
            base[name] = weight.detach().clone()
            norm = float(torch.linalg.vector_norm(base[name], dtype=torch.float64))
            self._limit[name] = self.max_delta_ratio * max(norm, MIN_BASE_RMS * math.sqrt(base[name].numel()))
        self._base = base

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self._base)

    def base_weights(self) -> FusedWeights:
        return FusedWeights(dict(self._base))

    def check_adapter(self, entry) -> None:
        """ValueError when one adapter, at weight 1, would fail staging's bound (or does not fit):
        |s B A|_F^2 = s^2 sum((B^T B) * (A A^T)), from r x r matrices in float64 (numpy: torch's
        per-call overhead on matrices this small is ten times the work)."""
        for module, (a, b) in entry.factors.items():
            base = self._base.get(module)
            if base is None:
                raise ValueError(f"adapter touches {module}, which is not a fusion target")
            if (b.shape[0], a.shape[1]) != tuple(base.shape):
                raise ValueError(f"{module}: LoRA delta {b.shape[0]}x{a.shape[1]} does not match the "
                                 f"weight {base.shape[0]}x{base.shape[1]}")
            a64, b64 = a.detach().cpu().numpy().astype(np.float64), b.detach().cpu().numpy().astype(np.float64)
            with np.errstate(over="ignore", invalid="ignore"):
                square = float(np.einsum("ij,ij->", b64.T @ b64, a64 @ a64.T)) * float(entry.scaling) ** 2
            self._check_norm(module, math.sqrt(max(square, 0.0)) if math.isfinite(square) else math.inf)

    def _check_norm(self, module: str, norm: float) -> None:
        if not math.isfinite(norm):
            raise ValueError(f"{module}: fused weight is not finite")
        if norm > self._limit[module]:
            base = self._limit[module] / self.max_delta_ratio
            raise ValueError(f"{module}: LoRA delta |dW| = {norm:.3g} is {norm / base:.3g} times the weight's "
                             f"|W| = {base:.3g} (at most {self.max_delta_ratio:g}): such an adapter replaces the "
                             "layer instead of adapting it")

    def _check_delta(self, module: str, delta: torch.Tensor) -> None:
        norm = float(torch.linalg.vector_norm(delta))
        if not math.isfinite(norm) and bool(torch.isfinite(delta).all()):   # only the float32 sum overflowed
            norm = float(torch.linalg.vector_norm(delta, dtype=torch.float64))
        self._check_norm(module, norm)

    def stage_fusion(self, entries: Sequence, weights: Sequence[float]) -> FusedWeights:
        """W_base + fuse_deltas(entries, weights) for every target, written into reused staging buffers.

        Bit-identical to W_base + fuse_deltas(...) for float32 weights (the sum formed in float32 and
        rounded once for half-precision weights), without allocating the deltas or fresh weights on
        every swap (one matmul into the buffer, one add of W_base). Each delta is checked (finite,
        sane) before it is added. Touches no model state.
        """
        resolved = _resolve(entries, weights)
        bases = self._base
        unknown = {m for factors, _, _ in resolved for m in factors} - set(bases)
        if unknown:
            raise ValueError(f"adapters touch modules that are not fusion targets: {sorted(unknown)[:3]}")
        staged = {}
        with torch.no_grad():
            for name, base in bases.items():
                factors = _concat_factors(resolved, name, base.device, torch.float32)
                if factors is None:
                    staged[name] = base
                    continue
                b_cat, a_cat = factors
                if (b_cat.shape[0], a_cat.shape[1]) != tuple(base.shape):
                    raise ValueError(f"{name}: LoRA delta {b_cat.shape[0]}x{a_cat.shape[1]} does not match the "
                                     f"weight {base.shape[0]}x{base.shape[1]}")
                buffer = self._buffers.get(name)
                if buffer is None:
                    buffer = self._buffers[name] = torch.empty_like(base)
                if base.dtype == torch.float32:
                    torch.matmul(b_cat, a_cat, out=buffer)
                    self._check_delta(name, buffer)
                    buffer.add_(base)
                else:
                    delta = b_cat @ a_cat
                    self._check_delta(name, delta)
                    buffer.copy_(base.float() + delta)
                staged[name] = buffer
        return FusedWeights(staged)
