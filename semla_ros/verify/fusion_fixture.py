"""The SemLA part of the fixture check: retrieval and merged-adapter outputs against the official run.

Reproduces fusion_expected.npz from the fixture files alone: the library as-is (official
layout, so the inert CLIP q/k/v factors are dropped), weights from the recorded query
embedding, and for the SemLA top-k, the uniform and the single-adapter ("oracle") fusions the
text embeddings (computed with the fused text tower) and the logits. Every fusion is made by
the node's own path (`SemlaSegmenter.fuse_now`: stage, text with the staged weights, swap).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..core.library import AdapterLibrary
from ..core.retrieval import distances, retrieve, similarities
from ..core.segmenter import InlineExecutor, SemlaSegmenter
from .catseg_fixture import TOLERANCES, CheckRow, compare, read_rgb

WEIGHT_TOLERANCE = 1e-9   # float64 weights (README: 1e-9 in float64, 1e-6 in float32)


def _same_names(name: str, actual, expected) -> CheckRow:
    actual = [str(a) for a in np.atleast_1d(actual)]
    expected = [str(e) for e in np.atleast_1d(expected)]
    ok = actual == expected
    return CheckRow(name, (len(expected),), 0.0 if ok else float("inf"), 0.0, ok,
                    "" if ok else f"got {actual}, expected {expected}")


def check_fusion_fixture(fixture_dir, model, predictor) -> list[CheckRow]:
    """Rows for fusion_expected.npz; `model`/`predictor` hold the fixture's base weights and are left so."""
    fixture_dir = Path(fixture_dir)
    expected = np.load(fixture_dir / "fusion_expected.npz")
    config = json.loads((fixture_dir / "config.json").read_text())
    fusion_cfg = config.get("fusion", {})
    top_k = int(fusion_cfg.get("top_k", len(expected["semla_adapters"])))
    temperature = float(fusion_cfg.get("temperature", 0.05))
    image = read_rgb(fixture_dir / config.get("input", {}).get("file", "input.png"))
    query = expected["query_embedding"]

    library = AdapterLibrary.open(fixture_dir / "loradb", navigator_dim=query.shape[-1], model=model)
    rows = []
    if library.skipped:
        rows.append(CheckRow("library", (len(library.skipped),), float("inf"), 0.0, False,
                             f"skipped entries: {library.skipped}"))
    rows.append(_same_names("source_domains", library.names, expected["source_domains"]))
    d = distances(query, library.centroids)
    rows.append(compare("source_distances", d, expected["source_distances"], WEIGHT_TOLERANCE))
    rows.append(compare("source_similarities", similarities(d), expected["source_similarities"], WEIGHT_TOLERANCE))

    r = retrieve(query, library.centroids, top_k=top_k, temperature=temperature)
    semla = [library.entries[i] for i in r.indices]
    rows.append(_same_names("semla_adapters", [e.name for e in semla], expected["semla_adapters"]))
    rows.append(compare("semla_weights", r.weights, expected["semla_weights"], WEIGHT_TOLERANCE))
    rows.append(compare("semla_similarities", r.similarities, expected["semla_similarities"], WEIGHT_TOLERANCE))

    n = len(library)
    uniform_weights = np.full(n, 1.0 / n)
    rows.append(_same_names("uniform_adapters", library.names, expected["uniform_adapters"]))
    rows.append(compare("uniform_weights", uniform_weights, expected["uniform_weights"], WEIGHT_TOLERANCE))
    oracle = library.entries[0]
    rows.append(_same_names("oracle_adapter", [oracle.name], expected["oracle_adapter"]))

    segmenter = SemlaSegmenter(predictor, library, navigator=None, executor=InlineExecutor())
    cases = [("semla", semla, r.weights), ("uniform", list(library.entries), uniform_weights),
             ("oracle", [oracle], [1.0])]   # one adapter at its own scaling alpha/r, like set_adapter
    try:
        for prefix, entries, weights in cases:
            event = segmenter.fuse_now(entries, list(weights))
            if not event.ok:
                rows.append(CheckRow(f"{prefix}_fusion", (len(entries),), float("inf"), 0.0, False, str(event.error)))
                continue
            text = predictor.text_embeddings()
            with torch.no_grad():
                x, padded = predictor.preprocess(image)
                logits = model(x, text)
                produced = {
                    "text_embeddings": text,
                    "logits": logits,
                    "sem_seg": lambda logits=logits, padded=padded: predictor.postprocess(logits, image.shape[:2],
                                                                                         padded),
                    "sliding_sem_seg": lambda text=text: predictor.sliding_postprocess(
                        predictor.sliding_logits(image, text), image.shape[:2]),
                }
                for what, value in produced.items():
                    key = f"{prefix}_{what}"
                    if key in expected.files:
                        value = value() if callable(value) else value
                        rows.append(compare(key, value, expected[key], TOLERANCES[what]))
    finally:
        segmenter.fuse_now([], [])   # back to the fixture's base weights
        segmenter.close()
    return rows
