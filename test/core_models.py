"""Small torch models for the core tests: Linear layers at given dotted module names."""
from __future__ import annotations

import torch
from torch import nn


def linear_model(shapes: dict[str, tuple[int, int]], seed: int = 0, bias: bool = True) -> nn.Module:
    """A module tree with nn.Linear(in, out) at every dotted name in `shapes` ({name: (out, in)})."""
    torch.manual_seed(seed)
    root = nn.Module()
    for name, (out_f, in_f) in shapes.items():
        parent = root
        *path, leaf = name.split(".")
        for part in path:
            if not hasattr(parent, part):
                parent.add_module(part, nn.Module())
            parent = getattr(parent, part)
        parent.add_module(leaf, nn.Linear(in_f, out_f, bias=bias))
    return root


def random_factors(shapes: dict[str, tuple[int, int]], rank: int, generator: torch.Generator, std=0.02):
    return {name: (torch.randn(rank, i, generator=generator) * std, torch.randn(o, rank, generator=generator) * std)
            for name, (o, i) in shapes.items()}


class Chain(nn.Module):
    """Linear layers at dotted names, applied in insertion order with a tanh between them."""

    def __init__(self, shapes: dict[str, tuple[int, int]], seed: int = 0):
        super().__init__()
        self.body = linear_model(shapes, seed)
        self.names = list(shapes)

    def forward(self, x):
        for name in self.names:
            x = torch.tanh(self.body.get_submodule(name)(x))
        return x
