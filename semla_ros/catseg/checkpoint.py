"""Loading weights into CATSeg: official CAT-Seg checkpoints (.pth / .safetensors) or plain CLIP from open_clip.

Official checkpoints load strictly: the attention pre-hook maps `attn.{q,k,v}_proj_weight` (and SemLA's
`attn.{q,k,v}_proj.weight` aliases) onto our q/k/v Linear modules, so nothing is missing or unexpected.
"""
from __future__ import annotations

import copy
import itertools
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, TypeVar

import torch
from torch import nn

from .modeling.catseg import CATSeg

log = logging.getLogger(__name__)
_ModuleT = TypeVar("_ModuleT", bound=nn.Module)

CLIP_PREFIX = "sem_seg_head.predictor.clip_model."
CHECKPOINT_SOURCES = (
    "Official CAT-Seg checkpoints (CAT-Seg README, model zoo): "
    "model_base.pth = CAT-Seg (B), CLIP ViT-B/16, config 'vitb16_384': "
    "https://huggingface.co/spaces/hamacojr/CAT-Seg-weights/resolve/main/model_base.pth ; "
    "model_large.pth = CAT-Seg (L), CLIP ViT-L/14@336px, config 'vitl14_336' (the model SemLA uses, saved there as "
    "catseg/models/model_final.pth): "
    "https://huggingface.co/spaces/hamacojr/CAT-Seg-weights/resolve/main/model_large.pth "
    "(code and links: https://github.com/cvlab-kaist/CAT-Seg)"
)


class CheckpointNotFoundError(FileNotFoundError):
    """A checkpoint path that does not exist (or none given); the message says where the file comes from."""

    def __init__(self, path: str | os.PathLike | None, what: str = "CAT-Seg checkpoint") -> None:
        self.path = None if path is None else Path(path)
        head = f"no {what} given" if path is None else f"{what} not found: {self.path}"
        super().__init__(f"{head}. {CHECKPOINT_SOURCES}. "
                         "Weights are never downloaded implicitly; download the file and pass its path.")


class CheckpointFormatError(ValueError):
    """A checkpoint whose content does not fit the model (wrong keys, shapes or container)."""


class UntrainedAggregatorWarning(UserWarning):
    """CLIP weights were loaded but the CAT-Seg aggregator/upsamplers still hold random values."""


def read_state_dict(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors file or a .pth/.pt file (detectron2 {"model": ...} or a bare state dict)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointNotFoundError(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:  # read into memory (no memory map: a file replaced on disk cannot fault the process later)
            return dict(load(path.read_bytes()))
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise CheckpointFormatError(
                f"{path} is not a readable .safetensors checkpoint ({exc.__class__.__name__}: {exc}); the file is "
                f"damaged or not a checkpoint. {CHECKPOINT_SOURCES}") from exc
    try:
        blob = torch.load(str(path), map_location="cpu", weights_only=not trust_pickle)
    except Exception as exc:  # a pickle with non-tensor objects, or a corrupt file
        raise CheckpointFormatError(
            f"could not read {path} as a PyTorch checkpoint ({exc.__class__.__name__}: {exc}). If the file is "
            "trusted and holds extra Python objects, pass trust_pickle=True.") from exc
    if isinstance(blob, Mapping) and isinstance(blob.get("model"), Mapping):
        blob = blob["model"]  # detectron2 checkpointer layout
    elif isinstance(blob, Mapping) and isinstance(blob.get("state_dict"), Mapping):
        blob = blob["state_dict"]
    if not isinstance(blob, Mapping) or not blob:
        raise CheckpointFormatError(f"{path} holds no state dict (got {type(blob).__name__})")
    state = {}
    for key, value in blob.items():
        if not torch.is_tensor(value):
            raise CheckpointFormatError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        state[key[len("module."):] if key.startswith("module.") else key] = value
    return state


def state_dict_digest(module: nn.Module, length: int = 24) -> str:
    """Hash of every tensor of `module.state_dict()` (names, shapes, dtypes, bytes): the identity of a set of
    weights, used for cache keys, navigator ids and library entries' base-model fields."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str((tuple(t.shape), str(t.dtype))).encode())
        digest.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())
    return digest.hexdigest()[:length]


def load_catseg_weights(model: nn.Module, path: str | os.PathLike, trust_pickle: bool = False) -> nn.Module:
    """Load an official CAT-Seg checkpoint strictly into `model` (no missing, no unexpected keys)."""
    state = read_state_dict(path, trust_pickle=trust_pickle)
    try:
        # dry run on a weightless twin first: a mismatch must not leave `model` half loaded
        _meta_twin(model).load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        name = getattr(getattr(model, "config", None), "name", "?")
        raise CheckpointFormatError(f"{path} does not match the CAT-Seg config {name!r}: {exc}") from exc
    model.load_state_dict(state, strict=True)
    log.info("loaded CAT-Seg weights from %s (%d tensors)", path, len(state))
    return model


def clip_state_dict_to_catseg(clip_state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenAI / open_clip CLIP keys -> CATSeg keys (in_proj_weight is split by the attention load hook)."""
    skip = {"input_resolution", "context_length", "vocab_size", "attn_mask"}
    return {CLIP_PREFIX + key: value for key, value in clip_state.items()
            if key not in skip and not key.endswith(".attn_mask")}


def load_clip_state_dict(model: CATSeg, clip_state: Mapping[str, torch.Tensor]) -> None:
    """Load CLIP weights into the CLIP part of `model`; every CLIP parameter must be covered, shapes must agree."""
    relative = {key[len(CLIP_PREFIX):]: value for key, value in clip_state_dict_to_catseg(clip_state).items()}
    try:
        twin = _meta_twin(model).sem_seg_head.predictor.clip_model
        result = twin.load_state_dict(dict(relative), strict=False, assign=True)
        problem = (f"missing {result.missing_keys[:8]}, unexpected {result.unexpected_keys[:8]}"
                   if result.missing_keys or result.unexpected_keys else "")
    except RuntimeError as exc:
        problem = str(exc)
    if problem:
        name = getattr(getattr(model, "config", None), "name", "?")
        raise CheckpointFormatError(f"CLIP weights do not fit the CAT-Seg config {name!r}: {problem}")
    model.sem_seg_head.predictor.clip_model.load_state_dict(relative, strict=True)


def _meta_twin(model: _ModuleT) -> _ModuleT:
    """The same modules without storage, to validate a state dict before touching the real model. Copied with
    every tensor replaced by a meta one, not built again on the meta device: building runs the initialisers'
    meta kernels, and their first call imports torch._dynamo (over a second of a node's start)."""
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        meta = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(meta, requires_grad=tensor.requires_grad) \
            if isinstance(tensor, nn.Parameter) else meta
    return copy.deepcopy(model, memo)


def load_open_clip_weights(model: CATSeg, name: str = "ViT-B-16", pretrained: str = "openai",
                           cache_dir: str | None = None) -> nn.Module:
    """Start from plain CLIP: copy open_clip's `name`/`pretrained` weights (a tag, fetched by open_clip into its
    cache on a networked machine, or a local checkpoint path) into the CLIP towers of `model`.

    The aggregator and the upsamplers are not part of CLIP and stay untrained; a warning says so. Our towers use
    QuickGELU like OpenAI CLIP (what CAT-Seg builds on); weights trained with plain GELU would not fit.
    """
    import open_clip

    if os.sep in str(pretrained) or str(pretrained).endswith((".pt", ".pth", ".bin", ".safetensors")):
        if not Path(pretrained).is_file():
            raise CheckpointNotFoundError(pretrained, what=f"open_clip checkpoint for {name}")
    clip = open_clip.create_model(name, pretrained=pretrained, cache_dir=cache_dir, device="cpu")
    load_clip_state_dict(model, clip.state_dict())
    message = (f"loaded CLIP weights {name}/{pretrained} only: the CAT-Seg aggregator and upsamplers are untrained "
               "(random), so segmentations are meaningless until a CAT-Seg checkpoint is loaded "
               "(load_catseg_weights)")
    warnings.warn(message, UntrainedAggregatorWarning, stacklevel=2)
    log.warning(message)
    return model
