"""Support numbers of one embedded frame: the one place they are computed (the segmenter, relabelling
and the coverage monitor all report these, so they must mean the same thing everywhere).

SemLA eq. 15 for the frame's own retrieval (how well the library covers it) and for a given fusion's
adapters and weights (how well the fusion the model runs covers it), their scale-free versions (times
the library's median centroid spacing), and the frame's nearest-centroid distance relative to that
spacing (the coverage monitor's gap test).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .retrieval import Retrieval, distances, scale_free_support, support_score


@dataclass(frozen=True)
class Support:
    """How well the library, and the fusion the model runs, cover the newest embedding (nan: none yet).

    `library` is eq. 15 of retrieval's top-K (as published by SemLA); `active` is eq. 15 of the
    active fusion's own adapters and weights, for the same embedding (nan while the base model runs).
    The scale-free ones are multiplied by the library's median centroid spacing: comparable across
    libraries and navigators (1: the adapters are as far as two typical centroids are apart)."""

    library: float = math.nan
    scale_free: float = math.nan
    active: float = math.nan
    active_scale_free: float = math.nan
    top_adapter: str = ""      # per-frame retrieval's top-1 for the newest embedding
    active_is_top: bool = False  # the active fusion's first (heaviest) adapter is that top-1


def frame_support(embedding, library, retrieval: Retrieval, metric: str, active_names=(), active_weights=(),
                  active_centroids=None) -> Support:
    """The support numbers of `embedding`, whose retrieval in `library` is `retrieval`; the active ones
    for the fusion of `active_names` with `active_weights` (centroids `active_centroids`, default: looked
    up in the library by name). An empty retrieval gives `Support()`."""
    if len(retrieval.indices) == 0 or retrieval.indices[0] >= len(library):
        return Support()
    spacing = library.median_inter_centroid_distance
    top = library.names[int(retrieval.indices[0])]
    out = dict(library=retrieval.support, top_adapter=top,
               scale_free=scale_free_support(retrieval.weights, retrieval.distances, spacing))
    if len(active_names):
        if active_centroids is None:
            active_centroids = np.stack([library[n].centroid for n in active_names])
        d = distances(embedding, np.asarray(active_centroids), metric)
        out.update(active=support_score(active_weights, d), active_is_top=active_names[0] == top,
                   active_scale_free=scale_free_support(active_weights, d, spacing))
    return Support(**out)


def relative_distance(embedding, library, retrieval: Retrieval | None = None,
                      metric: str | None = None) -> tuple[float, float]:
    """(Euclidean distance to the nearest usable centroid, that distance / the library's median centroid
    spacing; nan when the spacing is not a positive number). `retrieval`, the embedding's own euclidean
    one (`metric`), already holds the nearest: then no second search runs."""
    spacing = library.median_inter_centroid_distance
    if retrieval is not None and metric == "euclidean" and len(retrieval.indices):
        nearest = float(retrieval.distances[0])
    else:
        found = library.index.nearest(embedding, 1, "euclidean")[1]
        nearest = float(found[0]) if len(found) else math.inf
    return nearest, (nearest / spacing if math.isfinite(spacing) and spacing > 0 else math.nan)
