"""The official SemLA way of holding adapters, for the benchmarks that compare against it: a PEFT copy of the
model with each adapter added under its name and its LoRA factors copied in (one place, used by `semla-bench
fusion` and `semla-bench stream`)."""
from __future__ import annotations

import copy


def peft_copy(model, adapters):
    """`adapters`: (name, LoraConfig, {module: (A, B)}) in order; returns the PEFT model (eval mode)."""
    from peft import get_peft_model

    peft_model = None
    for name, config, factors in adapters:
        if peft_model is None:
            peft_model = get_peft_model(copy.deepcopy(model), config, adapter_name=name)
        else:
            peft_model.add_adapter(name, config)
        for module, (a, b) in factors.items():
            layer = peft_model.base_model.model.get_submodule(module)
            layer.lora_A[name].weight.data.copy_(a)
            layer.lora_B[name].weight.data.copy_(b)
    if peft_model is None:
        raise ValueError("no adapter to load")
    return peft_model.eval()
