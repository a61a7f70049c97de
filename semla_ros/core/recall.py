"""Recently made fusions, so that returning to a domain is a swap and not a new fusion.

A fusion's cost is its text embeddings (the vocabulary through the fused text tower) and the staging of
W_base + dW. When retrieval asks again for a fusion like one made recently (same top-1 adapter, weights
within `tolerance` in total variation, same vocabulary), the adaptation re-stages that fusion's adapters
and weights from the library's factor cache and reuses its text embeddings: the model runs exactly the
fusion it ran before. Only names, weights and text embeddings are kept (no weights, no factors), so the
memory is a few vocabularies' embeddings.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass(frozen=True)
class RecalledFusion:
    names: tuple[str, ...]
    weights: tuple[float, ...]
    classes: tuple[str, ...]
    text: object


def total_variation(names_a, weights_a, names_b, weights_b) -> float:
    """Total variation distance between two fusions' weights over the union of their adapters, in [0, 1]."""
    wa = dict(zip(names_a, weights_a, strict=True))
    wb = dict(zip(names_b, weights_b, strict=True))
    return 0.5 * float(sum(abs(wa.get(n, 0.0) - wb.get(n, 0.0)) for n in set(wa) | set(wb)))


class FusionRecall:
    """The `size` most recently made fusions, at most one per top-1 adapter (0: recall nothing)."""

    def __init__(self, size: int):
        self.size = int(size)
        self._by_top: OrderedDict[str, RecalledFusion] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_top)

    def resize(self, size: int) -> None:
        self.size = int(size)
        while len(self._by_top) > self.size:
            self._by_top.popitem(last=False)

    def clear(self) -> None:
        self._by_top.clear()

    def put(self, names, weights, classes, text) -> None:
        if self.size <= 0 or not names:
            return
        fusion = RecalledFusion(tuple(names), tuple(float(w) for w in weights), tuple(classes), text)
        self._by_top.pop(fusion.names[0], None)
        self._by_top[fusion.names[0]] = fusion
        self.resize(self.size)

    def find(self, names, weights, classes, tolerance: float) -> RecalledFusion | None:
        """The recent fusion that stands for this one, if any (and mark it most recently used)."""
        if not names:
            return None
        fusion = self._by_top.get(names[0])
        if fusion is None or fusion.classes != tuple(classes):
            return None
        if total_variation(fusion.names, fusion.weights, names, weights) > tolerance:
            return None
        self._by_top.move_to_end(names[0])
        return fusion
