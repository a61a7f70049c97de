"""Which parameters an engine's graph depends on: probed once per architecture, then read from the engine cache
(`<engine_cache_dir>/engine_params/`).

Why remembered: the probe is a forward and a backward of the whole network (about a second of a CPU start,
more under load) and runs before an engine backend exists, so it sat on the path to the first mask of every
start. Its answer depends only on the architecture (the config and the network code) and torch, which is
what its cache key holds; a missing, unreadable or foreign answer is probed again and stored.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..catseg.modeling.catseg import CATSeg
from ..catseg.utils.onnx import export_code_digest
from .engine_cache import ArtifactCache, CacheKey

log = logging.getLogger(__name__)

PARAMS_FILE = "engine_params.json"


@dataclass(frozen=True)
class EngineParamsKey(CacheKey):
    config: str             # digest of the model config (architecture, not weights)
    export_code: str        # export_code_digest(): the network code
    probe_code: str         # digest of this file: a changed probe never reuses an old answer
    torch_version: str


def engine_parameter_names(model: CATSeg) -> set[str]:
    """Parameters the engine's graph depends on: those the image path reaches (autograd on one
    probe forward). The text tower stays in PyTorch (text embeddings are an engine input) and
    the dense last block never uses its q/k projections, so their fused weights need no update."""
    config = model.config
    device = next(model.parameters()).device
    s = config.inference.clip_resolution
    probe_image = torch.zeros(1, 3, s, s, device=device)
    probe_text = torch.nn.functional.normalize(torch.ones(2, config.embed_dim, device=device), dim=-1)
    names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.dtype.is_floating_point], strict=True)
    with torch.enable_grad():
        flags = [p.requires_grad for p in params]
        for p in params:
            p.requires_grad_(True)
        try:
            out = model(probe_image, probe_text)
            grads = torch.autograd.grad(out.sum(), params, allow_unused=True)
        finally:
            for p, flag in zip(params, flags, strict=True):
                p.requires_grad_(flag)
    return {n for n, g in zip(names, grads, strict=True) if g is not None}


def engine_params_key(model: CATSeg) -> EngineParamsKey:
    config = json.dumps(model.config.to_dict(), sort_keys=True).encode()
    return EngineParamsKey(config=hashlib.sha256(config).hexdigest()[:24], export_code=export_code_digest(),
                           probe_code=hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16],
                           torch_version=torch.__version__)


def cached_engine_parameter_names(model: CATSeg, cache: ArtifactCache) -> set[str]:
    """`engine_parameter_names(model)`, read from `cache` when this architecture was probed before, else
    probed and stored (a cache that cannot be written is said once per start and costs only the probe)."""
    key = engine_params_key(model)
    path = cache.find(key, PARAMS_FILE)
    if path is not None:
        try:
            names = set(json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            names = set()
        known = {name for name, _ in model.named_parameters()}
        if names and names <= known:
            return names
        log.info("the remembered engine parameters in %s do not fit this model: probing again", path)
    names = engine_parameter_names(model)
    try:
        cache.store(key, PARAMS_FILE, lambda partial: partial.write_text(json.dumps(sorted(names))))
    except OSError as error:
        log.warning("could not remember the engine's parameters in %s (%s): probed again at every start",
                    cache.root, error)
    return names
