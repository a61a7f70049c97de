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

Initialisations (`init`) and target profiles (`profile`), each a setting of this one function:
- init "standard": PEFT's (kaiming A, zero B); "rrqr": one LoRA on RRQR directions (training/rrqr.py);
  "recyclelora": RecycleLoRA's main + sub adapters (training/recyclelora.py).
- profile "semla": SemLA's target list; "fisa": the FISA profile (training/fisa.py): mask
  generator frozen, semantic guidance in early image blocks, a small set of CLIP image targets.

The entry is written by the library's one writer (`core.library.write_entry`): official layout
(`adapter_config.json`, `adapter_model.safetensors`, `<name>_statistics.npz` with the mean
navigator embedding of the training images as `train_average_embedding`) plus our `metadata.json`.
Whatever the init or profile, it is one plain LoRA (one rank, one scaling) that PEFT loads and our
fusion applies; `TrainedAdapter.factors()` builds it from the trained PEFT adapters.
"""
from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence, get_args

import numpy as np
import torch

from ..catseg.checkpoint import state_dict_digest
from ..core import fields
from ..core.fields import setting
from ..core.library import write_entry
from ..core.targets import semla_target_modules
from .loop import LoopSettings, fit
from .recyclelora import entry_factors
from .rrqr import split_rank

Init = Literal["standard", "rrqr", "recyclelora"]
Profile = Literal["semla", "fisa"]
INITS: tuple[str, ...] = get_args(Init)
PROFILES: tuple[str, ...] = get_args(Profile)
# The name the adapter has inside PEFT while it trains. Saved factors carry no adapter name, and
# the entry gets its own name on disk; a fixed name avoids PEFT's ModuleDict collisions ("clear", ...).
PEFT_ADAPTER = "semla_adapter"


@dataclass(frozen=True)
class TrainSettings:
    rank: int = setting(8, low=1, help="LoRA rank r")
    alpha: float = setting(16.0, help="LoRA alpha (scaling alpha / r)")
    dropout: float = setting(0.0, low=0.0, high=1.0, high_open=True, help="LoRA dropout")
    init: Init = setting("standard", help="standard (PEFT: kaiming A, zero B), rrqr (training/rrqr.py), recyclelora")
    sub_rank: int | None = setting(None, help="rrqr / recyclelora: rank of the major-direction sub part "
                                              "(default rank // 4)")
    sub_scale: float = setting(0.5, low=0.0, low_open=True,
                               help="recyclelora: the sub adapter's scaling relative to the main adapter's")
    sub_lr_scale: float = setting(0.1, low=0.0, low_open=True,
                                  help="recyclelora: the sub adapter's learning rate relative to the main one's")
    profile: Profile = setting("semla", help="semla (SemLA's targets) or fisa (training/fisa.py)")
    loop: LoopSettings = setting(default_factory=LoopSettings, help="the training loop")

    def __post_init__(self):
        fields.validate(self)
        if self.profile == "fisa" and self.init != "standard":
            raise ValueError(f"profile 'fisa' sets its own init (semantic guidance); init must be 'standard', "
                             f"got {self.init!r}")
        if self.init in ("rrqr", "recyclelora"):
            split_rank(self.rank, self.sub_rank)

    @property
    def scaling(self) -> float:
        """The (main) adapter's alpha / r: what a standard adapter of this rank and alpha scales by."""
        return self.alpha / self.rank


@dataclass
class TrainedAdapter:
    name: str
    peft_model: object              # peft.PeftModel around a private copy of the base model
    targets: list[str]
    settings: TrainSettings
    scalings: dict[str, float]      # PEFT adapter -> its scaling; the first one's is the entry's
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0            # the training loop
    init_seconds: float = 0.0       # before it: private copy, preprocessing, RRQR / semantic-guidance init
    num_images: int = 0
    initial: dict = field(default_factory=dict)   # adapter -> module -> (A0, B0) moved out of the base weight

    def adapter_factors(self, adapter: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """module -> (A [r,in], B [out,r]) of one PEFT adapter as trained."""
        from peft.tuners.lora import LoraLayer

        out = {}
        for module_name, module in self.peft_model.base_model.model.named_modules():
            if isinstance(module, LoraLayer) and adapter in module.lora_A:
                out[module_name] = (module.lora_A[adapter].weight.detach().clone(),
                                    module.lora_B[adapter].weight.detach().clone())
        return out

    def factors(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """module -> (A, B) of the library entry: one LoRA, scaling `entry_scaling`, whose delta on the
        original base weight is what training computed (see training/recyclelora.py for dual adapters)."""
        trained = {name: self.adapter_factors(name) for name in self.scalings}
        return entry_factors(trained, self.scalings, self.initial)

    @property
    def entry_scaling(self) -> float:
        return next(iter(self.scalings.values()))

    @property
    def trainable_parameters(self) -> int:
        """Parameters the optimizer updated (every LoRA factor that requires grad)."""
        return sum(p.numel() for p in self.peft_model.parameters() if p.requires_grad)

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
    `settings.loop.seed`, so one seed decides the whole run. `targets` default to the profile's.
    """
    from peft import LoraConfig, get_peft_model

    from ..catseg.predictor import CatSegPredictor
    from . import fisa, recyclelora
    from .rrqr import init_peft_model_rrqr

    begin = time.monotonic()
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"need as many labels as images (>0), got {len(images)} images, {len(labels)} labels")
    for i, (im, lab) in enumerate(zip(images, labels, strict=True)):
        if im.shape[:2] != lab.shape:
            raise ValueError(f"image {i}: label {lab.shape} does not match image {im.shape[:2]}")
    work = copy.deepcopy(model).to(device).eval()
    if targets is None:
        targets = fisa.fisa_targets(work) if settings.profile == "fisa" else semla_target_modules(work)
    targets = list(targets)
    if not targets:
        raise ValueError("no LoRA target module exists in the model")
    predictor = CatSegPredictor(work, list(class_names), device=device)
    with torch.no_grad():
        clip_inputs = torch.cat([predictor.preprocess(im)[0] for im in images])
    y = torch.from_numpy(np.stack([np.asarray(l, np.int64) for l in labels]))
    directions = None
    if settings.profile == "fisa":
        with torch.no_grad():
            text = work.encode_text(predictor.tokens)
        blocks = [b for b in fisa.guided_blocks(work)
                  if any(fisa.guidance_module(t) == b for t in targets)]
        directions = fisa.semantic_directions(work, clip_inputs, text, blocks)

    torch.manual_seed(settings.loop.seed)

    def lora_config(rank: int, alpha: float) -> LoraConfig:
        return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=settings.dropout, bias="none",
                          target_modules=targets, init_lora_weights=True)

    initial = {}
    groups = None
    if settings.init == "recyclelora":
        main_rank, sub_rank = split_rank(settings.rank, settings.sub_rank)
        scalings = {recyclelora.MAIN: settings.scaling}
        peft_model = get_peft_model(work, lora_config(main_rank, settings.scaling * main_rank),
                                    adapter_name=recyclelora.MAIN)
        if sub_rank:
            scalings[recyclelora.SUB] = settings.scaling * settings.sub_scale
            peft_model.add_adapter(recyclelora.SUB, lora_config(sub_rank, scalings[recyclelora.SUB] * sub_rank))
            peft_model.base_model.set_adapter(list(scalings))
        initial = recyclelora.init_recyclelora(peft_model, scalings)
        groups = [{"params": _adapter_parameters(peft_model, recyclelora.MAIN)}]
        if sub_rank:
            groups.append({"params": _adapter_parameters(peft_model, recyclelora.SUB),
                           "lr": settings.loop.lr * settings.sub_lr_scale})
    else:
        scalings = {PEFT_ADAPTER: settings.scaling}
        peft_model = get_peft_model(work, lora_config(settings.rank, settings.alpha), adapter_name=PEFT_ADAPTER)
        if settings.init == "rrqr":
            init_peft_model_rrqr(peft_model, PEFT_ADAPTER, settings.sub_rank)
        if directions:
            fisa.init_fisa_guidance(peft_model, PEFT_ADAPTER, directions)
    trained = TrainedAdapter(name=name, peft_model=peft_model, targets=targets, settings=settings,
                             num_images=len(images), scalings=scalings, initial=initial)
    start = time.monotonic()
    trained.init_seconds = start - begin
    trained.losses = fit(trained.model, clip_inputs, y, predictor.tokens, len(class_names), settings.loop,
                         progress=progress,
                         trainable=groups or [p for p in peft_model.parameters() if p.requires_grad])
    trained.seconds = time.monotonic() - start
    peft_model.eval()
    return trained


def _adapter_parameters(peft_model, adapter: str) -> list[torch.nn.Parameter]:
    """The trainable LoRA factors of one PEFT adapter."""
    return [p for n, p in peft_model.named_parameters() if p.requires_grad and f".{adapter}." in f"{n}."]


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
    factors = trained.factors()
    rank = next(iter(factors.values()))[0].shape[0]
    meta = {"name": trained.name, "embedding_dim": int(np.asarray(centroid).size), "init": trained.settings.init,
            "profile": trained.settings.profile, "training": asdict(trained.settings),
            "training_images": trained.num_images, "trainable_parameters": trained.trainable_parameters,
            "final_loss": trained.losses[-1] if trained.losses else None, "train_seconds": round(trained.seconds, 2),
            "init_seconds": round(trained.init_seconds, 2),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    meta.update(metadata or {})
    return write_entry(library_root, trained.name, factors, centroid, lora_alpha=trained.entry_scaling * rank,
                       metadata=meta, overwrite=overwrite)

