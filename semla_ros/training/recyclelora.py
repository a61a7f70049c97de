"""RecycleLoRA's dual adapters (Cho et al., "RecycleLoRA: Rank-Revealing QR-Based Dual-LoRA Subspace
Adaptation for Domain Generalized Semantic Segmentation", CVPR 2026 Findings), as a library entry.

What the paper describes, and how each part is realised here:

- RRQR of every frozen target weight finds its major and minor subspace directions
  (`training/rrqr.py`: pivoted QR of W.T, W = sum_i b_i a_i^T ordered major -> minor).
- MAIN adapter (rank r_main) "leverages minor subspace directions ... to learn diverse and
  independent features": it is initialised with W's last r_main RRQR components (both factors,
  balanced, `rrqr_components`), and those components are moved out of the frozen weight, so the
  model is unchanged at step 0 (the PiSSA / MiLoRA / SoMA construction, with RRQR's directions).
- SUB adapter (rank r_sub < r_main) "refines major directions with minimal adjustments": it is
  initialised with W's first r_sub components, also moved out of the frozen weight, and trains
  with its own, smaller scaling (`sub_scale` x the main one) and learning rate (`sub_lr_scale`
  x the main one: its own optimizer param group in `training.loop.fit`).
- Two adapters with distinct roles, no extra regularisation loss, no inference cost: both are
  PEFT LoRA adapters active together on the same targets; the loss is the loop's.

The paper's exact ranks, scalings and learning rates are not reproduced here (its code was not
public when this was written); the defaults are ours: r_main + r_sub = the standard adapter's
rank (6 + 2 for r 8, so both train the same number of parameters), sub scaling 0.5x and sub LR
0.1x the main adapter's.

Library entry (what fusion and PEFT read): while training, each target computes
(W - s_m B_m0 A_m0 - s_s B_s0 A_s0) x + s_m B_m A_m x + s_s B_s A_s x. Relative to the one shared
base weight W that every entry of a library is a delta on, that is
dW = s_m (B_m A_m - B_m0 A_m0) + s_s (B_s A_s - B_s0 A_s0), written as ONE plain LoRA with the
main scaling s_m: A = [A_m; A_m0; k A_s; k A_s0], B = [B_m, -B_m0, B_s, -B_s0], k = s_s / s_m, of
rank 2 (r_main + r_sub). This is PEFT's own PiSSA -> LoRA conversion (`LoraModel.
subtract_mutated_init`: dW = [A | A0] x [B | -B0]) applied to both adapters; it is exact, loads in
PEFT (`PeftModel.from_pretrained`) and fuses with the library's unchanged reader and fusion. The
cost: the entry stores twice the trained rank (fusion folds it into the weights, so inference does
not see it).
"""
from __future__ import annotations

import torch

from .rrqr import rrqr_components

MAIN, SUB = "recycle_main", "recycle_sub"
InitialFactors = dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]]   # adapter -> module -> (A0, B0)


def init_recyclelora(peft_model, adapters: dict[str, float]) -> InitialFactors:
    """Initialise MAIN on the minor and SUB (if present) on the major RRQR components of every
    target, and subtract both from the frozen base weight. `adapters`: PEFT adapter name -> its
    scaling. Returns the initial factors, which the saved entry needs (dW is relative to them)."""
    from peft.tuners.lora import LoraLayer

    initial: InitialFactors = {name: {} for name in adapters}
    prefix = "base_model.model."
    with torch.no_grad():
        for module_name, module in peft_model.named_modules():
            if not isinstance(module, LoraLayer) or MAIN not in module.lora_A:
                continue
            base = module.get_base_layer().weight
            k = min(base.shape)
            r_main = module.lora_A[MAIN].weight.shape[0]
            r_sub = module.lora_A[SUB].weight.shape[0] if SUB in module.lora_A else 0
            if r_main + r_sub > k:
                raise ValueError(f"{module_name}: main + sub rank {r_main + r_sub} exceed min(out, in) = {k}")
            parts = {MAIN: range(k - r_main, k)}
            if r_sub:
                parts[SUB] = range(r_sub)
            original = base.detach().clone()
            residual = base.detach().double().clone()
            for name, indices in parts.items():
                a0, b0 = rrqr_components(original, indices, adapters[name])
                module.lora_A[name].weight.copy_(a0.to(module.lora_A[name].weight))
                module.lora_B[name].weight.copy_(b0.to(module.lora_B[name].weight))
                residual -= adapters[name] * (b0.double() @ a0.double())
                initial[name][module_name.removeprefix(prefix)] = (a0.float().clone(), b0.float().clone())
            base.copy_(residual.to(base.dtype))
    if not initial[MAIN]:
        raise ValueError(f"no LoRA layers of adapter {MAIN!r} in the model")
    return initial


def entry_factors(trained: dict[str, dict[str, tuple[torch.Tensor, torch.Tensor]]], scalings: dict[str, float],
                  initial: InitialFactors | None = None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One plain LoRA (scaling = the first adapter's) whose delta is sum_j s_j (B_j A_j - B_j0 A_j0).

    `trained`: adapter -> module -> (A, B) after training; `initial`: the same for the factors an
    adapter started from when they were subtracted from the base weight (absent: B0 A0 = 0).
    """
    names = list(scalings)
    first = scalings[names[0]]
    initial = initial or {}
    out = {}
    for module in trained[names[0]]:
        rows, cols = [], []
        for name in names:
            if module not in trained[name]:
                continue
            k = scalings[name] / first
            a, b = trained[name][module]
            rows.append(a if k == 1.0 else a * k)
            cols.append(b)
            if module in initial.get(name, {}):
                a0, b0 = initial[name][module]
                rows.append(a0 if k == 1.0 else a0 * k)
                cols.append(-b0)
        out[module] = (torch.cat(rows), torch.cat(cols, dim=1)) if len(rows) > 1 else (rows[0], cols[0])
    return out
