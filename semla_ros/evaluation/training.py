"""Training one LoRA adapter on a domain folder with PEFT, and writing it as a library entry.

Official SemLA recipe (catseg config + LoRA config), and how it is scaled to a small budget:
- LoRA r=8, alpha=16 (scaling 2), dropout 0, bias none, the official target list restricted to
  the modules the model has (PEFT skips missing names the same way for ViT-B).
- Loss: BCE-with-logits of the class logits (bilinearly upsampled to the label size) against
  one-hot targets, averaged over all pixels and classes; ignore (255) pixels get an all-zero
  target, exactly as the official loss (they are not excluded).
- Optimiser: AdamW, weight decay 1e-4, warm-up + cosine schedule, full-model gradient-norm
  clipping at 0.01, batch 2 for ViT-L. Official LR is 2e-4 over 80k iterations; an adapter
  trained for ~10^2 steps on CPU needs a larger step, so the default LR here is 2e-3 (exposed as
  a setting; the schedule shape, clip, decay and loss are the official ones).
- `loss="ce"` swaps in softmax cross-entropy for base models that were trained with it (the
  demo's): BCE on a CE-trained base first pulls every logit down, which at a ~10^2-step budget
  hurts the argmax more than the adapter helps.
- Augmentation: random horizontal flip (detectron2's default for semantic segmentation). No
  colour augmentation: colour IS the domain here, jitter would blur what the adapter learns.
- Input: the predictor's own whole-image preprocessing, so training sees what inference sees.

The entry is written in the official layout: `adapter_config.json` + `adapter_model.safetensors`
from PEFT's `save_pretrained`, `<name>_statistics.npz` with `train_average_embedding` (1,D)
float32 (the mean navigator embedding of the training images), plus our `metadata.json`.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..core.library import CENTROID_KEY, METADATA_FILE, statistics_file
from .metrics import IGNORE_INDEX

INITS = ("standard", "rrqr")
LOSSES = ("bce", "ce")
# The name the adapter has inside PEFT while it trains. Saved files strip it, and the entry gets
# its own name on disk; a fixed name avoids PEFT's ModuleDict collisions ("clear", "keys", ...).
PEFT_ADAPTER = "semla_adapter"


@dataclass(frozen=True)
class TrainSettings:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    steps: int = 100
    batch_size: int = 4
    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 10
    grad_clip: float = 0.01
    seed: int = 250            # the SemLA fork's SEED
    init: str = "standard"     # "standard" (PEFT: kaiming A, zero B) or "rrqr" (see evaluation/rrqr.py)
    sub_rank: int | None = None  # rrqr: rank of the major-direction sub adapter (default rank // 4)
    flip: bool = True
    loss: str = "bce"          # "bce" (official) or "ce" (for a base model trained with cross-entropy)

    def validated(self) -> "TrainSettings":
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {self.init!r}")
        for name in ("rank", "steps", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.weight_decay < 0 or self.grad_clip <= 0 or self.warmup_steps < 0:
            raise ValueError("lr and grad_clip must be > 0, weight_decay and warmup_steps >= 0")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
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


def official_targets(model: torch.nn.Module) -> list[str]:
    """SemLA's target names that exist in `model` as nn.Linear, in the official order."""
    from ..core.targets import semla_target_modules

    return semla_target_modules(model)


def lr_factor(step: int, settings: TrainSettings) -> float:
    """detectron2 WarmupCosineLR shape: linear warm-up, then cosine to zero over the budget."""
    if step < settings.warmup_steps:
        return (step + 1) / (settings.warmup_steps + 1)
    progress = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def semla_loss(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Official loss: BCE-with-logits vs one-hot targets; ignore pixels have an all-zero target."""
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    valid = labels != IGNORE_INDEX
    target = F.one_hot(torch.where(valid, labels, 0).long(), num_classes).permute(0, 3, 1, 2).float()
    target = target * valid[:, None].float()
    return F.binary_cross_entropy_with_logits(logits, target)


def cross_entropy_loss(logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Softmax cross-entropy over classes (ignore pixels excluded): for base models trained that way."""
    logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    return F.cross_entropy(logits, labels.long(), ignore_index=IGNORE_INDEX)


def _preprocess_all(predictor, images: Sequence[np.ndarray]) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([predictor.preprocess(im)[0] for im in images]).cpu()


def train_adapter(model: torch.nn.Module, class_names: Sequence[str], images: Sequence[np.ndarray],
                  labels: Sequence[np.ndarray], name: str, settings: TrainSettings = TrainSettings(),
                  targets: Sequence[str] | None = None, progress: Callable[[int, float], None] | None = None,
                  device: str = "cpu") -> TrainedAdapter:
    """Trains a LoRA named `name` on a private deep copy of `model` (the base stays untouched).

    `images` are HxWx3 uint8 RGB, `labels` HxW uint8 train ids (255 ignored). `progress(step, loss)`
    is called after every step.
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
    targets = list(targets) if targets is not None else official_targets(work)
    if not targets:
        raise ValueError("no LoRA target module exists in the model")
    predictor = CatSegPredictor(work, list(class_names), device=device)
    clip_inputs = _preprocess_all(predictor, images)
    y = torch.from_numpy(np.stack([np.asarray(l, np.int64) for l in labels]))
    tokens = predictor.tokens

    torch.manual_seed(settings.seed)
    config = LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout, bias="none",
                        target_modules=targets, init_lora_weights=True)
    peft_model = get_peft_model(work, config, adapter_name=PEFT_ADAPTER)
    if settings.init == "rrqr":
        init_peft_model_rrqr(peft_model, PEFT_ADAPTER, settings.sub_rank)
    inner = peft_model.base_model.model
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, settings))
    gen = torch.Generator().manual_seed(settings.seed)
    trained = TrainedAdapter(name=name, peft_model=peft_model, targets=targets, settings=settings,
                             num_images=len(images))
    start = time.monotonic()
    n_cls = len(class_names)
    loss_fn = semla_loss if settings.loss == "bce" else cross_entropy_loss
    for step in range(settings.steps):
        idx = torch.randint(0, len(clip_inputs), (settings.batch_size,), generator=gen)
        x, yb = clip_inputs[idx].to(device), y[idx].to(device)
        if settings.flip:
            flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            yb = torch.where(flip[:, None, None], yb.flip(-1), yb)
        text = inner.encode_text(tokens)
        loss = loss_fn(inner(x, text), yb, n_cls)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, settings.grad_clip)
        opt.step()
        sched.step()
        trained.losses.append(loss.item())
        if progress is not None:
            progress(step, trained.losses[-1])
    trained.seconds = time.monotonic() - start
    peft_model.eval()
    return trained


def domain_centroid(navigator, images: Sequence[np.ndarray], batch: int = 32) -> np.ndarray:
    """(1, D) float32 mean navigator embedding of the images (SemLA's train_average_embedding)."""
    if len(images) == 0:
        raise ValueError("a centroid needs at least one image")
    parts = [navigator.embed(list(images[i:i + batch])) for i in range(0, len(images), batch)]
    return np.concatenate(parts).astype(np.float64).mean(axis=0, keepdims=True).astype(np.float32)


def model_fingerprint(model: torch.nn.Module) -> str:
    """Short hash of the base weights, recorded so an entry can be matched to its base model."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def write_statistics(directory: Path, name: str, centroid: np.ndarray) -> Path:
    path = Path(directory) / statistics_file(name)
    np.savez(path, **{CENTROID_KEY: np.asarray(centroid, np.float32).reshape(1, -1)})
    return path


def save_entry(trained: TrainedAdapter, library_root, centroid: np.ndarray, metadata: dict | None = None,
               overwrite: bool = False) -> Path:
    """Writes `<library_root>/<name>/` in the official layout (+ metadata.json); returns the folder.

    Written into a temporary sibling first and renamed, so a failure never leaves half an entry
    that a running node would skip with an error on its next reload.
    """
    root = Path(library_root)
    root.mkdir(parents=True, exist_ok=True)
    target = root / trained.name
    if target.exists() and not overwrite:
        raise FileExistsError(f"library entry {target} exists (use --overwrite to replace it)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{trained.name}-", dir=root))
    try:
        trained.peft_model.save_pretrained(str(tmp), selected_adapters=[PEFT_ADAPTER])
        (tmp / "README.md").unlink(missing_ok=True)
        staged = tmp / trained.name
        (tmp / PEFT_ADAPTER).rename(staged)
        write_statistics(staged, trained.name, centroid)
        meta = {"name": trained.name, "embedding_dim": int(np.asarray(centroid).size), "init": trained.settings.init,
                "training": asdict(trained.settings), "training_images": trained.num_images,
                "final_loss": trained.losses[-1] if trained.losses else None, "train_seconds": round(trained.seconds, 2),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        meta.update(metadata or {})
        (staged / METADATA_FILE).write_text(json.dumps(meta, indent=2))
        if target.exists():
            shutil.rmtree(target)
        staged.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
