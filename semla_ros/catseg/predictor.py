"""CatSegPredictor: owns the vocabulary, the text-embedding cache, the PyTorch model's weights and the
pre/post-processing around CATSeg. It is the one inference path: whoever runs the network (the model
itself, or an engine backend's `forward`) plugs in as `forward`, everything around it stays here.

Two inference paths reproduce the official code (fixture README items 1-5):
- whole image: normalise, zero-pad to a multiple of 32, resize to the CLIP size, one forward;
- sliding window (what SemLA evaluates with): 640x640 resize, four 384 crops + a global view, averaged.

Post-processing of the whole-image path is geometrically correct by default: the 96x96 map covers the *padded*
image, so it is resized to the padded size and then cropped to the input. `official_postprocess=True` instead
crops the map by the unpadded pixel size (the official quirk), to compare with official `sem_seg` outputs.

Several frames (one per camera) go through `predict_frames`: the frames of one size are preprocessed as a batch
and make one network call together (`forward_batches`); each frame's mask is what `predict` makes of it.

Text cache, one rule: embeddings are computed on demand and reused until the vocabulary changes or weights are
written through `load_weights` (which installs the embeddings computed for them, or drops the cache). Code that
writes the model's text tower any other way (training) calls `invalidate_text_cache()`.
"""
from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call

from .modeling.catseg import CATSeg
from .modeling.clip import text_tower_parameter_names
from .modeling.text_encoder import ClipTextEncoder
from .tokenizer import tokenize_class_names

CLIP_PREFIX = "sem_seg_head.predictor.clip_model."


@dataclass(frozen=True)
class Prediction:
    probs: torch.Tensor  # (T, H, W) per-class sigmoid probabilities at the input size
    class_ids: np.ndarray  # (H, W) int64 argmax over classes


class CatSegPredictor:
    def __init__(self, model: CATSeg, class_names: Sequence[str], device: str | torch.device = "cpu",
                 sliding_window: bool = False, official_postprocess: bool = False) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.sliding_window = bool(sliding_window)
        self.official_postprocess = bool(official_postprocess)
        self._lock = threading.RLock()
        self._class_names: tuple[str, ...] = ()
        self._tokens: torch.Tensor  # set by set_classes below
        self._text_cache: torch.Tensor | None = None
        inf = self.config.inference
        self._mean = torch.tensor(inf.pixel_mean, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(inf.pixel_std, dtype=torch.float32, device=self.device).view(1, 3, 1, 1)
        self.set_classes(class_names)

    # ------------------------------------------------------------------ vocabulary and text embeddings
    @property
    def class_names(self) -> list[str]:
        return list(self._class_names)

    @property
    def tokens(self) -> torch.Tensor:
        """(T, 77) token ids of the current vocabulary's prompts."""
        return self._tokens

    def set_classes(self, names: Sequence[str]) -> None:
        """Replace the vocabulary (validated before anything changes) and drop the cached embeddings."""
        names = tuple(names) if not isinstance(names, str) else names
        if isinstance(names, str) or len(names) == 0:
            raise ValueError("class_names must be a non-empty list of strings")
        tokens = tokenize_class_names(names, self.config.prompt_template, self.config.text.context_length)
        with self._lock:
            self._class_names = names
            self._tokens = tokens.to(self.device)
            self._text_cache = None

    def invalidate_text_cache(self) -> None:
        with self._lock:
            self._text_cache = None

    def load_weights(self, weights: Mapping[str, torch.Tensor], text_embeddings: torch.Tensor | None = None,
                     class_names: Sequence[str] | None = None) -> None:
        """Copy full weights (module name -> W, as `model.get_submodule(name).weight`) into the model.

        `text_embeddings` computed for these weights and the vocabulary `class_names` are installed as the
        cache when that is still the vocabulary; otherwise the cache is dropped and recomputed on demand.
        """
        with self._lock, torch.no_grad():
            for module, value in weights.items():
                weight = self.model.get_submodule(module).weight
                if not isinstance(weight, torch.Tensor):
                    raise TypeError(f"{module}.weight is not a tensor (got {type(weight).__name__})")
                weight.copy_(value)
            self._text_cache = None
            if text_embeddings is not None and tuple(class_names or ()) == self._class_names:
                expected = (len(self._class_names), self.config.embed_dim)
                if tuple(text_embeddings.shape) != expected:
                    raise ValueError(f"text embeddings must have shape {expected}, "
                                     f"got {tuple(text_embeddings.shape)}")
                self._text_cache = text_embeddings.detach().to(self.device)

    def model_snapshot(self, copied: Callable[[str], bool] | None = None) -> CATSeg:
        """A deep copy of the model as it is between two `load_weights` calls: taken under the weights lock, so
        a copy made on another thread (an engine rebuild) never mixes two fusions. Parameters for which
        `copied(name)` is False are shared with the model, not copied (ones the caller never reads)."""
        with self._lock:
            memo = {} if copied is None else {id(p): p for n, p in self.model.named_parameters() if not copied(n)}
            return copy.deepcopy(self.model, memo)

    def text_embeddings(self, overrides: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """L2-normalised (T, E) embeddings of the vocabulary.

        Without `overrides`: the cached embeddings (computed when missing). With `overrides` (full
        parameter names as in `model.named_parameters()` -> tensors): computed with those parameters substituted,
        on a weightless copy of the text tower, leaving the model and the cache untouched (safe from another
        thread). Overrides of non-text parameters are accepted and have no effect on text.
        """
        if overrides is not None:
            return self._text_embeddings_with(overrides)
        with self._lock:
            if self._text_cache is None:
                with torch.no_grad():
                    self._text_cache = self.model.encode_text(self._tokens)
            return self._text_cache

    def _text_embeddings_with(self, overrides: Mapping[str, torch.Tensor]) -> torch.Tensor:
        model_params = dict(self.model.named_parameters())
        unknown = sorted(set(overrides) - set(model_params))
        if unknown:
            raise KeyError(f"override names are not parameters of the model: {unknown[:5]}")
        clip_model = self.model.clip_model
        names = text_tower_parameter_names(clip_model)
        params = {}
        for name in names:
            full = CLIP_PREFIX + name
            base = model_params[full]
            value = overrides.get(full, base)
            if value.shape != base.shape:
                raise ValueError(f"override {full} has shape {tuple(value.shape)}, expected {tuple(base.shape)}")
            params[name] = value.to(device=base.device, dtype=base.dtype)
        text = self.config.text
        with torch.device("meta"):
            shadow = ClipTextEncoder(text.width, text.layers, text.heads, self.config.embed_dim,
                                     text.context_length, text.vocab_size, text.mlp_ratio)
        with torch.no_grad():
            with self._lock:
                tokens = self._tokens
            return F.normalize(functional_call(shadow, params, (tokens,), strict=True), dim=-1)

    # ------------------------------------------------------------------ whole-image path
    def _image_tensor(self, image: np.ndarray) -> torch.Tensor:
        """(1,3,H,W) float 0-255 of an image that passed check_rgb_image."""
        tensor = torch.from_numpy(np.ascontiguousarray(image)).to(self.device)
        return tensor.permute(2, 0, 1).unsqueeze(0).float()

    def preprocess(self, image_rgb_uint8: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """Official whole-image preprocessing: normalise, zero-pad bottom/right to a multiple of 32, resize.

        Returns the (1, 3, S, S) CLIP input and the padded size (Hp, Wp).
        """
        return self.preprocess_batch(self._image_tensor(check_rgb_image(image_rgb_uint8)))

    def preprocess_batch(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """The whole-image preprocessing of a (B,3,H,W) 0-255 RGB float batch (training uses it,
        so training sees exactly what inference sees)."""
        inf = self.config.inference
        height, width = image.shape[-2:]
        div = inf.size_divisibility
        padded = (-(-height // div) * div, -(-width // div) * div) if div > 0 else (height, width)
        x = (image - self._mean) / self._std
        x = F.pad(x, (0, padded[1] - width, 0, padded[0] - height), value=0.0)
        x = F.interpolate(x, size=(inf.clip_resolution, inf.clip_resolution), mode="bilinear",
                          align_corners=False)
        return x, padded

    def logits(self, image_rgb_uint8: np.ndarray, text_embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """Whole-image path: pre-sigmoid logits (1, T, 96, 96) covering the padded image."""
        x, _ = self.preprocess(image_rgb_uint8)
        text = self.text_embeddings() if text_embeddings is None else text_embeddings.to(self.device)
        return self.forward(x, text)

    def postprocess(self, logits: torch.Tensor, size: tuple[int, int], padded: tuple[int, int]) -> torch.Tensor:
        """(1, T, h, w) logits of the padded image -> (T, H, W) probabilities at the input size."""
        probs = logits[:1].sigmoid()
        height, width = size
        if self.official_postprocess:
            # official sem_seg_postprocess: crop the *map* by the unpadded pixel size, then resize
            probs = probs[:, :, :height, :width]
            return F.interpolate(probs, size=(height, width), mode="bilinear", align_corners=False)[0]
        probs = F.interpolate(probs, size=padded, mode="bilinear", align_corners=False)
        return probs[0, :, :height, :width]

    # ------------------------------------------------------------------ sliding-window path
    def sliding_views(self, image_rgb_uint8: np.ndarray) -> torch.Tensor:
        """Official views: four crops of the 640x640 resize (unfold order) and the global view, normalised and
        resized to the CLIP size, (5, 3, S, S)."""
        return self._sliding_views(self._image_tensor(check_rgb_image(image_rgb_uint8)))

    def _sliding_views(self, image: torch.Tensor) -> torch.Tensor:
        inf = self.config.inference
        kernel = inf.sliding_kernel
        resized = F.interpolate(image, size=inf.sliding_out_res, mode="bilinear", align_corners=False)
        crops = [resized[:, :, top:top + kernel, left:left + kernel] for top, left in self._crop_origins()]
        global_view = F.interpolate(image, size=(kernel, kernel), mode="bilinear", align_corners=False)
        views = (torch.cat([*crops, global_view], dim=0) - self._mean) / self._std
        if kernel != inf.clip_resolution:
            views = F.interpolate(views, size=(inf.clip_resolution, inf.clip_resolution), mode="bilinear",
                                  align_corners=False)
        return views

    def _crop_origins(self) -> list[tuple[int, int]]:
        inf = self.config.inference
        stride, kernel = inf.sliding_stride, inf.sliding_kernel
        rows = range(0, inf.sliding_out_res[0] - kernel + 1, stride)
        cols = range(0, inf.sliding_out_res[1] - kernel + 1, stride)
        return [(top, left) for top in rows for left in cols]

    def sliding_logits(self, image_rgb_uint8: np.ndarray, text_embeddings: torch.Tensor | None = None
                       ) -> torch.Tensor:
        """Pre-sigmoid logits of the sliding views, (5, T, 96, 96): crops first, global view last."""
        views = self.sliding_views(image_rgb_uint8)
        text = self.text_embeddings() if text_embeddings is None else text_embeddings.to(self.device)
        return self.forward(views, text)

    def sliding_postprocess(self, logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Official merge: per view upsample to the kernel and sigmoid; overlap-average the crops; average 50/50
        with the global view at 640; resize to (H, W). Returns (T, H, W)."""
        inf = self.config.inference
        kernel = inf.sliding_kernel
        probs = F.interpolate(logits, size=(kernel, kernel), mode="bilinear", align_corners=False).sigmoid()
        out_h, out_w = inf.sliding_out_res
        total = probs.new_zeros((probs.shape[1], out_h, out_w))
        count = probs.new_zeros((1, out_h, out_w))
        for view, (top, left) in zip(probs[:-1], self._crop_origins(), strict=True):
            total[:, top:top + kernel, left:left + kernel] += view
            count[:, top:top + kernel, left:left + kernel] += 1
        global_probs = F.interpolate(probs[-1:], size=(out_h, out_w), mode="bilinear", align_corners=False)[0]
        merged = (total / count + global_probs) / 2
        return F.interpolate(merged[None], size=size, mode="bilinear", align_corners=False)[0]

    # ------------------------------------------------------------------ the network call, for one frame or several
    def forward(self, views: torch.Tensor, text_embeddings: torch.Tensor) -> torch.Tensor:
        """The network call on this predictor's own model: (V,3,S,S) views + (T,E) text -> (V,T,h,w) logits."""
        with torch.no_grad():
            return self.model(views, text_embeddings)

    def predict(self, image_rgb_uint8: np.ndarray, text_embeddings: torch.Tensor | None = None,
                forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> Prediction:
        """One frame through the configured path. `forward` runs the network (default: this model);
        `text_embeddings` default to the cached ones of the vocabulary."""
        image = check_rgb_image(image_rgb_uint8)
        size = (int(image.shape[0]), int(image.shape[1]))
        text = self.text_embeddings() if text_embeddings is None else text_embeddings.to(self.device)
        run = forward or self.forward
        with torch.no_grad():
            tensor = self._image_tensor(image)
            if self.sliding_window:
                probs = self.sliding_postprocess(run(self._sliding_views(tensor), text).float(), size)
            else:
                x, padded = self.preprocess_batch(tensor)
                probs = self.postprocess(run(x, text).float(), size, padded)
        return Prediction(probs=probs, class_ids=probs.argmax(dim=0).cpu().numpy().astype(np.int64))

    def predict_frames(self, images: Sequence[np.ndarray], text_embeddings: torch.Tensor | None = None,
                       forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
                       max_batch: int | None = None) -> list[Prediction]:
        """Several frames, each exactly as `predict` makes it (same `forward` hook and text), in one network call
        per frame size: the frames of one size are preprocessed together and go through `forward` as one batch
        of views, at most `max_batch` frames a call (what an engine's profile takes; None: any number).
        Sliding-window frames (five views each) run one by one."""
        checked = [check_rgb_image(image) for image in images]
        if self.sliding_window:
            return [self.predict(image, text_embeddings, forward) for image in checked]
        text = self.text_embeddings() if text_embeddings is None else text_embeddings.to(self.device)
        run = forward or self.forward
        out: dict[int, Prediction] = {}
        with torch.no_grad():
            for chunk in forward_batches(checked, max_batch):
                size = (int(checked[chunk[0]].shape[0]), int(checked[chunk[0]].shape[1]))
                stacked = torch.from_numpy(np.ascontiguousarray(np.stack([checked[i] for i in chunk])))
                x, padded = self.preprocess_batch(stacked.to(self.device).permute(0, 3, 1, 2).float())
                logits = run(x, text).float()
                for i, one in zip(chunk, logits.split(1), strict=True):
                    probs = self.postprocess(one, size, padded)
                    out[i] = Prediction(probs=probs, class_ids=probs.argmax(dim=0).cpu().numpy().astype(np.int64))
        return [out[i] for i in range(len(checked))]

    def predict_batch(self, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
        """Class ids (N,H,W) of a stack of same-size (N,H,W,3) uint8 images on the whole-image path,
        batched through the network (training reports and offline relabelling)."""
        if self.sliding_window:
            return np.stack([self.predict(image).class_ids for image in images])
        images = np.asarray(images)
        check_rgb_image(images[0] if len(images) else images)
        size = (int(images.shape[1]), int(images.shape[2]))
        text = self.text_embeddings()
        out = []
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(self.device)
                x, padded = self.preprocess_batch(chunk.permute(0, 3, 1, 2).float())
                logits = self.forward(x, text).float()
                out += [self.postprocess(one, size, padded).argmax(dim=0).cpu().numpy().astype(np.int64)
                        for one in logits.split(1)]
        return np.stack(out) if out else np.zeros((0, *size), np.int64)


def forward_batches(images: Sequence[np.ndarray], max_batch: int | None = None) -> list[list[int]]:
    """The network calls `predict_frames` makes on the whole-image path: the indices of the images of one size
    (sizes in the order they first appear), at most `max_batch` of them a call (None: all)."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, image in enumerate(images):
        groups.setdefault((int(image.shape[0]), int(image.shape[1])), []).append(i)
    step = max(1, len(images)) if max_batch is None else int(max_batch)
    if step < 1:
        raise ValueError(f"max_batch must be at least 1 (or None), got {max_batch!r}")
    return [rows[start:start + step] for rows in groups.values() for start in range(0, len(rows), step)]


def check_rgb_image(image_rgb_uint8: np.ndarray) -> np.ndarray:
    """The one image check: an HxWx3 uint8 RGB array (returned as an array), else ValueError."""
    image = np.asarray(image_rgb_uint8)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 uint8 RGB image, got dtype {image.dtype} shape {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"empty image of shape {image.shape}")
    return image
