"""The FISA training profile: a CAT-Seg reading of "Adapting Vision-Language Model with Fine-grained
Semantics for Open-Vocabulary Segmentation" (Chng et al., FISA), whose result is a plain LoRA entry.

FISA's finding: open-vocabulary segmentation is bottlenecked by mask CLASSIFICATION (the
vision-language model), not mask GENERATION; so it freezes the mask generator and adapts a small
part of the VLM, with (a) Semantic-guided Visual Encoding (SEVE): fine-grained class semantics
injected EARLY in the visual encoding, and (b) Strategic Image-Mask Optimization (SIMO): only a
small, chosen set of the VLM's parameters is optimised, keeping CLIP's pre-trained knowledge.

How each part maps onto CAT-Seg and a SemLA library, and what changed and why:

- Mask generator frozen. In CAT-Seg the class decision is the CLIP cost volume (dense image
  embedding . class text embedding); the aggregator (`predictor.transformer`: spatial Swin and
  class attention) and the upsampling decoder turn it into masks, so they are the "mask
  generator" and get no LoRA at all. The text tower is frozen too: its class embeddings are the
  semantics the image side is guided towards, and a frozen text side keeps the vocabulary open.
- SIMO: LoRA only on the CLIP image tower's attention query and value projections (CAT-Seg's own
  choice of what to fine-tune in CLIP, restricted to the image side), minus the last block's
  query, which CAT-Seg's dense last block never runs, plus the SEVE targets below. So the
  trainable set is a fraction of a standard SemLA adapter (counted by `trainable_parameters`).
- SEVE: FISA adds a module that feeds the class text embeddings into early image layers. A
  library entry cannot add modules (fusion applies W + dW to existing Linear weights, and the node
  runs exactly that), so the guidance is realised through what is trained: a LoRA on `mlp.c_proj`
  (what writes into the residual stream) of each early block (the first half of the image tower)
  whose B columns start as the class SEMANTIC DIRECTIONS of that block, A = 0 on those columns
  (the delta starts at zero; A learns where each class is). The semantic direction of class c at
  block l is the mean gradient, over the training patches, of the patch's cosine to class c's
  text embedding at the cost volume, with respect to the residual stream after block l: the
  direction an early token must move to be read as class c downstream (through the dense last
  block, which does not pass the patch residual on unchanged, so a plain pull-back through the
  projection would not do). With more classes than rank, the top singular directions of the
  (unit) class directions are used; leftover rank keeps PEFT's default init.
  What is lost against FISA: the guidance is fixed at training time for the training vocabulary
  (the entry is one constant delta), where FISA's module conditions on the classes of each image.
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F

from .rrqr import DEFAULT_ROW_NORM

_BLOCK = re.compile(r"(^|\.)clip_model\.visual\.transformer\.resblocks\.(\d+)\.")


def _visual_blocks(model) -> int:
    return len(model.clip_model.visual.transformer.resblocks)


def guided_blocks(model) -> list[int]:
    """The early image blocks that receive semantic guidance: the first half of the tower."""
    return list(range(max(1, _visual_blocks(model) // 2)))


def fisa_targets(model) -> list[str]:
    """LoRA targets of the profile, in module order: image-tower q/v (not the dense last block's q)
    and `mlp.c_proj` of the guided blocks. Nothing in the text tower, aggregator or decoder."""
    last = _visual_blocks(model) - 1
    guided = set(guided_blocks(model))
    out = []
    for name, module in model.named_modules():
        match = _BLOCK.search(name)
        if match is None or not isinstance(module, torch.nn.Linear):
            continue
        block, leaf = int(match.group(2)), name[match.end():]
        if leaf == "attn.v_proj" or (leaf == "attn.q_proj" and block != last) or \
                (leaf == "mlp.c_proj" and block in guided):
            out.append(name)
    return out


def guidance_module(target: str) -> int | None:
    """The guided block a target injects into (its `mlp.c_proj`), else None."""
    match = _BLOCK.search(target)
    return int(match.group(2)) if match is not None and target.endswith(".mlp.c_proj") else None


def semantic_directions(model, clip_inputs: torch.Tensor, text_embeddings: torch.Tensor,
                        blocks: Sequence[int], max_images: int = 16) -> dict[int, torch.Tensor]:
    """block -> (width, C) unit columns: per class, the mean gradient of the patches' cosine to the
    class text embedding at the cost volume w.r.t. the residual stream after the block."""
    visual = model.clip_model.visual
    outputs: dict[int, torch.Tensor] = {}
    hooks = [visual.transformer.resblocks[b].register_forward_hook(
        lambda _m, _i, out, b=b: outputs.__setitem__(b, out)) for b in blocks]
    try:
        with torch.enable_grad():
            x = clip_inputs[:max_images].detach().clone().requires_grad_(True)
            dense = F.normalize(model.image_features(x).dense, dim=1)          # (N, E, h, w)
            cosine = torch.einsum("nehw,ce->nchw", dense, text_embeddings.detach())
            taps = [outputs[b] for b in blocks]
            columns: dict[int, list[torch.Tensor]] = {b: [] for b in blocks}
            for c in range(cosine.shape[1]):
                grads = torch.autograd.grad(cosine[:, c].mean(), taps, retain_graph=c < cosine.shape[1] - 1)
                for b, g in zip(blocks, grads, strict=True):
                    columns[b].append(g[:, 1:].mean(dim=(0, 1)))               # patches, not CLS
    finally:
        for h in hooks:
            h.remove()
    return {b: F.normalize(torch.stack(cols, dim=1), dim=0).detach() for b, cols in columns.items()}


def guidance_b(directions: torch.Tensor, rank: int) -> torch.Tensor:
    """(width, m) B columns spanning the class directions: m = min(rank, C) top left singular
    vectors, scaled to PEFT's default lora_A row norm (the same step size regime as a standard LoRA)."""
    u, s, _ = torch.linalg.svd(directions.double(), full_matrices=False)
    m = min(rank, int((s > 1e-6 * s.max()).sum()))
    return (u[:, :m] * DEFAULT_ROW_NORM).to(directions.dtype)


def init_fisa_guidance(peft_model, adapter_name: str, directions: dict[int, torch.Tensor]) -> list[str]:
    """Writes the semantic directions into B (A = 0 for those rank components) of every guided
    block's c_proj LoRA; the other components keep PEFT's init. Returns the modules it set."""
    from peft.tuners.lora import LoraLayer

    done = []
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            block = guidance_module(name)
            if block is None or block not in directions or not isinstance(module, LoraLayer) \
                    or adapter_name not in module.lora_A:
                continue
            lora_a, lora_b = module.lora_A[adapter_name].weight, module.lora_B[adapter_name].weight
            b = guidance_b(directions[block], lora_a.shape[0]).to(lora_b)
            lora_b[:, :b.shape[1]] = b
            lora_a[:b.shape[1]] = 0.0
            done.append(name)
    if len(done) != len(directions):
        raise ValueError(f"semantic guidance reached {len(done)} of {len(directions)} guided blocks")
    return done
