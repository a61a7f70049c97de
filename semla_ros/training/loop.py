"""The one training loop: AdamW on the trainable parameters of a CATSeg, on preprocessed CLIP inputs.

Used for LoRA adapters (only the LoRA factors are trainable) and for the demo's small base model
(every parameter trainable). What differs between them is a setting, not a second loop:
- schedule: "warmup_cosine" (detectron2's WarmupCosineLR shape, the SemLA recipe) or "one_cycle"
  (PyTorch's OneCycleLR, 15 % warm-up: converges in few steps for a model trained from scratch);
- grad_clip: full-model gradient-norm clipping (0.01 in SemLA's recipe);
- loss: "bce" (SemLA's: BCE-with-logits vs one-hot targets, ignore pixels get an all-zero target)
  or "ce" (softmax cross-entropy, ignore pixels excluded: for base models trained that way).
Each step draws a random batch (seeded generator) and mirrors half of it (detectron2's default
augmentation for semantic segmentation; no colour augmentation: colour IS the domain here).
Text embeddings are recomputed every step, so a trainable text tower learns too.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Literal, Sequence, get_args

import torch
import torch.nn.functional as F

from ..core import fields
from ..core.fields import setting
from ..evaluation.metrics import IGNORE_INDEX

Schedule = Literal["warmup_cosine", "one_cycle"]
Loss = Literal["bce", "ce"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)
LOSSES: tuple[str, ...] = get_args(Loss)


@dataclass(frozen=True)
class LoopSettings:
    steps: int = setting(100, low=1, help="optimizer steps")
    batch_size: int = setting(4, low=1, help="images per step")
    lr: float = setting(2e-3, low=0.0, low_open=True, help="peak learning rate")
    weight_decay: float = setting(1e-4, low=0.0, help="AdamW weight decay")
    schedule: Schedule = setting("warmup_cosine", help="learning-rate schedule")
    warmup_steps: int = setting(10, low=0, help="warm-up steps (warmup_cosine only)")
    grad_clip: float = setting(0.01, low=0.0, low_open=True, help="full-model gradient-norm clipping")
    loss: Loss = setting("bce", help="bce (SemLA's) or ce (softmax cross-entropy)")
    seed: int = setting(250, help="seed of the LoRA init and the batch order (the SemLA fork's SEED)")
    flip: bool = setting(True, help="mirror half of each batch")

    def __post_init__(self):
        fields.validate(self)


def warmup_cosine(step: int, steps: int, warmup_steps: int) -> float:
    """LR factor: linear warm-up, then cosine to zero over the budget (detectron2 WarmupCosineLR shape)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
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


LOSS_FUNCTIONS = {"bce": semla_loss, "ce": cross_entropy_loss}


def _param_groups(trainable, model: torch.nn.Module) -> list[dict]:
    """PyTorch optimizer param groups from parameters or from group dicts ({"params": [...], "lr": x});
    parameters that do not require grad are left out, and so are groups left empty."""
    items = list(trainable if trainable is not None else model.parameters())
    if all(isinstance(item, dict) for item in items) and items:
        groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in items]
    else:
        groups = [{"params": [p for p in items if p.requires_grad]}]
    return [g for g in groups if g["params"]]


def fit(model: torch.nn.Module, clip_inputs: torch.Tensor, labels: torch.Tensor, tokens: torch.Tensor,
        num_classes: int, settings: LoopSettings, progress: Callable[[int, float], None] | None = None,
        trainable: Sequence[torch.nn.Parameter] | Sequence[dict] | None = None) -> list[float]:
    """Train `model` (a CATSeg, possibly inside PEFT) in place; returns the loss of every step.

    `clip_inputs` (N,3,S,S) come from CatSegPredictor.preprocess_batch, `labels` (N,H,W) are train
    ids (255 ignored), `tokens` the vocabulary's prompt tokens. `trainable` defaults to every
    parameter that requires grad; PyTorch param-group dicts give a group its own "lr" (RecycleLoRA's
    sub adapter), which the schedule scales like the others. The model is left in eval mode.
    """
    groups = _param_groups(trainable, model)
    if not groups:
        raise ValueError("nothing to train: no parameter requires grad")
    params = [p for g in groups for p in g["params"]]
    device = clip_inputs.device
    opt = torch.optim.AdamW(groups, lr=settings.lr, weight_decay=settings.weight_decay)
    if settings.schedule == "one_cycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                    total_steps=settings.steps, pct_start=0.15)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: warmup_cosine(s, settings.steps, settings.warmup_steps))
    loss_fn = LOSS_FUNCTIONS[settings.loss]
    gen = torch.Generator().manual_seed(settings.seed)
    losses: list[float] = []
    model.train()
    try:
        for step in range(settings.steps):
            idx = torch.randint(0, len(clip_inputs), (settings.batch_size,), generator=gen)
            x, y = clip_inputs[idx], labels[idx].to(device)
            if settings.flip:
                flip = (torch.rand(len(idx), generator=gen) < 0.5).to(device)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                y = torch.where(flip[:, None, None], y.flip(-1), y)
            loss = loss_fn(model(x, model.encode_text(tokens)), y, num_classes)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            opt.step()
            sched.step()
            losses.append(loss.item())
            if progress is not None:
                progress(step, losses[-1])
    finally:
        model.eval()
    return losses

