"""CLIP multi-head self-attention with q/k/v as separate nn.Linear modules.

WHY: LoRA adapters target `attn.q_proj` / `attn.k_proj` / `attn.v_proj`, so they must be real Linear modules that
the forward actually calls. The official checkpoints store the same tensors as `attn.{q,k,v}_proj_weight`
(nn.MultiheadAttention's split layout) and SemLA adds `attn.{q,k,v}_proj.weight` aliases; OpenAI/open_clip CLIP
stores `attn.in_proj_weight`. A load_state_dict pre-hook maps all three layouts onto this module.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_STREAMS = ("q", "k", "v")


class SplitQKVAttention(nn.Module):
    """Self-attention over (B, L, D) tokens with the parameter names of the official CAT-Seg CLIP."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} not divisible by heads {heads}")
        self.width = width
        self.heads = heads
        self.q_proj = nn.Linear(width, width, bias=False)
        self.k_proj = nn.Linear(width, width, bias=False)
        self.v_proj = nn.Linear(width, width, bias=False)
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)
        self.register_load_state_dict_pre_hook(_accept_official_qkv_keys)

    def project(self, x: torch.Tensor, stream: str) -> torch.Tensor:
        """One input projection (with its slice of in_proj_bias), through the Linear module so LoRA applies."""
        index = _STREAMS.index(stream)
        linear = (self.q_proj, self.k_proj, self.v_proj)[index]
        return linear(x) + self.in_proj_bias[index * self.width:(index + 1) * self.width]

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        batch, length, _ = x.shape
        head_dim = self.width // self.heads

        def split_heads(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(batch, length, self.heads, head_dim).transpose(1, 2)

        q = split_heads(self.project(x, "q")) * head_dim ** -0.5
        k = split_heads(self.project(x, "k"))
        v = split_heads(self.project(x, "v"))
        scores = q @ k.transpose(-2, -1)
        if attn_mask is not None:
            scores = scores + attn_mask
        out = F.softmax(scores, dim=-1) @ v
        out = out.transpose(1, 2).reshape(batch, length, self.width)
        return self.out_proj(out)


def _accept_official_qkv_keys(module, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
    """Rename `{q,k,v}_proj_weight` / split `in_proj_weight` to `{q,k,v}_proj.weight` before loading.

    When both the upstream key and the SemLA alias are present they must hold the same values.
    """
    fused_key = prefix + "in_proj_weight"
    if fused_key in state_dict:
        fused = state_dict.pop(fused_key)
        for stream, part in zip(_STREAMS, fused.chunk(3, dim=0), strict=True):
            state_dict.setdefault(f"{prefix}{stream}_proj_weight", part)
    for stream in _STREAMS:
        upstream_key = f"{prefix}{stream}_proj_weight"
        alias_key = f"{prefix}{stream}_proj.weight"
        if upstream_key not in state_dict:
            continue
        upstream = state_dict.pop(upstream_key)
        if alias_key not in state_dict:
            state_dict[alias_key] = upstream
            continue
        alias = state_dict[alias_key]
        if not _same_values(upstream, alias):
            error_msgs.append(f"{upstream_key} and {alias_key} are both present but differ; "
                              "the checkpoint is inconsistent")


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a is b:
        return True
    if a.shape != b.shape:
        return False
    if a.is_meta or b.is_meta:  # structure-only checks (e.g. manifest tests) carry no values to compare
        return True
    return bool(torch.equal(a, b.to(device=a.device, dtype=a.dtype)))
