"""The SemLA benchmark protocol: each method segments each domain's images; mIoU per domain.

Methods (paper Table 1 plus our node's policy):
- zero-shot        the base model, no adapter.
- oracle           the target domain's own adapter alone (weight 1); an upper bound, so it is
                   the one method that uses the target adapter even under leave-one-out.
- uniform          every candidate adapter with weight 1/N (SemLA's uniform "cat" merge).
- semla            official SemLA: per image, embed, top-K by 1/distance, softmax(s/T), fuse,
                   segment with that image's fused model (text re-encoded with the fused text
                   tower; the official code freezes the text at the first image, we do not):
                   the segmenter's `trigger: frame` replayed like semla-debounced (`replay.py`).
- semla-debounced  the ROS node's policy replayed on the domain's images in file order:
                   `SemlaSegmenter` with an inline executor and frame times at `rate_hz`
                   (EMA + threshold + consecutive hits + cooldown decide when to re-fuse).
                   Each domain is replayed from a fresh segmenter, so it starts with a
                   "startup" fusion on its first embedded frame(s), like a node started there.

Every fusion, fixed or per image, is made by the node's own code (`SemlaSegmenter.fuse_now`
or `process`: stage, text embeddings with the fused text tower, swap), so the table measures
what the node runs.

Leave-one-out (`--remove_target_adapter` in SemLA): the candidates for uniform / semla /
semla-debounced never include the target domain's own adapter, so the numbers measure
generalisation to an unseen domain.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from ..core import fields
from ..core.fields import setting
from ..core.library import AdapterLibrary
from ..core.segmenter import InlineExecutor, SemlaSegmenter
from ..core.settings import SegmenterSettings
from .dataset import DomainFolder, no_readable
from .metrics import ConfusionAccumulator, harmonic_mean, mean_iou, per_class_iou
from .replay import SegmenterReplay, per_image

METHODS = ("zero-shot", "oracle", "uniform", "semla", "semla-debounced")
LIBRARY_METHODS = METHODS[1:]


# The protocol measures adaptation, not the navigator's cost: semla-debounced embeds at the fixed cadence
# embed_every_n (every frame unless set), never backing off at rest as the node does.
NOT_REPLAYED = ("embed_rest_every_n",)


@dataclass(frozen=True)
class ProtocolSettings:
    methods: tuple[str, ...] = setting(METHODS, help="methods to run", option=False)
    leave_one_out: bool = setting(True, help="remove the target domain's own adapter from uniform/semla/debounced")
    segmenter: SegmenterSettings = setting(default_factory=SegmenterSettings,
                                           help="retrieval + the node's debouncing")
    rate_hz: float = setting(10.0, low=0.0, low_open=True, help="replay clock of semla-debounced")
    max_images: int | None = setting(None, low=1, help="per domain, the first N in file order")

    def __post_init__(self):
        fields.validate(self)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"unknown methods {unknown}; choose from {METHODS}")

    def to_json(self) -> dict:
        """Flat: the protocol's own fields and the segmenter settings it replays with, side by side."""
        out = {k: v for k, v in asdict(self).items() if k != "segmenter"}
        replayed = {k: v for k, v in asdict(self.segmenter).items() if k not in NOT_REPLAYED}
        return {**out, "methods": list(self.methods), **replayed}


class CachedNavigator:
    """Remembers embeddings by image content, so methods that embed the same image share one call."""

    def __init__(self, navigator):
        self.inner = navigator
        self.dim = navigator.dim
        self.id = navigator.id
        self._cache: dict[bytes, np.ndarray] = {}

    def embed(self, images):
        keys = [hashlib.sha1(np.ascontiguousarray(im).tobytes() + bytes(str(np.shape(im)), "ascii")).digest()
                for im in images]
        missing = [i for i, k in enumerate(keys) if k not in self._cache]
        if missing:
            new = self.inner.embed([images[i] for i in missing])
            for i, e in zip(missing, new, strict=True):
                self._cache[keys[i]] = np.asarray(e, np.float32)
        return np.stack([self._cache[k] for k in keys])


@dataclass
class ImageRecord:
    method: str
    domain: str
    stem: str
    miou: float
    support: float = math.nan
    adapters: list[str] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


@dataclass
class DomainScore:
    method: str
    domain: str
    miou: float
    iou: list[float]
    images: int
    available: bool = True
    note: str = ""


@dataclass
class EvaluationResult:
    classes: list[str]
    domains: list[str]
    methods: list[str]
    settings: dict
    library: str
    scores: dict[str, dict[str, DomainScore]]           # method -> domain -> score
    images: list[ImageRecord]
    contributions: dict[str, dict[str, dict[str, float]]]  # method -> domain -> adapter -> mean weight
    candidates: dict[str, list[str]]                    # domain -> adapters allowed for it
    skipped: list[tuple[str, str]] = field(default_factory=list)   # unreadable files (path, reason), once each

    def miou_table(self) -> dict[str, dict[str, float]]:
        return {m: {d: s.miou for d, s in per.items()} for m, per in self.scores.items()}

    def hmean(self, exclude: Sequence[str] = ()) -> dict[str, float]:
        return {m: harmonic_mean(v, exclude) for m, v in self.miou_table().items()}

    def to_json(self, exclude: Sequence[str] = ()) -> dict:
        return {"classes": self.classes, "domains": self.domains, "methods": self.methods,
                "settings": self.settings, "library": self.library, "candidates": self.candidates,
                "miou": self.miou_table(), "hmean": self.hmean(exclude), "hmean_excludes": list(exclude),
                "scores": {m: {d: asdict(s) for d, s in per.items()} for m, per in self.scores.items()},
                "contributions": self.contributions, "images": [asdict(r) for r in self.images],
                "skipped": [list(s) for s in self.skipped]}


def _no_progress(n: int = 1) -> None:
    return None


class Evaluator:
    """Runs the methods for one base model + one library; the model's weights are restored after each."""

    def __init__(self, predictor, library: AdapterLibrary | None, navigator,
                 settings: ProtocolSettings = ProtocolSettings(), adapter_for: Mapping[str, str] | None = None):
        self.predictor = predictor
        self.library = library
        self.navigator = navigator
        self.settings = settings
        self.adapter_for = dict(adapter_for or {})
        self.skipped: list[tuple[str, str]] = []     # unreadable files met so far (a file once per method)
        needs_library = [m for m in self.settings.methods if m in LIBRARY_METHODS]
        if needs_library and (library is None or len(library) == 0):
            raise ValueError(f"methods {needs_library} need a non-empty adapter library")
        # Fixed and per-image fusions go through the node's fusion path; it owns the base weights.
        self.segmenter = SemlaSegmenter(predictor, library, navigator, self.settings.segmenter,
                                        executor=InlineExecutor()) if library is not None and len(library) else None

    # ------------------------------------------------------------------ which adapters a domain may use
    def target_adapter(self, domain: str) -> str | None:
        """The domain's own adapter: explicit mapping, else the entry named like the domain, else the
        one entry whose metadata says `"domain": <domain>`, else the one named `<prefix>-<domain>`
        (SemLA names such as "acdc-fog")."""
        if self.library is None:
            return None
        names = self.library.names
        if domain in self.adapter_for:
            return self.adapter_for[domain] if self.adapter_for[domain] in names else None
        if domain in names:
            return domain
        for rule in (lambda e: e.metadata.get("domain") == domain, lambda e: e.name.endswith("-" + domain)):
            hits = [e.name for e in self.library.entries if rule(e)]
            if len(hits) == 1:
                return hits[0]
        return None

    def candidates(self, domain: str) -> list[int]:
        """Library rows the domain may use: all, minus its own adapter under leave-one-out."""
        own = self.target_adapter(domain)
        return [i for i, n in enumerate(self.library.names)
                if not (self.settings.leave_one_out and n == own)]

    # ------------------------------------------------------------------ model state
    def _activate(self, entries, weights) -> None:
        if self.segmenter is None:
            return
        event = self.segmenter.fuse_now(entries, weights)
        if not event.ok:
            raise RuntimeError(f"fusion of {[e.name for e in entries]} failed: {event.error}")

    def _segment(self, image: np.ndarray) -> np.ndarray:
        return self.predictor.predict(image).class_ids

    # ------------------------------------------------------------------ run
    def run(self, domains: Mapping[str, DomainFolder], progress: Callable[[int], None] = _no_progress,
            on_record: Callable[[ImageRecord], None] | None = None) -> EvaluationResult:
        s = self.settings
        first = next(iter(domains.values()))
        classes = list(first.classes)
        if list(self.predictor.class_names) != classes:
            self.predictor.set_classes(classes)
        scores: dict[str, dict[str, DomainScore]] = {m: {} for m in s.methods}
        contributions: dict[str, dict[str, dict[str, float]]] = {}
        records: list[ImageRecord] = []
        candidates = {d: ([self.library.names[i] for i in self.candidates(d)] if self.library is not None else [])
                      for d in domains}
        try:
            for method in s.methods:
                for domain, folder in domains.items():
                    acc = ConfusionAccumulator(len(classes))
                    score = DomainScore(method, domain, math.nan, [], 0)
                    run = getattr(self, "_run_" + method.replace("-", "_"))
                    note = run(domain, folder, acc, records, progress, on_record)
                    score.images = acc.images
                    if note:
                        score.available, score.note = False, note
                    else:
                        score.miou, score.iou = acc.miou, per_class_iou(acc.matrix).tolist()
                    scores[method][domain] = score
                    self._activate([], [])
                if method in ("semla", "semla-debounced", "uniform", "oracle"):
                    contributions[method] = _mean_contributions(records, method, list(domains),
                                                                list(self.library.names))
        finally:
            self._activate([], [])
        return EvaluationResult(classes=classes, domains=list(domains), methods=list(s.methods),
                                settings=s.to_json(), library=str(getattr(self.library, "root", None)),
                                scores=scores, images=records, contributions=contributions, candidates=candidates,
                                skipped=list(dict.fromkeys(self.skipped)))

    def _pairs(self, folder: DomainFolder, progress: Callable[[int], None]):
        """The first `max_images` samples in file order; an unreadable one is skipped and counted (it still
        moves the progress bar), a domain with no readable one is an error, not a score over nothing."""
        skipped: list[tuple[str, str]] = []
        read = 0
        for sample, image, label in folder.labelled(self.settings.max_images, skipped):
            read += 1
            yield sample.stem, image, label
        if skipped:
            progress(len(skipped))
            self.skipped += skipped
        if not read:
            raise no_readable(folder.path, skipped)

    def _record(self, records, on_record, acc, method, domain, stem, pred, label, **extra) -> None:
        cm = acc.add(pred, label)
        rec = ImageRecord(method, domain, stem, mean_iou(cm), **extra)
        records.append(rec)
        if on_record is not None:
            on_record(rec)

    def _run_zero_shot(self, domain, folder, acc, records, progress, on_record):
        self._activate([], [])
        for stem, image, label in self._pairs(folder, progress):
            self._record(records, on_record, acc, "zero-shot", domain, stem, self._segment(image), label)
            progress(1)
        return ""

    def _run_fixed(self, method, domain, folder, acc, records, progress, on_record, names, weights):
        entries = [self.library[n] for n in names]
        self._activate(entries, weights)
        for stem, image, label in self._pairs(folder, progress):
            self._record(records, on_record, acc, method, domain, stem, self._segment(image), label,
                         adapters=list(names), weights=[float(w) for w in weights])
            progress(1)
        return ""

    def _skip(self, folder, progress) -> None:
        n = len(folder) if self.settings.max_images is None else min(len(folder), self.settings.max_images)
        progress(n)

    def _run_oracle(self, domain, folder, acc, records, progress, on_record):
        own = self.target_adapter(domain)
        if own is None:
            self._skip(folder, progress)
            return f"no adapter for domain {domain!r} in the library"
        return self._run_fixed("oracle", domain, folder, acc, records, progress, on_record, [own], [1.0])

    def _run_uniform(self, domain, folder, acc, records, progress, on_record):
        rows = self.candidates(domain)
        if not rows:
            self._skip(folder, progress)
            return "no candidate adapter left"
        names = [self.library.names[i] for i in rows]
        return self._run_fixed("uniform", domain, folder, acc, records, progress, on_record, names,
                               [1.0 / len(names)] * len(names))

    def _run_semla(self, domain, folder, acc, records, progress, on_record):
        return self._replay("semla", per_image(self.settings.segmenter), domain, folder, acc, records, progress,
                            on_record)

    def _run_semla_debounced(self, domain, folder, acc, records, progress, on_record):
        fixed = self.settings.segmenter.replace(embed_rest_every_n=1)   # NOT_REPLAYED
        return self._replay("semla-debounced", fixed, domain, folder, acc, records, progress,
                            on_record)

    def _replay(self, method, segmenter_settings, domain, folder, acc, records, progress, on_record):
        """The domain's images in file order through a fresh segmenter over its candidates, at `rate_hz`."""
        rows = self.candidates(domain)
        if not rows:
            self._skip(folder, progress)
            return "no candidate adapter left"
        self._activate([], [])   # the replay's segmenter takes the weights it finds as its base
        sub = AdapterLibrary(None, [self.library.entries[i] for i in rows])
        with SegmenterReplay(self.predictor, sub, self.navigator, segmenter_settings) as replay:
            for frame, (stem, image, label) in enumerate(self._pairs(folder, progress)):
                out = replay.process(image, frame / self.settings.rate_hz, stamp=frame)
                active = replay.segmenter.active
                self._record(records, on_record, acc, method, domain, stem, out.class_ids, label,
                             support=out.support, adapters=list(active.adapters) if active else [],
                             weights=list(active.weights) if active else [])
                progress(1)
        return ""


def _mean_contributions(records: Sequence[ImageRecord], method: str, domains: list[str],
                        names: list[str]) -> dict[str, dict[str, float]]:
    """Mean fusion weight of each adapter over a domain's images (0 when not fused): paper Fig. 8."""
    out = {}
    for domain in domains:
        rows = [r for r in records if r.method == method and r.domain == domain]
        totals = dict.fromkeys(names, 0.0)
        for r in rows:
            for n, w in zip(r.adapters, r.weights, strict=True):
                totals[n] += w
        out[domain] = {n: (v / len(rows) if rows else 0.0) for n, v in totals.items()}
    return out
