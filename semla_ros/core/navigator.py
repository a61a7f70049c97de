"""Navigators: image -> domain embedding, the space where adapter centroids live.

The official SemLA navigator is OpenAI CLIP ViT-L/14 at 224 px, projected and NOT normalised
(`get_image_features`); `OpenClipNavigator` reproduces it with open_clip and accepts any other
open_clip model. Weights are never downloaded here: a pretrained tag must already be in the
local cache (or be given as a checkpoint file), otherwise the error says what to fetch.
`TowerNavigator` reuses a frozen copy of a CAT-Seg CLIP image tower (its CLS embedding), so a
demo needs no second network.

`build_navigator(spec)` is the one place a navigator description becomes a navigator:

    tower                       frozen copy of the CAT-Seg model's image tower (demo, tests)
    openclip:MODEL/TAG          open_clip MODEL with the weights of pretrained TAG from the local cache
    openclip:MODEL/TAG=PATH     the weights of TAG from a local file (the tag's QuickGELU and normalisation)
    openclip:MODEL/PATH         a local file; OpenAI CLIP weights when MODEL has an 'openai' tag (so
                                QuickGELU and OpenAI's normalisation, as SemLA's ViT-L/14 navigator needs),
                                otherwise MODEL's plain settings
"""
from __future__ import annotations

import copy
import os
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from ..catseg.predictor import check_rgb_image
from .navigator_spec import NavigatorSpec


@runtime_checkable
class Navigator(Protocol):
    dim: int
    id: str

    def embed(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """(N,D) float32 embeddings of HxWx3 uint8 RGB images."""
        ...


class ImageNavigator(ABC):
    """A navigator whose embedding is `network` (a frozen image tower: (B,3,S,S) -> (B,D)) on prepared batches.

    Why split: the network call is pluggable (`embed(images, forward=...)`, like `CatSegPredictor.predict`),
    so an engine (ONNX Runtime, `backends/navigator_engine.py`) runs the same tower on the same inputs while
    preparation and normalisation stay here, written once."""

    network: torch.nn.Module
    image_size: int
    batch_size: int
    normalize: bool
    device: torch.device

    @abstractmethod
    def prepare(self, images: list[np.ndarray]) -> torch.Tensor:
        """(B,3,S,S) float32 network input of checked images."""

    @torch.inference_mode()
    def embed(self, images: Sequence[np.ndarray], forward=None) -> np.ndarray:
        images = check_images(images)
        forward = forward or self.network
        out = []
        for start in range(0, len(images), self.batch_size):
            features = forward(self.prepare(images[start:start + self.batch_size]).to(self.device)).float()
            if self.normalize:
                features = torch.nn.functional.normalize(features, dim=-1)
            out.append(features.cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def check_images(images: Sequence[np.ndarray]) -> list[np.ndarray]:
    """A non-empty list of images, each passing the predictor's one image check."""
    if isinstance(images, np.ndarray) and images.ndim == 3:
        raise ValueError("embed() takes a list of images; wrap a single image in a list")
    out = []
    for i, image in enumerate(images):
        try:
            out.append(check_rgb_image(image))
        except ValueError as exc:
            raise ValueError(f"image {i}: {exc}") from None
    if not out:
        raise ValueError("embed() needs at least one image")
    return out


def build_navigator(spec: str | NavigatorSpec, model=None, *, device="cpu", normalize: bool = False):
    """The navigator a description names; `model` (a CATSeg) is needed for 'tower'."""
    spec = spec if isinstance(spec, NavigatorSpec) else NavigatorSpec.parse(spec)
    if spec.kind == "tower":
        if model is None:
            raise ValueError("navigator 'tower' needs the CAT-Seg model whose image tower it copies")
        return TowerNavigator(model, normalize=normalize, device=device)
    if spec.model is None:
        raise ValueError(f"navigator {spec!r} names no open_clip model (expected openclip:MODEL/...)")
    tag = spec.tag
    if spec.path is not None and tag is None:
        import open_clip

        tag = "openai" if "openai" in open_clip.list_pretrained_tags_by_model(spec.model) else None
    return OpenClipNavigator(model_name=spec.model, pretrained=tag, checkpoint=spec.path, normalize=normalize,
                             device=device)


def _cached_pretrained_file(model_name: str, tag: str) -> str:
    """The local file of an open_clip pretrained tag, looked up in the caches only (no network)."""
    import open_clip
    from open_clip import pretrained as oc_pretrained

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    if not cfg:
        known = open_clip.list_pretrained_tags_by_model(model_name)
        raise ValueError(f"open_clip has no pretrained tag {tag!r} for {model_name!r}; known tags: {known}")
    if cfg.get("file"):
        return cfg["file"]
    looked = []
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = os.path.split(hub)   # open_clip's 'org/repo/' or 'org/repo/file' convention
        filename = filename or oc_pretrained.HF_WEIGHTS_NAME
        candidates = list(oc_pretrained._get_safe_alternatives(filename)) + [filename]
        for name in candidates:
            found = try_to_load_from_cache(repo_id, name)
            if isinstance(found, str) and os.path.isfile(found):
                return found
            looked.append(f"Hugging Face cache {repo_id}/{name}")
    url = cfg.get("url", "")
    if url:
        target = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if target.is_file():
            return str(target)
        looked.append(str(target))
    raise FileNotFoundError(
        f"open_clip weights {model_name}/{tag} are not in the local cache (looked in: {'; '.join(looked)}). "
        f"They are never downloaded implicitly: fetch them once on a machine with internet, e.g. "
        f"python -c \"import open_clip; open_clip.create_model('{model_name}', pretrained='{tag}')\" "
        f"(then copy ~/.cache/huggingface or ~/.cache/clip), or pass a local checkpoint file.")


class OpenClipNavigator(ImageNavigator):
    """open_clip image embeddings (default: the official SemLA navigator, CLIP ViT-L/14 openai @224).

    `pretrained` is an open_clip tag (looked up in the local cache), a checkpoint path, or None
    for random weights (tests only). `checkpoint` loads a file while keeping the tag's
    settings (QuickGELU, normalisation statistics).
    """

    def __init__(self, model_name: str = "ViT-L-14", pretrained: str | None = "openai", image_size: int = 224,
                 normalize: bool = False, device="cpu", checkpoint: str | os.PathLike | None = None,
                 batch_size: int = 16):
        import open_clip

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        tag = pretrained
        weights: str | None = None
        if checkpoint is None and pretrained is not None and (os.sep in str(pretrained) or Path(pretrained).suffix):
            checkpoint, tag = pretrained, None
        if checkpoint is not None:
            checkpoint_file = Path(checkpoint).expanduser()
            if not checkpoint_file.is_file():
                raise FileNotFoundError(
                    f"navigator checkpoint {checkpoint_file} does not exist; give an open_clip checkpoint file for "
                    f"{model_name} (e.g. open_clip_model.safetensors from the model's Hugging Face repo)")
            weights = str(checkpoint_file)
        elif tag is not None:
            weights = _cached_pretrained_file(model_name, tag)
        tag_cfg = open_clip.get_pretrained_cfg(model_name, tag) if tag else {}
        kwargs = dict(force_quick_gelu=bool(tag_cfg.get("quick_gelu", False)))
        if tag_cfg.get("mean") is not None:
            kwargs.update(image_mean=tag_cfg["mean"], image_std=tag_cfg["std"])
        model, _, preprocess = open_clip.create_model_and_transforms(
            model_name, pretrained=weights, device=device, force_image_size=image_size, **kwargs)
        self.model = model.eval().requires_grad_(False)
        self.preprocess = preprocess
        self.device = torch.device(device)
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        self.image_size = int(image_size)
        # A file holding a tag's weights is that tag: entries made with the cached tag still match.
        source = tag or (Path(weights).name if weights else "random")
        self.id = f"open_clip:{model_name}:{source}:{image_size}:{'l2' if normalize else 'raw'}"
        self.dim = int(self.model.visual.output_dim)
        self.network = self.model.visual   # what open_clip's encode_image runs before its optional normalisation

    def prepare(self, images: list[np.ndarray]) -> torch.Tensor:
        from PIL import Image

        return torch.stack([self.preprocess(Image.fromarray(a)) for a in images])


class TowerNavigator(ImageNavigator):
    """CLS embedding (ln_post(CLS) @ proj, like CLIP's encode_image) of a frozen copy of a CAT-Seg image tower.

    The copy is taken at construction, before any fusion touches the live model, so the
    embedding space stays fixed while adapters are swapped. Preprocessing is CLIP's: resize
    the short side to the tower's pretraining resolution (bicubic), centre crop, normalise.
    `id` contains a digest of the tower weights: centroids made with another tower do not match.
    """

    def __init__(self, catseg_model, image_size: int | None = None, normalize: bool = False, device=None,
                 batch_size: int = 16):
        from ..catseg.checkpoint import state_dict_digest

        visual = catseg_model.clip_model.visual
        config = catseg_model.config
        self.tower = self.network = copy.deepcopy(visual).eval().requires_grad_(False)
        self.device = torch.device(device) if device is not None else next(self.tower.parameters()).device
        self.tower.to(self.device)
        self.image_size = int(image_size or config.vision.pretrain_resolution)
        self.normalize = bool(normalize)
        self.batch_size = int(batch_size)
        inf = config.inference
        self._mean = torch.tensor(inf.pixel_mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(inf.pixel_std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.dim = int(self.tower.proj.shape[1])
        self.id = (f"tower:{getattr(config, 'name', 'catseg')}:{state_dict_digest(self.tower, 12)}:{self.image_size}:"
                   f"{'l2' if self.normalize else 'raw'}")

    def _prepare(self, image: np.ndarray) -> torch.Tensor:
        import torch.nn.functional as F

        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float()
        height, width = x.shape[-2:]
        s = self.image_size
        scale = s / min(height, width)
        size = (max(s, round(height * scale)), max(s, round(width * scale)))
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 255)
        top, left = (size[0] - s) // 2, (size[1] - s) // 2
        x = x[:, :, top:top + s, left:left + s]
        return (x - self._mean) / self._std

    def prepare(self, images: list[np.ndarray]) -> torch.Tensor:
        return torch.cat([self._prepare(a) for a in images])
