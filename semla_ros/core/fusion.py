"""Weighted LoRA fusion into plain weights: W_m = W_base,m + sum_i w_i (alpha_i/r_i) B_i A_i.

This equals PEFT's `add_weighted_adapter(..., combination_type="cat")` activated unmerged
(SemLA's fusion), but folded into the weights so the steady state runs at the speed of the
plain model. Each delta is ONE matrix product over the concatenated factors, in PEFT's
exact arithmetic (A_i * w_i * scaling_i in the factor dtype), so it matches PEFT's merged
delta bit for bit.

Weights are always staged as W_base + dW from a pristine clone of W_base, never
accumulated, so any number of swaps leaves exactly the bits of one fresh fusion. Staging
touches no model: the segmenter hands the staged weights to the predictor and the backend.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import torch


def _concat_factors(entries, weights, module, device, dtype):
    """(B_cat [out, sum r], A_cat [sum r, in]) of the entries that adapt `module`, or None.

    Same arithmetic as PEFT's cat merge: A * w * scaling with python floats, in `dtype`.
    """
    rows, cols = [], []
    for entry, weight in zip(entries, weights):
        pair = entry.factors.get(module)
        if pair is None:
            continue
        a, b = pair
        rows.append(a.to(device=device, dtype=dtype) * float(weight) * float(entry.scaling))
        cols.append(b.to(device=device, dtype=dtype))
    if not rows:
        return None
    return torch.cat(cols, dim=1), torch.cat(rows, dim=0)


def _factor_max(entry) -> tuple[float, float]:
    cached = getattr(entry, "factor_max", None)
    if cached is not None:
        return cached
    return (max(float(a.abs().max()) for a, _ in entry.factors.values()),
            max(float(b.abs().max()) for _, b in entry.factors.values()))


def _rank(entry) -> int:
    return max(a.shape[0] for a, _ in entry.factors.values())


def _product(pair) -> float:
    return pair[0] * pair[1]


def _check_lengths(entries, weights):
    if len(entries) != len(weights):
        raise ValueError(f"{len(entries)} entries but {len(weights)} weights")


def fuse_deltas(entries: Sequence, weights: Sequence[float], *, device=None,
                dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    """dW per target module for `entries` (AdapterEntry-like) fused with `weights`, in entry order."""
    _check_lengths(entries, weights)
    modules = dict.fromkeys(m for e in entries for m in e.factors)
    deltas = {}
    with torch.no_grad():
        for module in modules:
            b_cat, a_cat = _concat_factors(entries, weights, module, device, dtype)
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

    def __init__(self, model: torch.nn.Module, targets: Iterable[str]):
        self.model = model
        self._base: dict[str, torch.Tensor] = {}
        self._base_max: dict[str, float] = {}
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
            self._base_max[name] = float(base[name].abs().max()) if base[name].numel() else 0.0
        self._base = base

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self._base)

    def base_weights(self) -> FusedWeights:
        return FusedWeights(dict(self._base))

    def stage_fusion(self, entries: Sequence, weights: Sequence[float]) -> FusedWeights:
        """W_base + fuse_deltas(entries, weights) for every target, written into reused staging buffers.

        Bit-identical to W_base + fuse_deltas(...) for float32 weights (the sum formed in float32 and
        rounded once for half-precision weights), without allocating the deltas or fresh weights on
        every swap (one matmul into the buffer, one add of W_base). Touches no model state.
        """
        _check_lengths(entries, weights)
        bases = self._base
        unknown = {m for e in entries for m in e.factors} - set(bases)
        if unknown:
            raise ValueError(f"adapters touch modules that are not fusion targets: {sorted(unknown)[:3]}")
        # |W| <= max|W_base| + sum_i r_i |w_i s_i| max|A_i| max|B_i|: scan for inf only if that could overflow.
        delta_bound = sum(_rank(e) * abs(float(w) * float(e.scaling)) * _product(_factor_max(e))
                          for e, w in zip(entries, weights))
        if not math.isfinite(delta_bound):
            raise ValueError("fused LoRA factors are not finite")
        staged = {}
        with torch.no_grad():
            for name, base in bases.items():
                factors = _concat_factors(entries, weights, name, base.device, torch.float32)
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
                    buffer.add_(base)
                else:
                    buffer.copy_(base.float() + b_cat @ a_cat)
                if self._base_max[name] + delta_bound >= torch.finfo(base.dtype).max / 2 \
                        and not torch.isfinite(buffer).all():
                    raise ValueError(f"{name}: fused weight is not finite")
                staged[name] = buffer
        return FusedWeights(staged)
