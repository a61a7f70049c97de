"""Training one LoRA adapter with PEFT, and writing it as a library entry.

Official SemLA recipe (catseg config + LoRA config), and how it is scaled to a small budget:
- LoRA r=8, alpha=16 (scaling 2), dropout 0, bias none, the official target list restricted to
  the modules the model has (PEFT skips missing names the same way for ViT-B).
- Loss, optimiser, schedule, clipping, augmentation: `training.loop` (BCE, AdamW, weight decay
  1e-4, warm-up + cosine, full-model gradient-norm clipping at 0.01). Official LR is 2e-4 over
  80k iterations; an adapter trained for ~10^2 steps on CPU needs a larger step, so the default
  LR here is 2e-3 (a setting; the schedule shape, clip, decay and loss are the official ones).
- `loss="ce"` swaps in softmax cross-entropy for base models that were trained with it (the
  demo's): BCE on a CE-trained base first pulls every logit down, which at a ~10^2-step budget
  hurts the argmax more than the adapter helps.
- Input: the predictor's own whole-image preprocessing, so training sees what inference sees.

The entry is written by the library's one writer (`core.library.write_entry`): official layout
(`adapter_config.json`, `adapter_model.safetensors`, `<name>_statistics.npz` with the mean
navigator embedding of the training images as `train_average_embedding`) plus our `metadata.json`.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..catseg.checkpoint import state_dict_digest
from ..core.library import write_entry
from ..core.targets import semla_target_modules
from .loop import LoopSettings, fit

INITS = ("standard", "rrqr")
# The name the adapter has inside PEFT while it trains. Saved factors carry no adapter name, and
# the entry gets its own name on disk; a fixed name avoids PEFT's ModuleDict collisions ("clear", ...).
PEFT_ADAPTER = "semla_adapter"


@dataclass(frozen=True)
class TrainSettings:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    init: str = "standard"       # "standard" (PEFT: kaiming A, zero B) or "rrqr" (see training/rrqr.py)
    sub_rank: int | None = None  # rrqr: rank of the major-direction sub part (default rank // 4)
    loop: LoopSettings = field(default_factory=LoopSettings)

    def validated(self) -> "TrainSettings":
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        if int(self.rank) < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        self.loop.validated()
        return self


@dataclass
class TrainedAdapter:
    name: str
    peft_model: object              # peft.PeftModel around a private copy of the base model
    targets: list[str]
    settings: TrainSettings
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0
    num_images: int = 0

    def factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """module -> (A [r,in], B [out,r]) of this adapter, as saved."""
        from peft.tuners.lora import LoraLayer

        out = {}
        for module_name, module in self.peft_model.base_model.model.named_modules():
            if isinstance(module, LoraLayer) and PEFT_ADAPTER in module.lora_A:
                out[module_name] = (module.lora_A[PEFT_ADAPTER].weight.detach().clone(),
                                    module.lora_B[PEFT_ADAPTER].weight.detach().clone())
        return out

    @property
    def model(self) -> torch.nn.Module:
        """The CATSeg with this adapter active (PEFT, unmerged)."""
        return self.peft_model.base_model.model


def train_adapter(model: torch.nn.Module, class_names: Sequence[str], images: Sequence[np.ndarray],
                  labels: Sequence[np.ndarray], name: str, settings: TrainSettings = TrainSettings(),
                  targets: Sequence[str] | None = None, progress: Callable[[int, float], None] | None = None,
                  device: str = "cpu") -> TrainedAdapter:
    """Trains a LoRA named `name` on a private deep copy of `model` (the base stays untouched).

    `images` are HxWx3 uint8 RGB, `labels` HxW uint8 train ids (255 ignored). `progress(step, loss)`
    is called after every step. The LoRA factors are initialised from the global torch seed set to
    `settings.loop.seed`, so one seed decides the whole run.
    """
    from peft import LoraConfig, get_peft_model

    from ..catseg.predictor import CatSegPredictor
    from .rrqr import init_peft_model_rrqr

    settings = settings.validated()
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need as many labels as images (>0), got {len(images)} images, {len(labels)} labels")
    for i, (im, lab) in enumerate(zip(images, labels)):
        if im.shape[:2] != lab.shape:
            raise ValueError(f"image {i}: label {lab.shape} does not match image {im.shape[:2]}")
    work = copy.deepcopy(model).to(device).eval()
    targets = list(targets) if targets is not None else semla_target_modules(work)
    if not targets:
        raise ValueError("no LoRA target module exists in the model")
    predictor = CatSegPredictor(work, list(class_names), device=device)
    with torch.no_grad():
        clip_inputs = torch.cat([predictor.preprocess(im)[0] for im in images])
    y = torch.from_numpy(np.stack([np.asarray(l, np.int64) for l in labels]))

    torch.manual_seed(settings.loop.seed)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias="none",
                        target_modules=targets, init_lora_weights=True)
    peft_model = get_peft_model(work, config, adapter_name=PEFT_ADAPTER)
    if settings.init == "rrqr":
        init_peft_model_rrqr(peft_model, PEFT_ADAPTER, settings.sub_rank)
    trained = TrainedAdapter(name=name, peft_model=peft_model, targets=targets, settings=settings,
                             num_images=len(images))
    start = time.monotonic()
    trained.losses = fit(trained.model, clip_inputs, y, predictor.tokens, len(class_names), settings.loop,
                         progress=progress, trainable=[p for p in peft_model.parameters() if p.requires_grad])
    trained.seconds = time.monotonic() - start
    peft_model.eval()
    return trained


def domain_centroid(navigator, images: Sequence[np.ndarray], batch: int = 32) -> np.ndarray:
    """(1, D) float32 mean navigator embedding of the images (SemLA's train_average_embedding)."""
    if len(images) == 0:
        raise ValueError("a centroid needs at least one image")
    parts = [navigator.embed(list(images[i:i + batch])) for i in range(0, len(images), batch)]
    return np.concatenate(parts).astype(np.float64).mean(axis=0, keepdims=True).astype(np.float32)


def base_model_id(model: torch.nn.Module) -> str:
    """Short hash of the base weights, recorded so an entry can be matched to its base model."""
    return state_dict_digest(model, 16)


def save_entry(trained: TrainedAdapter, library_root, centroid: np.ndarray, metadata: dict | None = None,
               overwrite: bool = False) -> Path:
    """Writes `<library_root>/<name>/` (official layout + metadata.json) through the library's writer."""
    meta = {"name": trained.name, "embedding_dim": int(np.asarray(centroid).size), "init": trained.settings.init,
            "training": asdict(trained.settings), "training_images": trained.num_images,
            "final_loss": trained.losses[-1] if trained.losses else None, "train_seconds": round(trained.seconds, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    meta.update(metadata or {})
    return write_entry(library_root, trained.name, trained.factors(), centroid, lora_alpha=trained.settings.alpha,
                       metadata=meta, overwrite=overwrite)

