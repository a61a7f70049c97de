"""EmbeddingCadence: how many frames apart the navigator embeds, fewer while the decision is still.

The navigator costs about as much as the segmentation network (CLIP ViT-L/14 beside CAT-Seg ViT-B on a CPU),
yet most embeddings of a camera that stays in one domain change nothing. So the cadence backs off while the
decision is still and comes back at once when it moves (as TCP's retransmission timer or an adaptive sampler
do): `embed_every_n` frames apart while the decision moves (warm-up, no fusion yet, a request waiting, a
candidate holding evidence or an EMA over its threshold, a shift just made, per-image SemLA), and after each
still embedding the interval doubles, up to `embed_rest_every_n`. A domain change is therefore seen at most
`embed_rest_every_n` frames late, and from its first embedding on every frame the decision needs is embedded
again. `embed_rest_every_n` <= `embed_every_n` keeps a fixed cadence.
"""
from __future__ import annotations


class EmbeddingCadence:
    """The current interval between embeddings, from the settings' two cadences and what the decision did."""

    def __init__(self) -> None:
        self._still = 0   # still embeddings in a row since the decision last moved

    def interval(self, every_n: int, rest_every_n: int) -> int:
        """Frames from one embedding to the next: every_n doubled per still embedding, at most rest_every_n."""
        every_n = max(1, int(every_n))
        rest = max(every_n, int(rest_every_n))
        return min(rest, every_n << min(self._still, 30))

    def settle(self, moving: bool) -> None:
        """An embedding reached the decision: `moving` (the decision needs frames) starts dense again."""
        self._still = 0 if moving else self._still + 1

    def reset(self) -> None:
        """Start dense (time ran back, a new library)."""
        self._still = 0
