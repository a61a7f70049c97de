"""SemLA's LoRA target modules (`add_lora_config` MODUELS in the official fork), as name patterns.

The official list is written out for ViT-L/14 (214 names); PEFT silently skips the names a
smaller model lacks. The same rule as patterns resolves to exactly the wrapped modules of any
config (154 for ViT-B/16): CLIP q/k/v_proj, mlp.c_fc and mlp.c_proj in both towers, and the
aggregator's Swin q/k/v/proj + fc1/fc2 and class-attention q/k/v + MLP.0/MLP.2.
"""
from __future__ import annotations

import re

from torch import nn

SEMLA_TARGET_PATTERNS = (
    r"clip_model\.(visual\.)?transformer\.resblocks\.\d+\.(attn\.[qkv]_proj|mlp\.c_fc|mlp\.c_proj)",
    r"predictor\.transformer\.layers\.\d+\.swin_block\.block_[12]\.(attn\.(q|k|v|proj)|mlp\.fc[12])",
    r"predictor\.transformer\.layers\.\d+\.attention\.(attention\.[qkv]|MLP\.[02])",
)
_TARGET = re.compile(r"(^|\.)(" + "|".join(SEMLA_TARGET_PATTERNS) + r")$")


def semla_target_modules(model: nn.Module) -> list[str]:
    """Names of the Linear modules SemLA puts LoRAs on, in module order."""
    return [name for name, module in model.named_modules()
            if isinstance(module, nn.Linear) and _TARGET.search(name)]
