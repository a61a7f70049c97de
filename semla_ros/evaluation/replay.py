"""Recorded frames replayed through the node's segmenter: the one replay loop of the evaluation protocol's
"semla" / "semla-debounced" methods and of relabelling's per-image / debounced comparison.

A fresh `SemlaSegmenter` runs with `InlineExecutor` (an embedding and the fusion it starts count for the
frame itself, so a replay is deterministic) each frame at its own time. Per-image SemLA is
the segmenter's `trigger: frame` with every frame embedded, no warm-up and no recall (`per_image`): each frame
is segmented with the fusion retrieved for its own embedding; the debounced policy is the settings as given.
"""
from __future__ import annotations

from ..core.segmenter import FrameResult, InlineExecutor, SemlaSegmenter
from ..core.settings import SegmenterSettings


def per_image(settings: SegmenterSettings) -> SegmenterSettings:
    """Official SemLA as the segmenter runs it: every frame embedded and fused for its own embedding (no
    recall of a recent fusion in its place)."""
    return settings.replace(trigger="frame", embed_every_n=1, embed_rest_every_n=1, warmup_frames=1,
                             fusion_recall=0)


class SegmenterReplay:
    """Frames through a fresh segmenter on `predictor`'s model (whose current weights become its base)."""

    def __init__(self, predictor, library, navigator, settings: SegmenterSettings, backend=None):
        self.segmenter = SemlaSegmenter(predictor, library, navigator, settings, backend=backend,
                                        executor=InlineExecutor())

    @property
    def fusions(self) -> int:
        """Fusions made active so far."""
        return self.segmenter.swap_count

    def process(self, image, seconds: float, stamp=None) -> FrameResult:
        """Segment one frame at its time `seconds`; `.fusion` of the result is what the frame swapped in."""
        return self.segmenter.process(image, stamp=stamp, time_s=seconds)

    def close(self) -> None:
        self.segmenter.close()

    def __enter__(self) -> "SegmenterReplay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
